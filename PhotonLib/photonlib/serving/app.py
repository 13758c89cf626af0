"""The HTTP API of ``photon serve`` (FastAPI): routes, authentication, errors, access log.

``create_app(engine, settings)`` builds the application; ``photonlib.serving.server`` runs it
with uvicorn. The routes are documented in ``docs/api.md`` and served as OpenAPI at
``/openapi.json`` (interactive at ``/docs``).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException

from photonlib import __version__
from photonlib.model import Turn
from photonlib.serving.jobs import FINISHED, Job, JobWorker, QueueFullError, WorkerStoppedError
from photonlib.serving.schemas import (
    JOB_ID_PATTERN,
    VOLUME_ID_PATTERN,
    ErrorBody,
    Health,
    JobStatus,
    QuestionRequest,
    ServerInfo,
    VolumeInfo,
)
from photonlib.serving.settings import ServerSettings, is_loopback
from photonlib.serving.store import StoredVolume, VolumeStore
from photonlib.serving.uploads import ACCEPTED_FORMATS, UploadError, decode_volume, read_body
from photonlib.volume import (
    MultiComponentVolumeError,
    NotThreeDimensionalError,
    UnsupportedFormatError,
    VolumeError,
    VolumeTooLargeError,
    map_to_source,
)
from photonlib.wire import API_VERSION, NRRD_CONTENT_TYPE, RAW_VOLUME_CONTENT_TYPE, write_nrrd_bytes

if TYPE_CHECKING:
    from photonlib.inference import PhotonEngine

logger = logging.getLogger("photonlib.serving")
access_logger = logging.getLogger("photonlib.serving.access")

VolumeId = Annotated[str, PathParam(pattern=VOLUME_ID_PATTERN, description="SHA-256 hex id from the upload")]
JobId = Annotated[str, PathParam(pattern=JOB_ID_PATTERN, description="id from POST .../questions")]

UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "description": f"The volume as the whole body: {ACCEPTED_FORMATS}. The format is recognised from the bytes.",
        "content": {
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            RAW_VOLUME_CONTENT_TYPE: {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


#: One server-sent event of GET /v1/jobs/{job_id}/events.
SSE_EVENT = {
    "type": "object",
    "properties": {
        "event": {"type": "string", "enum": ["progress", "done"]},
        "data": {"type": "string", "description": "the job status (as GET /v1/jobs/{job_id}) as JSON"},
    },
    "required": ["event", "data"],
}


#: Content types a browser may send cross-site without a preflight ("" = none).
BROWSER_FORM_TYPES = ("", "text/plain", "multipart/form-data", "application/x-www-form-urlencoded")


class ApiError(Exception):
    """An error answered as ``{"code", "detail"}`` with an HTTP status."""

    def __init__(self, status: int, code: str, detail: str, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status, self.code, self.detail, self.headers = status, code, detail, headers or {}


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": ErrorBody} for status in statuses}


#: Status for each kind of unusable volume.
_VOLUME_ERROR_STATUS = (
    (VolumeTooLargeError, 413, "volume_too_large"),
    (UnsupportedFormatError, 415, "unsupported_format"),
    (NotThreeDimensionalError, 422, "not_3d"),
    (MultiComponentVolumeError, 422, "not_scalar_3d"),
    (VolumeError, 422, "bad_volume"),
)


def volume_error_to_api(error: VolumeError) -> ApiError:
    for kind, status, code in _VOLUME_ERROR_STATUS:
        if isinstance(error, kind):
            return ApiError(status, code, " ".join(str(error).split()))
    raise AssertionError("unreachable")  # VolumeError is the last entry


def model_version(engine: PhotonEngine) -> str:
    """Digest of the configuration and parameter shapes (changes when the model does)."""
    digest = hashlib.sha256(engine.model.config.to_json_string(use_diff=False).encode())
    for name, parameter in engine.model.state_dict().items():
        digest.update(f"{name}{tuple(parameter.shape)}".encode())
    return digest.hexdigest()[:12]


class PhotonService:
    """The state behind the routes: the engine, the volume cache and the worker."""

    def __init__(self, engine: PhotonEngine, settings: ServerSettings):
        self.engine = engine
        self.settings = settings
        self.model = {"name": engine.name, "version": model_version(engine)}
        self.store = VolumeStore(settings.cache_bytes, settings.cache_entries)
        self.worker = JobWorker(
            engine, self.store, queue_size=settings.queue_size, job_timeout_s=settings.job_timeout_s,
            jobs_kept=settings.jobs_kept, model=self.model,
        )  # fmt: skip
        self.scratch_dir: Path | None = None
        self.upload_slots = asyncio.Semaphore(2)  # decoded uploads in memory at once

    def start(self) -> None:
        # Private (0700) folder for the seconds a NRRD/NIfTI upload needs a file to be decoded.
        self.scratch_dir = Path(tempfile.mkdtemp(prefix="photon-serve-"))
        self.worker.start()

    def stop(self) -> None:
        self.worker.stop()
        if self.scratch_dir is not None:
            shutil.rmtree(self.scratch_dir, ignore_errors=True)

    # ------------------------------------------------------------------ operations
    async def receive_volume(self, request: Request) -> tuple[StoredVolume, bool]:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type in BROWSER_FORM_TYPES:
            # Browsers send these (or none) cross-site without asking: refusing them keeps web
            # pages from pushing volumes into a server on this machine.
            raise ApiError(
                415, "unsupported_media_type",
                f"send the volume with Content-Type: application/octet-stream (or {RAW_VOLUME_CONTENT_TYPE}), "
                f"not {content_type or 'no Content-Type'}; with curl: -H 'Content-Type: application/octet-stream'",
            )  # fmt: skip
        if self.upload_slots.locked():
            raise ApiError(503, "busy", "two uploads are already being received; retry shortly", {"Retry-After": "2"})
        async with self.upload_slots:
            settings = self.settings
            try:
                body = await read_body(
                    request, max_bytes=settings.max_upload_bytes,
                    total_timeout_s=settings.upload_timeout_s, idle_timeout_s=settings.upload_idle_timeout_s,
                )  # fmt: skip
            except UploadError as error:
                logger.info("upload refused before decoding: %s", error.code)
                raise ApiError(error.status, error.code, error.message) from None
            started = time.perf_counter()
            try:
                decoded = await run_in_threadpool(decode_volume, body, settings.read_limits, self.scratch_dir)
            except VolumeError as error:
                logger.info("upload of %d bytes refused: %s", len(body), type(error).__name__)
                raise volume_error_to_api(error) from None
            except UploadError as error:
                raise ApiError(error.status, error.code, error.message) from None
            except MemoryError:
                raise ApiError(413, "volume_too_large", "the server ran out of memory decoding this volume") from None
            entry, created = self.store.add(decoded.volume_id, decoded.volume)
            logger.info(
                "volume %s: %s, size %s, %s, %d bytes, decoded in %.3f s%s",
                decoded.volume_id[:12], entry.source_format, "x".join(map(str, entry.geometry.size)), entry.dtype,
                len(body), time.perf_counter() - started, "" if created else " (already held)",
            )  # fmt: skip
            return entry, created

    def submit_question(self, entry: StoredVolume, request: QuestionRequest) -> Job:
        settings = self.settings
        question = request.question.strip()
        problems = []
        if not question:
            problems.append("question: the question is empty")
        if len(question) > settings.max_question_chars:
            problems.append(f"question: {len(question):,} characters; at most {settings.max_question_chars:,} are accepted")
        if len(request.history) > settings.max_history_turns:
            problems.append(f"history: {len(request.history)} turns; at most {settings.max_history_turns} are accepted")
        max_new_tokens = request.max_new_tokens or settings.default_max_new_tokens
        if max_new_tokens > settings.max_new_tokens:
            problems.append(f"max_new_tokens: {max_new_tokens}; this server allows at most {settings.max_new_tokens}")
        texts = [question] + [text for turn in request.history for text in (turn.question, turn.answer)]
        if not all(_is_utf8(text) for text in texts):
            problems.append("question and history must be valid Unicode text (no unpaired surrogates)")
        if problems:
            raise ApiError(422, "invalid_request", "; ".join(problems))
        history = tuple(Turn(turn.question, turn.answer) for turn in request.history)
        job = Job(volume=entry, question=question, history=history, max_new_tokens=max_new_tokens)
        try:
            self.worker.submit(job)
        except QueueFullError as error:
            raise ApiError(
                503, "queue_full", f"the server is busy: {error}; retry in {settings.retry_after_s} s",
                {"Retry-After": str(settings.retry_after_s)},
            ) from None  # fmt: skip
        except WorkerStoppedError as error:
            raise ApiError(503, "worker_stopped", f"the server answers no more questions: {error}") from None
        logger.info("job %s: queued for volume %s (max %d new tokens)", job.job_id, entry.volume_id[:12], max_new_tokens)
        return job

    def volume_or_404(self, volume_id: str) -> StoredVolume:
        entry = self.store.get(volume_id)
        if entry is None:
            raise ApiError(
                404, "volume_not_found",
                f"no volume {volume_id} on this server (never uploaded, deleted, or dropped from the cache); upload it again",
            )  # fmt: skip
        return entry

    def job_or_404(self, job_id: str) -> Job:
        job = self.worker.get(job_id)
        if job is None:
            raise ApiError(404, "job_not_found", f"no job {job_id} on this server (unknown, or finished long ago and forgotten)")
        return job

    def job_status(self, job: Job) -> dict[str, Any]:
        result = None
        if job.result is not None and job.status in FINISHED:
            result = {**job.result, "heatmap_url": f"/v1/jobs/{job.job_id}/heatmap"}
        error = {"code": job.error_code, "message": job.error_message} if job.status == "error" else None
        return {
            "job_id": job.job_id,
            "volume_id": job.volume.volume_id,
            "status": job.status,
            "stage": job.stage,
            "queue_position": self.worker.queue_position(job) if job.status == "queued" else None,
            "progress": {"tokens_generated": job.tokens_generated, "max_new_tokens": job.max_new_tokens},
            "partial_answer": job.partial_answer,
            "cancel_requested": job.cancel_requested.is_set(),
            "error": error,
            "result": result,
            "created_at": job.created_at,
            "started_at": job.started_at,
            "finished_at": job.finished_at,
        }

    def heatmap_bytes(self, job: Job, interpolation: str, compress: bool) -> bytes:
        key = (interpolation, compress)
        cached = job.heatmap_cache.get(key)
        if cached is None:
            values = map_to_source(job.keep_probability, job.mapping, interpolation=interpolation)
            cached = write_nrrd_bytes(values, job.mapping.source_geometry, compress=compress)
            job.heatmap_cache = {key: cached}  # one kept: heatmaps of large volumes are large
        return cached

    async def wait_finished(self, job: Job, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while not job.finished.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return job.finished.is_set()


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class AccessLogMiddleware:
    """One log line per request (method, path without query, status, time) and the API version header.

    Never logs query strings, headers or bodies: questions and tokens stay out of the log.
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status: dict[str, int] = {}

        async def send_with_version(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                MutableHeaders(scope=message).append("X-Photon-API-Version", API_VERSION)
            await send(message)

        try:
            await self.app(scope, receive, send_with_version)
        finally:
            code = status.get("code", 0)
            # Polling (GET 2xx) would flood the log at INFO; changes and errors stay visible.
            level = logging.DEBUG if scope.get("method") == "GET" and 200 <= code < 300 else logging.INFO
            path = scope.get("path", "")[:200]
            access_logger.log(level, "%s %s %s %.1f ms", scope.get("method"), path, code or "-", 1000 * (time.perf_counter() - started))


class LoopbackHostMiddleware:
    """On a loopback address, answer only requests addressed to a loopback name.

    A web page can make the browser send requests to 127.0.0.1 through a DNS name it controls
    (DNS rebinding); such requests carry that name in ``Host`` and are refused here.
    """

    def __init__(self, app, allowed: set[str]):
        self.app = app
        self.allowed = allowed

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            host = Headers(scope=scope).get("host", "").strip().lower()
            name = host.split("]")[0] + "]" if host.startswith("[") else host.rsplit(":", 1)[0]
            if name not in self.allowed:
                response = JSONResponse(
                    {"code": "bad_host", "detail": "this server only answers requests addressed to 127.0.0.1, localhost or [::1]"},
                    status_code=400,
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(engine: PhotonEngine, settings: ServerSettings = ServerSettings()) -> FastAPI:
    """The FastAPI application serving ``engine`` under ``/v1``."""
    service = PhotonService(engine, settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        service.start()
        try:
            yield
        finally:
            service.stop()

    app = FastAPI(
        title="Photon backend",
        version=__version__,
        summary="Ask Photon about CT and MR volumes; heatmaps in the volume's own geometry.",
        description="API version " + API_VERSION + ". See docs/api.md in the PhotonSlicer repository.",
        lifespan=lifespan,
    )
    app.state.service = service
    if is_loopback(settings.host):
        app.add_middleware(LoopbackHostMiddleware, allowed={"127.0.0.1", "localhost", "[::1]", settings.host.lower()})
    app.add_middleware(AccessLogMiddleware)  # added last, so it runs first and logs refusals too

    @app.exception_handler(ApiError)
    async def api_error(_: Request, error: ApiError) -> JSONResponse:
        headers = dict(error.headers)
        if error.status == 401:
            headers["WWW-Authenticate"] = "Bearer"
        return JSONResponse({"code": error.code, "detail": error.detail}, status_code=error.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, error: RequestValidationError) -> JSONResponse:
        problems = []
        for item in error.errors()[:10]:
            where = ".".join(str(part) for part in item.get("loc", ()) if part != "body") or "body"
            problems.append(f"{where}: {item.get('msg', 'invalid')}")
        return JSONResponse({"code": "invalid_request", "detail": "; ".join(problems)}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, error: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "http_error")
        return JSONResponse({"code": code, "detail": str(error.detail)}, status_code=error.status_code, headers=error.headers)

    @app.exception_handler(Exception)
    async def internal_error(_: Request, error: Exception) -> JSONResponse:
        logger.exception("unhandled error in a request")
        return JSONResponse({"code": "internal", "detail": f"internal server error ({type(error).__name__}); see the server log"}, status_code=500)

    bearer = HTTPBearer(auto_error=False, description="the server's token (photon serve --token-file / PHOTON_TOKEN)")

    # A default rather than Annotated[...]: annotations are strings here and `bearer` is local.
    def require_token(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if credentials is None:
            raise ApiError(401, "unauthorized", "this server needs a token: send the header `Authorization: Bearer <token>`")
        if not hmac.compare_digest(credentials.credentials.encode(), settings.token.encode()):
            raise ApiError(401, "unauthorized", "the token is not the one this server was started with")

    open_router = APIRouter(prefix="/v1", tags=["service"])
    router = APIRouter(
        prefix="/v1",
        dependencies=[Depends(require_token)] if settings.auth_required else [],
        responses=_errors(401) if settings.auth_required else {},
    )

    # ------------------------------------------------------------------ service
    @open_router.get("/health", response_model=Health, responses={503: {"model": Health}})
    def health(response: Response) -> dict:
        """Liveness and readiness; never needs a token."""
        alive = service.worker.alive
        response.status_code = 200 if alive else 503
        return {"status": "ok" if alive else "unavailable", "version": __version__, "api_version": API_VERSION, "auth_required": settings.auth_required}

    @router.get("/info", response_model=ServerInfo, tags=["service"])
    def info() -> dict:
        """Model, limits, cache and queue."""
        engine_info = engine.info()
        return {
            "api_version": API_VERSION,
            "version": __version__,
            "model": {**engine_info, "version": service.model["version"]},
            "limits": settings.limits(),
            "cache": service.store.stats(),
            "queue": service.worker.stats(),
            "auth_required": settings.auth_required,
        }

    # ------------------------------------------------------------------ volumes
    @router.post(
        "/volumes", status_code=201, response_model=VolumeInfo, tags=["volumes"], openapi_extra=UPLOAD_BODY,
        responses={200: {"model": VolumeInfo, "description": "already held (same content)"}, **_errors(400, 408, 413, 415, 422, 503)},
    )  # fmt: skip
    async def upload_volume(request: Request, response: Response) -> dict:
        """Upload a volume once; its id is the SHA-256 of its content. 201 when new, 200 when already held."""
        entry, created = await service.receive_volume(request)
        response.status_code = 201 if created else 200
        response.headers["Location"] = f"/v1/volumes/{entry.volume_id}"
        return {**entry.describe(), "created": created}

    @router.get("/volumes/{volume_id}", response_model=VolumeInfo, tags=["volumes"], responses=_errors(404, 422))
    def get_volume(volume_id: VolumeId) -> dict:
        """A held volume's geometry and state (``prepared``: its next question skips the vision tower)."""
        return service.volume_or_404(volume_id).describe()

    @router.delete("/volumes/{volume_id}", status_code=204, tags=["volumes"], responses=_errors(404, 422))
    def delete_volume(volume_id: VolumeId) -> Response:
        """Forget a volume and its prepared form (questions already queued still finish)."""
        if not service.store.delete(volume_id):
            service.volume_or_404(volume_id)
        logger.info("volume %s: deleted", volume_id[:12])
        return Response(status_code=204)

    @router.post(
        "/volumes/{volume_id}/questions", status_code=202, response_model=JobStatus, tags=["questions"],
        responses=_errors(400, 404, 422, 503),
    )  # fmt: skip
    def ask_question(volume_id: VolumeId, request: QuestionRequest, response: Response) -> dict:
        """Queue a question about a held volume; follow it at ``/v1/jobs/{job_id}``."""
        job = service.submit_question(service.volume_or_404(volume_id), request)
        response.headers["Location"] = f"/v1/jobs/{job.job_id}"
        return service.job_status(job)

    @router.post(
        "/ask", response_model=JobStatus, tags=["questions"], openapi_extra=UPLOAD_BODY,
        responses={202: {"model": JobStatus, "description": "not finished within wait_s: follow the job"}, **_errors(400, 408, 413, 415, 422, 503)},
    )  # fmt: skip
    async def ask_inline(
        request: Request,
        response: Response,
        # Short enough that the URL stays under uvicorn's 16 KiB request-line limit even
        # percent-encoded; longer questions go through POST /v1/volumes/{id}/questions.
        question: Annotated[str, Query(min_length=1, max_length=1000)],
        max_new_tokens: Annotated[int | None, Query(ge=1, le=1_000_000)] = None,
        wait_s: Annotated[float | None, Query(gt=0, le=3600, description="how long to wait for the answer")] = None,
    ) -> dict:
        """Upload and ask in one request (for curl); waits for the answer (200) or answers 202 with the job."""
        entry, _ = await service.receive_volume(request)
        job = service.submit_question(entry, QuestionRequest(question=question, max_new_tokens=max_new_tokens))
        finished = await service.wait_finished(job, min(wait_s or settings.ask_wait_s, settings.ask_wait_s))
        response.status_code = 200 if finished else 202
        response.headers["Location"] = f"/v1/jobs/{job.job_id}"
        return service.job_status(job)

    # ------------------------------------------------------------------ jobs
    @router.get("/jobs/{job_id}", response_model=JobStatus, tags=["questions"], responses=_errors(404, 422))
    def get_job(job_id: JobId) -> dict:
        """Status, progress, the answer so far and, once finished, the result."""
        return service.job_status(service.job_or_404(job_id))

    @router.post("/jobs/{job_id}/cancel", response_model=JobStatus, tags=["questions"], responses=_errors(404, 422))
    def cancel_job(job_id: JobId) -> dict:
        """Stop a queued or running question (a running one stops after its current token)."""
        job = service.job_or_404(job_id)
        if job.status not in FINISHED:
            service.worker.cancel(job)
            logger.info("job %s: cancel requested", job_id)
        return service.job_status(job)

    @router.get(
        "/jobs/{job_id}/heatmap", tags=["questions"], response_class=Response,
        responses={200: {"content": {NRRD_CONTENT_TYPE: {"schema": {"type": "string", "format": "binary"}}}, "description": "NRRD"}, **_errors(404, 409, 422)},
    )  # fmt: skip
    async def get_heatmap(
        job_id: JobId,
        interpolation: Literal["nearest", "linear"] = "nearest",
        compress: bool = True,
    ) -> Response:
        """Keep probability per voxel on the volume's own grid and geometry (float32 NRRD, LPS)."""
        job = service.job_or_404(job_id)
        if job.keep_probability is None or job.status not in FINISHED:
            state = "still " + job.status if job.status not in FINISHED else f"{job.status} without an answer"
            raise ApiError(409, "no_heatmap", f"job {job_id} is {state}: a heatmap exists once the job has an answer")
        content = await run_in_threadpool(service.heatmap_bytes, job, interpolation, compress)
        headers = {"Content-Disposition": f'attachment; filename="photon-heatmap-{job_id}.nrrd"'}
        return Response(content, media_type=NRRD_CONTENT_TYPE, headers=headers)

    @router.get(
        "/jobs/{job_id}/events", tags=["questions"], response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {"schema": SSE_EVENT}}, "description": "server-sent events"}, **_errors(404, 422)},
    )  # fmt: skip
    async def job_events(job_id: JobId) -> StreamingResponse:
        """Server-sent events: a ``progress`` event (the job status) on every change, then ``done``."""
        job = service.job_or_404(job_id)

        async def events() -> AsyncIterator[bytes]:
            seen = -1
            deadline = time.monotonic() + settings.job_timeout_s + settings.ask_wait_s
            while time.monotonic() < deadline:
                if job.version != seen:
                    seen = job.version
                    finished = job.status in FINISHED
                    payload = json.dumps(service.job_status(job))
                    yield f"event: {'done' if finished else 'progress'}\ndata: {payload}\n\n".encode()
                    if finished:
                        return
                await asyncio.sleep(0.1)

        return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    app.include_router(open_router)
    app.include_router(router)
    return app
