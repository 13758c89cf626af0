"""Python client of ``photon serve``: upload a volume once, ask questions, follow, cancel.

Needs ``requests`` and NumPy only (never torch, SimpleITK or :mod:`photonlib.volume`), so the
Slicer module and light scripts can use it::

    from photonlib.client import PhotonClient

    client = PhotonClient("http://127.0.0.1:8765", token=None)
    volume = client.upload_array(array_kji, geometry)          # or client.upload_file("ct.nrrd")
    result = client.ask(volume.volume_id, "Is there a lesion in the liver?",
                        on_progress=lambda p: print(p.tokens_generated, p.partial_answer))
    print(result.answer, result.tokens_kept, result.tokens_total)
    heatmap, heatmap_geometry = result.heatmap()               # KJI array on the volume's grid

Every failure is a :class:`PhotonClientError` subclass whose message says what to do. Only
voxels, geometry and an optional modality are ever sent: no DICOM tags, no names.

A server whose queue is full answers 503 with ``Retry-After``; ``PhotonClient(busy_wait_s=120)``
waits for it (trying again when the server says, up to that many seconds in all) instead of
raising :class:`ServerBusyError` at once; ``on_busy`` reports each wait, ``cancel_event`` stops it.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import requests

from photonlib import __version__
from photonlib.geometry import VolumeGeometry
from photonlib.wire import (
    API_VERSION,
    RAW_VOLUME_CONTENT_TYPE,
    encode_raw_volume,
    raw_volume_size,
    read_nrrd_bytes,
    volume_content_id,
)

DEFAULT_URL = "http://127.0.0.1:8765"
#: The 503 codes after which ``photon serve`` has kept nothing of the request, so sending it again
#: is safe even for a POST: ``busy`` refuses an upload before reading its body (two are already
#: being received) and ``queue_full`` a question before it becomes a job (serving/app.py). Not
#: ``worker_stopped``: that server answers no question again, so waiting would only delay the error.
BUSY_CODES = ("busy", "queue_full")
#: The shortest wait before trying again, whatever ``Retry-After`` says (``0`` must not spin).
MIN_BUSY_RETRY_S = 0.2
#: Each wait is ``Retry-After`` times a random 1 to 1 + this: clients refused together come back spread out.
BUSY_RETRY_JITTER = 0.25


# ---------------------------------------------------------------------------------- errors
class PhotonClientError(Exception):
    """Base class. ``status`` is the HTTP status when there was one; ``code`` the server's error code."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.code = status, code


class ServerNotRunningError(PhotonClientError):
    """Nothing answers at the URL (connection refused, unknown host, connect timeout)."""


class ConnectionLostError(PhotonClientError):
    """The server closed the connection mid-request or stopped answering while a job ran."""


class RequestTimeoutError(PhotonClientError):
    """The server did not answer in time, or the question took longer than allowed."""


class AuthenticationError(PhotonClientError):
    """The token is missing or wrong (HTTP 401)."""


class VolumeTooLargeError(PhotonClientError):
    """The volume exceeds the server's upload or voxel limits (HTTP 413)."""


class ServerBusyError(PhotonClientError):
    """The server's queue is full (HTTP 503); retry after ``retry_after`` seconds.

    ``waited_s``: how long the client already waited for the server (``busy_wait_s``), 0 if not at all.
    """

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        status: int | None = 503,
        code: str | None = None,
        waited_s: float = 0.0,
    ):
        super().__init__(message, status=status, code=code)
        self.retry_after, self.waited_s = retry_after, waited_s


class RequestCancelledError(PhotonClientError):
    """``cancel_event`` was set while the client waited for a busy server: the request was not accepted."""


class BadVolumeError(PhotonClientError):
    """The server could not use the volume (2D, NaN voxels, corrupt, unsupported format)."""


class InvalidRequestError(PhotonClientError):
    """A question or parameter the server refused (HTTP 422 outside uploads), e.g. too long."""


class NotFoundError(PhotonClientError):
    """Unknown volume or job id (HTTP 404): a volume may have been dropped from the cache."""


class VersionMismatchError(PhotonClientError):
    """Client and server speak different API versions."""

    def __init__(self, client_version: str, server_version: str | None, url: str):
        super().__init__(
            f"this client speaks Photon API version {client_version} but the server at {url} speaks "
            f"{server_version or 'no Photon API'}; install the same photonlib version on both sides "
            f"(client photonlib {__version__})"
        )
        self.client_version, self.server_version = client_version, server_version


class JobFailedError(PhotonClientError):
    """The server could not answer the question (``code``: out_of_memory, bad_volume, internal, ...)."""


class ServerError(PhotonClientError):
    """An unexpected server failure (HTTP 5xx other than 503)."""


# ---------------------------------------------------------------------------------- results
@dataclass(frozen=True)
class UploadedVolume:
    """A volume held by the server."""

    volume_id: str
    geometry: VolumeGeometry
    uploaded: bool  # False when the server already held it and nothing was sent
    info: dict[str, Any] = field(repr=False)


@dataclass(frozen=True)
class JobProgress:
    """A snapshot of a question being answered (``GET /v1/jobs/{id}``)."""

    job_id: str
    volume_id: str
    status: str  # queued, running, done, cancelled, error
    stage: str
    tokens_generated: int
    max_new_tokens: int
    partial_answer: str
    queue_position: int | None
    raw: dict[str, Any] = field(repr=False)

    @property
    def finished(self) -> bool:
        return self.status in ("done", "cancelled", "error")

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> JobProgress:
        return cls(
            job_id=data["job_id"], volume_id=data["volume_id"], status=data["status"], stage=data["stage"],
            tokens_generated=data["progress"]["tokens_generated"], max_new_tokens=data["progress"]["max_new_tokens"],
            partial_answer=data.get("partial_answer", ""), queue_position=data.get("queue_position"), raw=data,
        )  # fmt: skip


@dataclass(frozen=True)
class AskResult:
    """An answer, its token counts and timings; the heatmap is fetched on demand."""

    job_id: str
    volume_id: str
    status: str  # done, or cancelled (then ``stopped`` and the answer is partial)
    answer: str
    tokens_total: int
    tokens_kept: int
    tokens_generated: int
    stopped: bool
    cache_hit: bool
    vision_skipped: bool
    prefix_reused: bool  # a follow-up: the prompt's question-independent prefix was reused
    timings: dict[str, float]
    model: dict[str, str]
    client: PhotonClient = field(repr=False, compare=False)

    def heatmap(self, interpolation: str = "nearest") -> tuple[np.ndarray, VolumeGeometry]:
        """Keep probability per voxel: a KJI float32 array on the uploaded volume's grid, and its geometry."""
        return self.client.heatmap(self.job_id, interpolation)

    def heatmap_nrrd(self, interpolation: str = "nearest") -> bytes:
        """The heatmap as the NRRD file the server sent (write it to disk as is)."""
        return self.client.heatmap_nrrd(self.job_id, interpolation)


@dataclass(frozen=True)
class BusyWait:
    """The server was busy (HTTP 503 with ``Retry-After``): the client waits ``delay_s``, then sends again."""

    code: str | None  # busy (uploads) or queue_full (questions)
    message: str  # the server's refusal
    delay_s: float  # this wait
    waited_s: float  # since the server first refused this request
    limit_s: float  # ``busy_wait_s``: the most the client waits in all
    attempt: int  # 1 for the first wait


class _RawVolumeBody:
    """The raw volume as an iterable with a length: sent with Content-Length, never copied whole."""

    def __init__(self, array: np.ndarray, geometry: VolumeGeometry, modality: str | None):
        self.array, self.geometry, self.modality = array, geometry, modality
        self.length = raw_volume_size(array, geometry, modality)

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[bytes]:
        return encode_raw_volume(self.array, self.geometry, self.modality)


# ---------------------------------------------------------------------------------- client
class PhotonClient:
    """Talks to one ``photon serve``.

    Args:
        url: the server, e.g. ``http://127.0.0.1:8765``.
        token: the server's token (default: the ``PHOTON_TOKEN`` environment variable, if set).
        timeout: seconds to wait for any answer of the server (uploads: ``upload_timeout``).
        connect_timeout: seconds to wait for the connection itself.
        busy_wait_s: seconds in all the client may wait for a busy server (HTTP 503 ``busy`` or
            ``queue_full``, with ``Retry-After``), sending the upload or question again after each
            ``Retry-After``; then :class:`ServerBusyError` says how long it waited. 0: raise at once.
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        upload_timeout: float = 600.0,
        connect_timeout: float = 5.0,
        # Off by default: a library call should not block for minutes unasked, and callers that
        # schedule their own work (scripts, load tests) must see every refusal. Interactive front
        # ends turn it on: the Slicer module and `photon ask --server` wait 120 s.
        busy_wait_s: float = 0.0,
        session: requests.Session | None = None,
    ):
        if not (busy_wait_s >= 0 and math.isfinite(busy_wait_s)):
            raise ValueError(f"busy_wait_s must be 0 (do not wait) or a number of seconds, got {busy_wait_s!r}")
        self.url = url.rstrip("/")
        self.token = token if token is not None else os.environ.get("PHOTON_TOKEN") or None
        self.timeout = timeout
        self.upload_timeout = upload_timeout
        self.connect_timeout = connect_timeout
        self.busy_wait_s = float(busy_wait_s)
        self.session = session or requests.Session()
        self.session.headers["User-Agent"] = f"photonlib-client/{__version__} (api {API_VERSION})"
        self._info: dict[str, Any] | None = None

    def __repr__(self) -> str:  # never shows the token
        return f"PhotonClient({self.url!r}, token={'set' if self.token else 'none'})"

    # ------------------------------------------------------------------ service
    def health(self) -> dict[str, Any]:
        """``{"status": "ok", "version", "api_version", "auth_required"}`` (needs no token)."""
        return self._request("GET", "/v1/health", accept=(200, 503)).json()

    def info(self) -> dict[str, Any]:
        """Model, limits, cache and queue; raises :class:`VersionMismatchError` if the APIs differ."""
        data = self._request("GET", "/v1/info").json()
        if data.get("api_version") != API_VERSION:
            raise VersionMismatchError(API_VERSION, data.get("api_version"), self.url)
        self._info = data
        return data

    def check_server(self) -> dict[str, Any]:
        """Reachable, same API version, token accepted: the checks a UI runs on "Connect"."""
        health = self.health()
        if health.get("api_version") != API_VERSION:
            raise VersionMismatchError(API_VERSION, health.get("api_version"), self.url)
        return self.info()

    # ------------------------------------------------------------------ volumes
    def upload_array(
        self,
        array_kji: np.ndarray,
        geometry: VolumeGeometry,
        *,
        modality: str | None = None,
        on_busy: Callable[[BusyWait], None] | None = None,
        cancel_event: threading.Event | None = None,
    ) -> UploadedVolume:
        """Send voxels (KJI order, as Slicer's ``arrayFromVolume``) and geometry, unless the server has them.

        Use ``VolumeGeometry.from_ijk_to_ras(ijk_to_ras, size)`` for a Slicer volume. Boolean
        arrays are sent as uint8; other types must be one the raw format carries. ``on_busy``
        and ``cancel_event``: see :meth:`submit`.
        """
        array = np.asarray(array_kji)
        if array.dtype == np.bool_:
            array = array.astype(np.uint8)
        if array.ndim != 3:
            raise BadVolumeError(f"a 3D (K, J, I) array is needed, got shape {array.shape}")
        volume_id = volume_content_id(array, geometry, modality)
        known = self._existing_volume(volume_id)
        if known is not None:
            return known
        body = _RawVolumeBody(array, geometry, modality)  # encoded afresh each time it is sent
        self._check_upload_size(len(body))
        response = self._while_busy(
            lambda: self._request(
                "POST", "/v1/volumes", data=body, headers={"Content-Type": RAW_VOLUME_CONTENT_TYPE},
                accept=(200, 201), timeout=self.upload_timeout, upload=True,
            ),
            on_busy, cancel_event,
        )  # fmt: skip
        return self._uploaded(response.json(), sent=True)

    def upload_file(
        self,
        path: str | Path,
        *,
        on_busy: Callable[[BusyWait], None] | None = None,
        cancel_event: threading.Event | None = None,
    ) -> UploadedVolume:
        """Send a NRRD (attached data) or NIfTI file as is; the server reads its geometry.

        ``on_busy`` and ``cancel_event``: see :meth:`submit`.
        """
        path = Path(path)
        if not path.is_file():
            raise BadVolumeError(f"{path}: not a file; upload_file takes a .nrrd, .nii or .nii.gz file")
        self._check_upload_size(path.stat().st_size)

        def send() -> requests.Response:
            with open(path, "rb") as handle:  # opened afresh for each try: a refused one may have read some
                return self._request(
                    "POST", "/v1/volumes", data=handle, headers={"Content-Type": "application/octet-stream"},
                    accept=(200, 201), timeout=self.upload_timeout, upload=True,
                )  # fmt: skip

        return self._uploaded(self._while_busy(send, on_busy, cancel_event).json(), sent=True)

    def volume(self, volume_id: str) -> dict[str, Any]:
        return self._request("GET", f"/v1/volumes/{volume_id}").json()

    def delete_volume(self, volume_id: str) -> None:
        self._request("DELETE", f"/v1/volumes/{volume_id}", accept=(204,))

    # ------------------------------------------------------------------ questions
    def submit(
        self,
        volume_id: str,
        question: str,
        history: Sequence[tuple[str, str] | dict[str, str]] | None = None,
        *,
        max_new_tokens: int | None = None,
        on_busy: Callable[[BusyWait], None] | None = None,
        cancel_event: threading.Event | None = None,
    ) -> JobProgress:
        """Queue a question and return at once (poll :meth:`job`, or :meth:`wait`).

        A full queue raises :class:`ServerBusyError`, or, with ``busy_wait_s``, is waited for:
        ``on_busy`` is called before each wait, and setting ``cancel_event`` (from any thread)
        ends the wait at once with :class:`RequestCancelledError`.
        """
        turns = [turn if isinstance(turn, dict) else {"question": turn[0], "answer": turn[1]} for turn in history or ()]
        payload: dict[str, Any] = {"question": question, "history": turns}
        if max_new_tokens is not None:
            payload["max_new_tokens"] = int(max_new_tokens)
        response = self._while_busy(
            lambda: self._request("POST", f"/v1/volumes/{volume_id}/questions", json=payload, accept=(202,)),
            on_busy, cancel_event,
        )  # fmt: skip
        return JobProgress.from_json(response.json())

    def job(self, job_id: str) -> JobProgress:
        return JobProgress.from_json(self._request("GET", f"/v1/jobs/{job_id}").json())

    def cancel(self, job_id: str) -> JobProgress:
        """Ask the server to stop a job (a running one stops after its current token)."""
        return JobProgress.from_json(self._request("POST", f"/v1/jobs/{job_id}/cancel").json())

    def wait(
        self,
        job_id: str,
        *,
        on_progress: Callable[[JobProgress], None] | None = None,
        poll_interval: float = 0.25,
        timeout: float | None = None,
        cancel_event: threading.Event | None = None,
    ) -> AskResult:
        """Poll until the job ends; a cancelled job returns its partial answer (``stopped``).

        Setting ``cancel_event`` (from any thread) cancels the job, as :meth:`cancel` does.

        Raises :class:`JobFailedError` (or a subclass of :class:`PhotonClientError`) when the job
        ended in error, and :class:`RequestTimeoutError` after ``timeout`` seconds, or once the job
        has run for twice the server's job timeout (the server ends every job by then; later
        means it is stuck). Either way the job is cancelled.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        last_version: tuple | None = None
        running_since: float | None = None
        stuck_after: float | None = None
        cancel_sent = False
        while True:
            try:
                progress = self.job(job_id)
            except (ServerNotRunningError, ConnectionLostError) as error:
                raise ConnectionLostError(
                    f"the Photon server at {self.url} stopped answering while job {job_id} ran "
                    f"(it may have crashed or been stopped): {error}; restart photon serve and ask again"
                ) from error
            state = (progress.status, progress.stage, progress.tokens_generated, progress.queue_position)
            if on_progress is not None and state != last_version:
                on_progress(progress)
            last_version = state
            if progress.finished:
                return self._result(progress)
            if cancel_event is not None and cancel_event.is_set() and not cancel_sent:
                cancel_sent = True
                with contextlib.suppress(PhotonClientError):  # the next poll reports a server gone away
                    self.cancel(job_id)
            if progress.status == "running" and running_since is None:
                running_since, stuck_after = time.monotonic(), self._stuck_after()
            if stuck_after is not None and time.monotonic() - running_since > stuck_after:
                with contextlib.suppress(PhotonClientError):
                    self.cancel(job_id)
                raise RequestTimeoutError(
                    f"job {job_id} has been running for over {stuck_after:g} s, well past the server's own job "
                    f"timeout; the server at {self.url} seems stuck: restart photon serve and ask again"
                )
            if deadline is not None and time.monotonic() > deadline:
                with contextlib.suppress(PhotonClientError):
                    self.cancel(job_id)
                raise RequestTimeoutError(f"no answer within {timeout:g} s; job {job_id} was cancelled")
            if cancel_event is not None and not cancel_sent:
                cancel_event.wait(poll_interval)
            else:
                time.sleep(poll_interval)

    def ask(
        self,
        volume_id: str,
        question: str,
        history: Sequence[tuple[str, str] | dict[str, str]] | None = None,
        *,
        max_new_tokens: int | None = None,
        on_progress: Callable[[JobProgress], None] | None = None,
        poll_interval: float = 0.25,
        timeout: float | None = None,
        on_busy: Callable[[BusyWait], None] | None = None,
        cancel_event: threading.Event | None = None,
    ) -> AskResult:
        """Ask a question about an uploaded volume and wait for the answer (:meth:`submit` + :meth:`wait`).

        ``cancel_event`` stops a wait for a busy server (:class:`RequestCancelledError`) or cancels the job.
        """
        job = self.submit(volume_id, question, history, max_new_tokens=max_new_tokens, on_busy=on_busy,
                          cancel_event=cancel_event)  # fmt: skip
        if on_progress is not None:
            on_progress(job)
        return self.wait(
            job.job_id, on_progress=on_progress, poll_interval=poll_interval, timeout=timeout, cancel_event=cancel_event
        )

    def heatmap_nrrd(self, job_id: str, interpolation: str = "nearest") -> bytes:
        return self._request("GET", f"/v1/jobs/{job_id}/heatmap", params={"interpolation": interpolation}).content

    def heatmap(self, job_id: str, interpolation: str = "nearest") -> tuple[np.ndarray, VolumeGeometry]:
        """Keep probability per voxel (KJI float32) with the uploaded volume's geometry."""
        return read_nrrd_bytes(self.heatmap_nrrd(job_id, interpolation))

    # ------------------------------------------------------------------ internals
    def _result(self, progress: JobProgress) -> AskResult:
        data = progress.raw
        if progress.status == "error":
            error = data.get("error") or {}
            code, message = error.get("code"), error.get("message", "the server gave no reason")
            kind = RequestTimeoutError if code == "timed_out" else BadVolumeError if code == "bad_volume" else JobFailedError
            raise kind(f"job {progress.job_id} failed: {message}", code=code)
        result = data.get("result")
        if result is None:  # cancelled before any answer
            result = {"answer": progress.partial_answer, "tokens_total": 0, "tokens_kept": 0, "stopped": True,
                      "cache_hit": False, "vision_skipped": False, "timings": {}, "model": {}}  # fmt: skip
        return AskResult(
            job_id=progress.job_id, volume_id=progress.volume_id, status=progress.status, answer=result["answer"],
            tokens_total=result["tokens_total"], tokens_kept=result["tokens_kept"],
            tokens_generated=result.get("tokens_generated", progress.tokens_generated), stopped=result["stopped"],
            cache_hit=result["cache_hit"], vision_skipped=result["vision_skipped"],
            prefix_reused=result.get("prefix_reused", False), timings=result["timings"],
            model=result["model"], client=self,
        )  # fmt: skip

    def _stuck_after(self) -> float | None:
        """Seconds after which a running job is stuck: the server ends every job at its job
        timeout (checked between tokens), so twice that and a margin means a step that never returns."""
        try:
            job_timeout = float((self._info or self.info())["limits"]["job_timeout_s"])
        except (PhotonClientError, KeyError, TypeError, ValueError):
            return None  # an older server, or one that does not say: rely on ``timeout``
        return 2 * job_timeout + 5

    def _existing_volume(self, volume_id: str) -> UploadedVolume | None:
        try:
            return self._uploaded(self.volume(volume_id), sent=False)
        except NotFoundError:
            return None

    def _uploaded(self, info: dict[str, Any], *, sent: bool) -> UploadedVolume:
        uploaded = sent and info.get("created", True)
        return UploadedVolume(info["volume_id"], VolumeGeometry.from_dict(info["geometry"]), bool(uploaded), info)

    def _check_upload_size(self, size: int) -> None:
        limit = (self._info or self.info())["limits"]["max_upload_bytes"]
        if size > limit:
            raise VolumeTooLargeError(
                f"the volume is {size / 2**20:,.1f} MiB; the server at {self.url} accepts at most "
                f"{limit / 2**20:,.1f} MiB (photon serve --max-upload-mb)",
                status=413, code="upload_too_large",
            )  # fmt: skip

    def _while_busy(
        self,
        send: Callable[[], requests.Response],
        on_busy: Callable[[BusyWait], None] | None,
        cancel_event: threading.Event | None,
    ) -> requests.Response:
        """``send()``, sent again after each busy refusal (:data:`BUSY_CODES`) for at most ``busy_wait_s``."""
        first_refused: float | None = None
        attempt = 0
        while True:
            try:
                return send()
            except ServerBusyError as busy:
                if self.busy_wait_s <= 0 or busy.code not in BUSY_CODES or busy.retry_after is None:
                    raise
                now = time.monotonic()
                first_refused = now if first_refused is None else first_refused
                waited = now - first_refused
                remaining = self.busy_wait_s - waited
                if remaining <= 0:
                    longer_queue = ", or start photon serve with a longer --queue" if busy.code == "queue_full" else ""
                    raise ServerBusyError(
                        f"{busy}; waited {waited:.1f} s for the server to accept it (busy_wait_s={self.busy_wait_s:g}): "
                        f"try again later{longer_queue}",
                        retry_after=busy.retry_after, code=busy.code, waited_s=waited,
                    ) from None  # fmt: skip
                jitter = random.uniform(1.0, 1.0 + BUSY_RETRY_JITTER)
                delay = min(max(busy.retry_after, MIN_BUSY_RETRY_S) * jitter, remaining)
                attempt += 1
                if on_busy is not None:
                    on_busy(BusyWait(busy.code, str(busy), delay, waited, self.busy_wait_s, attempt))
                if cancel_event is None:
                    time.sleep(delay)
                elif cancel_event.wait(delay):
                    raise RequestCancelledError(
                        f"cancelled after waiting {time.monotonic() - first_refused:.1f} s for the busy server at "
                        f"{self.url}; it did not accept the request, so nothing was created there",
                        code="cancelled",
                    ) from None

    def _request(
        self,
        method: str,
        path: str,
        *,
        accept: tuple[int, ...] = (200,),
        timeout: float | None = None,
        upload: bool = False,
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> requests.Response:
        headers = dict(headers or {})
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        url = self.url + path
        try:
            response = self.session.request(
                method, url, headers=headers, timeout=(self.connect_timeout, timeout or self.timeout), **kwargs
            )
        except requests.exceptions.ConnectTimeout:
            raise ServerNotRunningError(
                f"no Photon server answered at {self.url} within {self.connect_timeout:g} s; "
                "start one with `photon serve` or check the URL"
            ) from None
        except requests.exceptions.ReadTimeout:
            raise RequestTimeoutError(
                f"the server at {self.url} did not answer {method} {path} within {timeout or self.timeout:g} s"
            ) from None
        except (requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError) as error:
            # A server that dies while sending a response body cuts it short: requests reports
            # that as a ChunkedEncodingError, not a ConnectionError, but it is the same lost link.
            if _connection_refused(error):
                raise ServerNotRunningError(
                    f"no Photon server is running at {self.url}; start one with `photon serve` or check the URL"
                ) from None
            raise ConnectionLostError(
                f"the connection to {self.url} broke during {method} {path}"
                + (" (while uploading: the server may have refused the volume or stopped)" if upload else "")
                + f"; is the server still running? ({_reason(error)})"
            ) from None
        self._check_api_version(response)
        if response.status_code in accept:
            return response
        raise self._error_for(response)

    def _check_api_version(self, response: requests.Response) -> None:
        server = response.headers.get("X-Photon-API-Version")
        if server is None:
            if response.status_code < 400:  # something answered, but not a Photon server
                raise VersionMismatchError(API_VERSION, None, self.url)
            return  # e.g. uvicorn's own 503 when too many connections are open
        if server != API_VERSION:
            raise VersionMismatchError(API_VERSION, server, self.url)

    def _error_for(self, response: requests.Response) -> PhotonClientError:
        status = response.status_code
        try:
            body = response.json()
            detail, code = str(body.get("detail", "")), body.get("code")
        except (ValueError, AttributeError):
            detail, code = response.text[:300], None
        where = f"{response.request.method} {response.request.path_url.split('?')[0]}"
        message = f"{detail or response.reason} ({where}: HTTP {status})"
        if status == 401:
            hint = "; pass token= (or set PHOTON_TOKEN)" if not self.token else "; check the token"
            return AuthenticationError(message + hint, status=status, code=code)
        if status == 413:
            return VolumeTooLargeError(message, status=status, code=code)
        if status == 503 and code == "worker_stopped":
            return ServerError(message + "; restart photon serve", status=status, code=code)
        if status == 503:
            retry = response.headers.get("Retry-After")
            return ServerBusyError(message, retry_after=float(retry) if retry and retry.isdigit() else None, code=code)
        if status == 404:
            return NotFoundError(message, status=status, code=code)
        if status == 408:
            return RequestTimeoutError(message, status=status, code=code)
        if where.startswith("POST /v1/volumes") and "questions" not in where and 400 <= status < 500:
            return BadVolumeError(message, status=status, code=code)
        if status in (400, 409, 415, 422):
            return InvalidRequestError(message, status=status, code=code)
        return ServerError(message, status=status, code=code)


def _connection_refused(error: BaseException) -> bool:
    """True when nothing listens (refused, unknown host), as opposed to a connection that broke."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [error]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, ConnectionRefusedError) or type(current).__name__ in ("NewConnectionError", "NameResolutionError"):
            return True
        stack.extend([current.__cause__, current.__context__, *[a for a in getattr(current, "args", ()) if isinstance(a, BaseException)]])
        stack.append(getattr(current, "reason", None) if isinstance(getattr(current, "reason", None), BaseException) else None)
    return False


def _reason(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text if len(text) <= 200 else text[:197] + "..."
