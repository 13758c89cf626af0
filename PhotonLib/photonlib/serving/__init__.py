"""The inference backend behind ``photon serve``: an HTTP API (FastAPI + uvicorn) around one
:class:`~photonlib.inference.PhotonEngine`.

* :mod:`~photonlib.serving.settings`: limits and the bind-safety rule (no FastAPI needed);
* :mod:`~photonlib.serving.app`: ``create_app(engine, settings)``, the routes;
* :mod:`~photonlib.serving.store`: the bounded cache of volumes and prepared cases;
* :mod:`~photonlib.serving.jobs`: the single worker thread and its bounded queue;
* :mod:`~photonlib.serving.uploads`: reading and decoding uploads under limits;
* :mod:`~photonlib.serving.server`: running it with uvicorn.

The client side is :mod:`photonlib.client`; the wire formats shared by both are in
:mod:`photonlib.wire`. The model never imports this package.
"""

from photonlib.serving.settings import ServerSettings, UnsafeBindError, check_bind_safety

__all__ = ["ServerSettings", "UnsafeBindError", "check_bind_safety"]
