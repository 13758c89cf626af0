"""Running a trained Photon: the engine shared by ``photon ask``, the HTTP backend and evaluation."""

from photonlib.inference.engine import Answer, PhotonEngine, PreparedCase, resolve_device

__all__ = ["Answer", "PhotonEngine", "PreparedCase", "resolve_device"]
