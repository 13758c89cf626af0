"""Questions as jobs, run one at a time by a single worker thread (GPU work is serial).

A job is queued (bounded: a full queue is refused, the HTTP layer answers 503), then run:
prepare the volume unless its prepared case is cached, then answer with streaming progress.
Cancellation and the job timeout are polled between generated tokens. Any failure, out of
memory included, ends the job with an error and leaves the worker running; should the worker
thread itself ever end unexpectedly, the questions still waiting end with an error too and new
ones are refused, so no client waits on a job nobody will run.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from photonlib.model import Turn
from photonlib.serving.store import StoredVolume, VolumeStore, geometry_only
from photonlib.volume import PreparedVolume, VolumeError

if TYPE_CHECKING:
    from photonlib.inference import PhotonEngine

logger = logging.getLogger(__name__)

QUEUED, RUNNING, DONE, CANCELLED, ERROR = "queued", "running", "done", "cancelled", "error"
FINISHED = (DONE, CANCELLED, ERROR)


class QueueFullError(Exception):
    """The worker's queue holds as many questions as it may."""


class WorkerStoppedError(Exception):
    """The worker thread is not running (the server is shutting down, or the worker failed)."""


def failure_summary(error: BaseException, limit: int = 300) -> str:
    """``Type: first line of the message`` (shortened), for a job's error message."""
    lines = str(error).strip().splitlines()
    text = f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass
class Job:
    """One question about one stored volume, and everything the client may ask about it."""

    volume: StoredVolume
    question: str
    history: tuple[Turn, ...]
    max_new_tokens: int
    job_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    status: str = QUEUED
    stage: str = "queued"  # queued, preparing, generating, finished
    tokens_generated: int = 0
    partial_answer: str = ""
    error_code: str | None = None
    error_message: str | None = None
    result: dict[str, Any] | None = None
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    cancel_requested: threading.Event = field(default_factory=threading.Event, repr=False)
    finished: threading.Event = field(default_factory=threading.Event, repr=False)
    # For the heatmap: the token-grid keep probabilities and the grids to map them back.
    keep_probability: np.ndarray | None = field(default=None, repr=False)
    mapping: PreparedVolume | None = field(default=None, repr=False)
    heatmap_cache: dict[tuple[str, bool], bytes] = field(default_factory=dict, repr=False)
    version: int = 0  # bumped on every visible change (streaming)

    def finish(self, status: str, *, code: str | None = None, message: str | None = None) -> None:
        self.status, self.stage = status, "finished"
        self.error_code, self.error_message = code, message
        self.finished_at = time.time()
        self.version += 1
        self.finished.set()


class JobWorker:
    """The single worker thread, its bounded queue and the registry of recent jobs."""

    def __init__(self, engine: PhotonEngine, store: VolumeStore, *, queue_size: int, job_timeout_s: float, jobs_kept: int, model: dict):
        self.engine = engine
        self.store = store
        self.queue_size = queue_size
        self.job_timeout_s = job_timeout_s
        self.jobs_kept = jobs_kept
        self.model = model  # name and version, copied into every result
        self._waiting: deque[Job] = deque()
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._condition = threading.Condition()
        self._running: Job | None = None
        self._stopping = False
        self._failure: str | None = None  # why the worker thread ended, if it was not asked to
        self._thread = threading.Thread(target=self._loop, name="photon-worker", daemon=True)

    # ------------------------------------------------------------------ control
    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        with self._condition:
            self._stopping = True
            for job in self._waiting:
                job.cancel_requested.set()
            if self._running is not None:
                self._running.cancel_requested.set()
            self._condition.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    # ------------------------------------------------------------------ jobs
    def submit(self, job: Job) -> Job:
        with self._condition:
            if self._stopping or self._failure is not None or not self._thread.is_alive():
                raise WorkerStoppedError(self._failure or "the server is shutting down")
            if len(self._waiting) >= self.queue_size:
                raise QueueFullError(f"{len(self._waiting)} questions are already waiting (queue size {self.queue_size})")
            self._waiting.append(job)
            self._jobs[job.job_id] = job
            self._forget_old_jobs()
            self._condition.notify_all()
        return job

    def get(self, job_id: str) -> Job | None:
        with self._condition:
            return self._jobs.get(job_id)

    def cancel(self, job: Job) -> None:
        with self._condition:
            job.cancel_requested.set()
            if job.status == QUEUED and job in self._waiting:
                self._waiting.remove(job)
                job.finish(CANCELLED, message="cancelled before it started")
            self._condition.notify_all()

    def queue_position(self, job: Job) -> int | None:
        """1 for the next job to run; None when not waiting."""
        with self._condition:
            try:
                return self._waiting.index(job) + 1
            except ValueError:
                return None

    def stats(self) -> dict:
        with self._condition:
            return {"waiting": len(self._waiting), "running": 0 if self._running is None else 1, "queue_size": self.queue_size}

    def _forget_old_jobs(self) -> None:
        finished = [job_id for job_id, job in self._jobs.items() if job.status in FINISHED]
        for job_id in finished[: max(0, len(self._jobs) - self.jobs_kept)]:
            del self._jobs[job_id]

    # ------------------------------------------------------------------ the worker
    def _loop(self) -> None:
        try:
            while self._run_next():
                pass
        except BaseException as error:  # a bug in the bookkeeping below: say so, strand no one
            logger.exception("the worker thread failed; the server answers no more questions")
            self._fail_all(f"the server's worker failed ({failure_summary(error)}); restart photon serve")

    def _run_next(self) -> bool:
        """Run the next job; False once the worker is asked to stop."""
        with self._condition:
            while not self._waiting and not self._stopping:
                self._condition.wait()
            if self._stopping:
                for job in self._waiting:
                    job.finish(CANCELLED, message="the server is shutting down")
                self._waiting.clear()
                return False
            job = self._waiting.popleft()
            self._running = job
            job.status, job.stage, job.started_at = RUNNING, "preparing", time.time()
            job.version += 1
        try:
            self._run(job)
        except BaseException as error:  # the worker must outlive every job
            logger.exception("job %s: unexpected failure", job.job_id)
            job.finish(
                ERROR, code="internal",
                message=f"internal server error ({failure_summary(error)}); the server keeps running, its log has the details",
            )  # fmt: skip
        finally:
            if not job.finished.is_set():  # _run returned without an outcome: never leave a job running
                job.finish(ERROR, code="internal", message="internal server error (the job ended without a result); see the server log")
            with self._condition:
                self._running = None
                self._forget_old_jobs()
        return True

    def _fail_all(self, message: str) -> None:
        """End the running and the waiting jobs with ``message`` and refuse new ones."""
        with self._condition:
            self._failure = message
            stranded = [*([self._running] if self._running is not None else []), *self._waiting]
            self._waiting.clear()
            self._running = None
            for job in stranded:
                if not job.finished.is_set():
                    job.finish(ERROR, code="internal", message=message)
            self._condition.notify_all()

    def _run(self, job: Job) -> None:
        started = time.perf_counter()
        deadline = time.monotonic() + self.job_timeout_s
        timed_out = lambda: time.monotonic() > deadline  # noqa: E731
        try:
            case, cache_hit = job.volume.prepared_case(self.engine.prepare)
            self.store.rebalance()
            if job.cancel_requested.is_set() or timed_out():
                self._end_early(job, timed_out())
                return
            job.stage = "generating"
            job.version += 1

            def on_text(text: str) -> None:
                job.tokens_generated += 1
                job.partial_answer = text
                job.version += 1

            answer = self.engine.ask(
                case, job.question, job.history, max_new_tokens=job.max_new_tokens,
                on_text=on_text, should_stop=lambda: job.cancel_requested.is_set() or timed_out(),
            )  # fmt: skip
            self.store.rebalance()  # the case now holds the prompt prefix too
        except torch.cuda.OutOfMemoryError:
            self._release_device_memory()
            logger.error("job %s: out of device memory", job.job_id)
            job.finish(ERROR, code="out_of_memory", message=self._oom_message("GPU"))
            return
        except MemoryError:
            logger.error("job %s: out of host memory", job.job_id)
            job.finish(ERROR, code="out_of_memory", message=self._oom_message("host"))
            return
        except VolumeError as error:
            job.finish(ERROR, code="bad_volume", message=str(error))
            return

        vision_skipped = cache_hit and self.engine.pruner.stage != "vision"
        prepare_timings = {"preprocess": 0.0, "vision": 0.0} if cache_hit else dict(case.timings)
        timings = {
            **prepare_timings,
            "prefill": answer.timings.get("prefill", 0.0),
            "decode": answer.timings.get("decode", 0.0),
            "total": time.perf_counter() - started,
            "queued": job.started_at - job.created_at,
        }
        job.keep_probability = answer.keep_probability
        job.mapping = geometry_only(case.prepared)
        job.partial_answer = answer.answer
        job.result = {
            "answer": answer.answer,
            "tokens_total": answer.tokens_total,
            "tokens_kept": answer.tokens_kept,
            "tokens_generated": job.tokens_generated,
            "stopped": answer.stopped,
            "cache_hit": cache_hit,
            "vision_skipped": vision_skipped,
            "prefix_reused": answer.prefix_reused,
            "timings": {name: round(seconds, 6) for name, seconds in timings.items()},
            "model": self.model,
        }
        job.volume.questions += 1
        logger.info(
            "job %s: %s, %d of %d tokens kept, %d generated, %.3f s%s",
            job.job_id, "stopped" if answer.stopped else "answered", answer.tokens_kept, answer.tokens_total,
            job.tokens_generated, timings["total"], " (prepared volume cached)" if cache_hit else "",
        )  # fmt: skip
        if job.cancel_requested.is_set():
            job.finish(CANCELLED, message="cancelled; the partial answer is kept")
        elif answer.stopped and timed_out():
            job.finish(ERROR, code="timed_out", message=self._timeout_message())
        else:
            job.finish(DONE)

    def _end_early(self, job: Job, timed_out: bool) -> None:
        if timed_out and not job.cancel_requested.is_set():
            job.finish(ERROR, code="timed_out", message=self._timeout_message())
        else:
            job.finish(CANCELLED, message="cancelled before the answer started")

    def _timeout_message(self) -> str:
        return f"timed out after {self.job_timeout_s:g} s (the server's job timeout); ask for fewer tokens or raise --job-timeout"

    def _oom_message(self, where: str) -> str:
        return (
            f"out of {where} memory while answering; the server keeps running. Try a smaller volume, fewer "
            "tokens, or restart the server with a smaller --cache-mb"
        )

    def _release_device_memory(self) -> None:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
