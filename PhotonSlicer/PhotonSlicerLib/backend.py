"""The Photon backend as the module sees it: connect, check, ask, cancel.

A thin wrapper over :mod:`photonlib.client` (which needs only NumPy and requests, both
bundled with Slicer; never torch). Every client error is turned into a :class:`BackendError`
whose message a radiologist can act on; the technical detail stays in ``error.detail`` for
the backend log.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .settings import DEFAULT_BUSY_WAIT_S

#: In a Slicer build tree, the file beside this package that names the source tree's PhotonLib
#: (written by PhotonSlicer/CMakeLists.txt at configure time; never installed).
BUILD_TREE_POINTER = "PhotonLibLocation.txt"


def find_bundled_photonlib(lib_dir: Path) -> Path:
    """The PhotonLib folder shipped with the module whose ``PhotonSlicerLib`` package is ``lib_dir``.

    - installed extension: ``<lib>/qt-scripted-modules/PhotonSlicerLib/`` -> ``<lib>/PhotonLib``
      (the top-level CMakeLists.txt installs it there); a source checkout has the same shape
      (``PhotonSlicer/PhotonSlicerLib/`` -> ``PhotonLib``);
    - Slicer build tree: PhotonLib reaches ``<lib>/PhotonLib`` only at install time, so the
      configure step writes the source tree's PhotonLib into ``qt-scripted-modules/PhotonLibLocation.txt``.
    """
    beside = lib_dir.parents[1] / "PhotonLib"
    if (beside / "photonlib" / "__init__.py").is_file():
        return beside
    pointer = lib_dir.parent / BUILD_TREE_POINTER
    if pointer.is_file():
        named = Path(pointer.read_text(encoding="utf-8").strip())
        if (named / "photonlib" / "__init__.py").is_file():
            return named
    return beside


BUNDLED_PHOTONLIB_DIR = find_bundled_photonlib(Path(__file__).resolve().parent)
#: Exact tested versions of PhotonLib's dependencies, for ``pip install -c`` when installing the
#: backend's Python (docs/slicer.md); it is part of the bundled PhotonLib folder.
BUNDLED_LOCK_FILE = BUNDLED_PHOTONLIB_DIR / "constraints" / "lock.txt"


def ensure_photonlib_importable(bundled_dir: Path = BUNDLED_PHOTONLIB_DIR) -> None:
    """Make ``import photonlib`` work inside Slicer, whose Python does not have it installed."""
    try:
        import photonlib  # noqa: F401
    except ImportError:
        if (bundled_dir / "photonlib" / "__init__.py").is_file():
            sys.path.insert(0, str(bundled_dir))
        import photonlib  # noqa: F401  (raises ImportError with the usual message if still absent)


ensure_photonlib_importable()

from photonlib import client as photon_client  # noqa: E402
from photonlib.geometry import VolumeGeometry  # noqa: E402

DEFAULT_URL = photon_client.DEFAULT_URL


class BackendError(Exception):
    """A failure explained in words a radiologist understands; ``detail`` has the technical text."""

    def __init__(self, message: str, detail: str = ""):
        super().__init__(message)
        self.message, self.detail = message, detail

    def __str__(self) -> str:
        return self.message


class AskCancelled(BackendError):
    """The question was cancelled before the backend produced any answer, so there is none to show."""

    def __init__(self, detail: str = ""):
        super().__init__("Cancelled before the backend started answering; nothing was added.", detail)


def explain(error: BaseException, url: str = "") -> BackendError:
    """Turn a client error into a short, actionable :class:`BackendError` (the original as detail)."""
    where = f" at {url}" if url else ""
    detail = str(error)
    if isinstance(error, BackendError):
        return error
    if isinstance(error, photon_client.ServerNotRunningError):
        message = f"The Photon backend is not running{where}. Start it in the Backend section, or check the URL."
    elif isinstance(error, photon_client.ConnectionLostError):
        message = f"The Photon backend{where} stopped answering (it may have crashed). Restart it and ask again."
    elif isinstance(error, photon_client.AuthenticationError):
        message = "The backend refused the token. Copy the token the backend printed at start-up into the Token box."
    elif isinstance(error, photon_client.VolumeTooLargeError):
        message = "This volume is too large for the backend. Crop or resample it (Crop Volume module) and ask again."
    elif isinstance(error, photon_client.ServerBusyError) and getattr(error, "waited_s", 0):
        message = (
            f"The backend stayed busy with other questions for {error.waited_s:.0f} s. Try again later, or let "
            "questions wait longer for a busy backend (Edit > Application Settings > Photon)."
        )
    elif isinstance(error, photon_client.ServerBusyError):
        wait = f" (about {error.retry_after:g} s)" if getattr(error, "retry_after", None) else ""
        message = f"The backend is busy with other questions. Try again in a moment{wait}."
    elif isinstance(error, photon_client.VersionMismatchError):
        message = "The backend's version does not match this module. Update PhotonSlicer and the backend together."
    elif isinstance(error, photon_client.RequestTimeoutError):
        message = "The backend took too long to answer. Try a shorter question or a smaller volume."
    elif isinstance(error, photon_client.BadVolumeError):
        message = "The backend cannot read this volume. Choose a 3D CT or MR scalar volume."
    elif isinstance(error, photon_client.PhotonClientError):
        message = "The backend reported an error. Open the backend log for details."
    else:
        message = f"Unexpected error while talking to the backend: {type(error).__name__}."
    return BackendError(message, detail)


@dataclass(frozen=True)
class PhotonAnswer:
    """One answered question: what the backend sent (the answer, its token counts and the heatmap,
    a KJI float32 keep probability on the volume's grid), and once the logic has put it in the
    scene (:meth:`PhotonAskLogic.add_result`), the heatmap volume node and the history row."""

    answer: str
    tokens_kept: int
    tokens_total: int
    stopped: bool
    model: str  # the model's name and version, as the history shows it
    timings: dict[str, float]
    heatmap_array: np.ndarray = field(repr=False)
    heatmap_geometry: VolumeGeometry = field(repr=False)
    heatmap_node: Any = field(default=None, repr=False)  # vtkMRMLScalarVolumeNode, once in the scene
    history_row: int | None = None


ProgressCallback = Callable[[str, int], None]  # (partial answer, tokens generated)
BusyCallback = Callable[[float, float], None]  # (seconds waited for a busy backend so far, the most it waits)


class Backend(Protocol):
    """What the logic needs from a backend; tests and other transports can provide their own."""

    url: str

    def health(self) -> dict[str, Any]: ...

    def ask(
        self,
        array_kji: np.ndarray,
        geometry: VolumeGeometry,
        question: str,
        *,
        modality: str | None = None,
        max_new_tokens: int | None = None,
        on_progress: ProgressCallback | None = None,
        cancel_event: threading.Event | None = None,
        on_busy: BusyCallback | None = None,
    ) -> PhotonAnswer:
        """Blocks until answered; raises :class:`AskCancelled` if ``cancel_event`` is set before any answer.

        ``on_busy`` is called whenever the question waits for a backend busy with other questions.
        """
        ...

    def cancel(self) -> None: ...


class ClientBackend:
    """A :class:`Backend` over HTTP with :class:`photonlib.client.PhotonClient`.

    ``ask`` blocks (run it off the main thread); ``cancel`` may be called from another thread.
    The token lives in memory only. ``busy_wait_s``: how long a question waits for a backend busy
    with other questions (its queue full) before it fails; 0: it fails at once.
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        token: str | None = None,
        *,
        poll_interval: float = 0.2,
        busy_wait_s: float = DEFAULT_BUSY_WAIT_S,
        **client_options,
    ):
        self.url = url.rstrip("/")
        self.client = photon_client.PhotonClient(
            self.url, token=token or None, busy_wait_s=busy_wait_s, **client_options
        )
        self.poll_interval = poll_interval
        self._lock = threading.Lock()
        self._job_id: str | None = None
        self._cancel_event: threading.Event | None = None  # the running question's

    def __repr__(self) -> str:
        return f"ClientBackend({self.url!r})"

    @property
    def busy_wait_s(self) -> float:
        return self.client.busy_wait_s

    @busy_wait_s.setter
    def busy_wait_s(self, seconds: float) -> None:
        self.client.busy_wait_s = max(float(seconds), 0.0)

    def check(self) -> dict[str, Any]:
        """Reachable, same API version, token accepted; returns the server's info (model, limits)."""
        try:
            return self.client.check_server()
        except Exception as error:
            raise explain(error, self.url) from error

    def health(self) -> dict[str, Any]:
        try:
            return self.client.health()
        except Exception as error:
            raise explain(error, self.url) from error

    def ask(
        self,
        array_kji,
        geometry,
        question,
        *,
        modality=None,
        max_new_tokens=None,
        on_progress=None,
        cancel_event=None,
        on_busy=None,
    ) -> PhotonAnswer:
        """Upload, ask, wait, fetch the heatmap. Blocks: run it off the main thread.

        ``cancel_event`` belongs to this one question: setting it at any time, even before this
        call starts, between upload and submit or while waiting for a busy backend, stops the
        question (``cancel()`` sets it too). ``on_busy(waited_s, limit_s)`` before each wait for a
        busy backend; ``on_progress`` once the question is accepted, and as the answer grows.
        """
        if not question or not question.strip():
            raise BackendError("Type a question first.")
        cancelled = cancel_event if cancel_event is not None else threading.Event()
        with self._lock:
            self._cancel_event, self._job_id = cancelled, None

        def busy(wait) -> None:
            if on_busy is not None:
                on_busy(wait.waited_s, wait.limit_s)

        def report(progress) -> None:
            if on_progress is not None:
                on_progress(progress.partial_answer, progress.tokens_generated)

        try:
            if cancelled.is_set():
                raise AskCancelled("cancelled before the upload")
            volume = self.client.upload_array(
                array_kji, geometry, modality=modality, on_busy=busy, cancel_event=cancelled
            )
            if cancelled.is_set():
                raise AskCancelled("cancelled after the upload, before the question was sent")
            job = self.client.submit(
                volume.volume_id, question.strip(), max_new_tokens=max_new_tokens, on_busy=busy, cancel_event=cancelled
            )
            # Publish the job before looking at the event; cancel() sets the event before
            # reading the job: one of the two always sees the other, so no cancel is lost.
            with self._lock:
                self._job_id = job.job_id
            if cancelled.is_set():
                with contextlib.suppress(photon_client.PhotonClientError):
                    self.client.cancel(job.job_id)
            report(job)  # accepted: no longer waiting for a busy backend
            result = self.client.wait(job.job_id, on_progress=report, poll_interval=self.poll_interval)
            if result.stopped and result.tokens_total == 0:
                raise AskCancelled(f"job {job.job_id} was cancelled before the answer started")
            heatmap_array, heatmap_geometry = result.heatmap()
        except AskCancelled:
            raise
        except photon_client.RequestCancelledError as error:
            raise AskCancelled(f"cancelled while waiting for a busy backend: {error}") from error
        except Exception as error:
            raise explain(error, self.url) from error
        finally:
            with self._lock:
                self._job_id, self._cancel_event = None, None
        model = result.model or {}
        model_name = model.get("name") or model.get("model") or ""
        version = model.get("version") or model.get("checkpoint") or ""
        return PhotonAnswer(
            answer=result.answer,
            tokens_kept=int(result.tokens_kept),
            tokens_total=int(result.tokens_total),
            stopped=bool(result.stopped),
            model=" ".join(part for part in (str(model_name), str(version)) if part),
            timings=dict(result.timings),
            heatmap_array=heatmap_array,
            heatmap_geometry=heatmap_geometry,
        )

    def cancel(self) -> None:
        """Stop the running question (its partial answer is returned); harmless when none runs."""
        with self._lock:
            cancelled = self._cancel_event
        if cancelled is not None:
            cancelled.set()
        with self._lock:
            job_id = self._job_id
        if job_id is not None:
            try:
                self.client.cancel(job_id)
            except Exception as error:
                raise explain(error, self.url) from error


def connect(url: str = DEFAULT_URL, token: str | None = None, **options) -> ClientBackend:
    """A checked connection: raises :class:`BackendError` if the backend is down, too old or refuses the token."""
    backend = ClientBackend(url, token, **options)
    backend.check()
    return backend
