"""Request and response bodies of the HTTP API (they make the OpenAPI schema at /openapi.json)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

VOLUME_ID_PATTERN = r"^[0-9a-f]{64}$"
JOB_ID_PATTERN = r"^[0-9a-f]{32}$"


class ErrorBody(BaseModel):
    """Every error: a machine-readable code and a message saying what to change."""

    code: str = Field(examples=["upload_too_large"])
    detail: str = Field(examples=["the upload is 2,048.0 MiB; this server accepts at most 1,024.0 MiB per volume"])


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    version: str = Field(description="photonlib version of the server")
    api_version: str
    auth_required: bool


class ModelInfo(BaseModel):
    name: str
    version: str = Field(description="digest of the model configuration and parameter shapes")
    device: str
    model_grid_dhw: list[int]
    token_grid: list[int]
    tokens_total: int = Field(description="visual tokens per volume before pruning (the token budget)")
    pruner: str
    pruning_mode: str


class Limits(BaseModel):
    max_upload_bytes: int
    max_voxels: int
    max_dimension: int
    max_new_tokens: int
    default_max_new_tokens: int
    max_question_chars: int
    max_history_turns: int
    queue_size: int
    job_timeout_s: float
    upload_timeout_s: float


class CacheStats(BaseModel):
    entries: int
    bytes: int
    max_bytes: int
    max_entries: int
    evictions: int


class QueueStats(BaseModel):
    waiting: int
    running: int
    queue_size: int


class ServerInfo(BaseModel):
    api_version: str
    version: str
    model: ModelInfo
    limits: Limits
    cache: CacheStats
    queue: QueueStats
    auth_required: bool


class GeometryBody(BaseModel):
    """``VolumeGeometry.to_dict()``: LPS millimetres, direction columns are the i, j, k axes."""

    size: list[int]
    spacing: list[float]
    origin_lps: list[float]
    direction_lps: list[list[float]]


class VolumeInfo(BaseModel):
    volume_id: str = Field(pattern=VOLUME_ID_PATTERN, description="SHA-256 of voxels, geometry and modality")
    geometry: GeometryBody
    dtype: str
    source_format: str
    voxels: int
    voxel_bytes: int
    prepared: bool = Field(description="true once its first question ran: later questions skip preprocessing and the vision tower")
    memory_bytes: int
    questions: int
    created_at: float
    last_used_at: float
    created: bool | None = Field(None, description="upload only: false when the server already held this volume")


class HistoryTurn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    question: str = Field(max_length=100_000)
    answer: str = Field(max_length=100_000)


class QuestionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    question: str = Field(min_length=1, max_length=100_000, examples=["Is there a lesion in the liver?"])
    history: list[HistoryTurn] = Field(default_factory=list, max_length=1000, description="earlier turns, oldest first")
    max_new_tokens: int | None = Field(None, ge=1, le=1_000_000, description="answer length limit (server default when omitted)")


class Progress(BaseModel):
    tokens_generated: int
    max_new_tokens: int


class JobError(BaseModel):
    code: str = Field(examples=["timed_out", "out_of_memory", "bad_volume", "internal"])
    message: str


class Timings(BaseModel):
    preprocess: float
    vision: float
    prefill: float
    decode: float
    total: float
    queued: float


class ModelRef(BaseModel):
    name: str
    version: str


class AnswerResult(BaseModel):
    answer: str
    tokens_total: int
    tokens_kept: int
    tokens_generated: int
    stopped: bool = Field(description="generation was stopped (cancel or timeout) before the answer ended")
    cache_hit: bool = Field(description="the prepared volume came from the cache")
    vision_skipped: bool = Field(description="the vision tower did not run for this question")
    prefix_reused: bool = Field(
        False, description="a follow-up: the question-independent prompt prefix through the ITS layer was reused"
    )
    timings: Timings
    model: ModelRef
    heatmap_url: str


class JobStatus(BaseModel):
    job_id: str
    volume_id: str
    status: Literal["queued", "running", "done", "cancelled", "error"]
    stage: Literal["queued", "preparing", "generating", "finished"]
    queue_position: int | None = Field(None, description="1 = next to run; only while queued")
    progress: Progress
    partial_answer: str = Field(description="the answer so far (streaming); the full answer once done")
    cancel_requested: bool
    error: JobError | None
    result: AnswerResult | None
    created_at: float
    started_at: float | None
    finished_at: float | None
