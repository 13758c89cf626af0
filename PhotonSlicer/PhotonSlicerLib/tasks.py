"""A question answered in a worker thread and polled from the main thread (a ``qt.QTimer`` in Slicer).

Slicer must never freeze on a network call, and MRML nodes must only be touched on the main
thread. So: :meth:`AskTask.start` reads the voxels (main thread) and hands the upload and the
wait to a thread; the widget calls :meth:`AskTask.poll` from a timer to show progress; once
``poll().finished``, :meth:`AskTask.finish` (main thread) adds the heatmap node and the history
row. No Qt here, so this runs and is tested under plain Python.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from .backend import AskCancelled, BackendError, PhotonAnswer, explain
from .logic import PhotonAskLogic

RUNNING, DONE, CANCELLED, ERROR = "running", "done", "cancelled", "error"


@dataclass(frozen=True)
class TaskProgress:
    """A snapshot for the panel: ``state`` is running, done, cancelled (no answer at all) or error."""

    state: str
    partial_answer: str
    tokens_generated: int
    error: str = ""
    cancel_requested: bool = False
    stopped: bool = False  # done, but the answer was cut short by Cancel (it is partial)
    waiting_s: float | None = None  # seconds waited so far for a backend busy with other questions; None: not waiting
    wait_limit_s: float = 0.0  # the most the question waits for it

    @property
    def finished(self) -> bool:
        return self.state != RUNNING


class AskTask:
    """One question about one volume node; see the module docstring for which call runs where.

    Cancel is honoured whenever it comes: before the worker has started, during the upload,
    between upload and submit, or while the answer is generated. The task owns the cancel
    event it hands to the backend, so no reset inside the backend can lose an early cancel.
    """

    def __init__(self, logic: PhotonAskLogic, volume_node, question: str, *, max_new_tokens: int | None = None):
        self.logic, self.volume_node, self.question = logic, volume_node, question
        self.max_new_tokens = max_new_tokens
        self._lock = threading.Lock()
        self._partial, self._tokens = "", 0
        self._busy_since: float | None = None  # when the wait for a busy backend began (monotonic)
        self._busy_limit = 0.0
        self._result: PhotonAnswer | None = None
        self._error: BackendError | None = None
        self._thread: threading.Thread | None = None
        self._backend = None
        self._cancel_event = threading.Event()

    def start(self) -> AskTask:
        """Main thread: read the volume (fails at once for an unusable one), then ask in a daemon thread."""
        array, geometry = self.logic.read_volume(self.volume_node)
        self._backend = self.logic.current_backend()
        self._thread = threading.Thread(
            target=self._run, args=(self._backend, array, geometry), name="PhotonAsk", daemon=True
        )  # daemon: closing Slicer must not wait for a slow backend
        self._thread.start()
        return self

    def _run(self, backend, array, geometry) -> None:
        try:
            result = backend.ask(
                array, geometry, self.question, max_new_tokens=self.max_new_tokens, on_progress=self._progress,
                cancel_event=self._cancel_event, on_busy=self._busy,
            )  # fmt: skip
            with self._lock:
                self._result = result
        except BaseException as error:  # every failure reaches the user through poll()/finish()
            with self._lock:
                self._error = explain(error, getattr(backend, "url", ""))

    def _progress(self, partial_answer: str, tokens_generated: int) -> None:
        with self._lock:
            self._partial, self._tokens = partial_answer, tokens_generated
            self._busy_since = None  # the backend took the question

    def _busy(self, waited_s: float, limit_s: float) -> None:
        with self._lock:
            self._busy_since, self._busy_limit = time.monotonic() - waited_s, limit_s

    def poll(self) -> TaskProgress:
        """Any thread, cheap (no network): the state, the answer so far and the token count."""
        requested = self._cancel_event.is_set()
        with self._lock:
            if isinstance(self._error, AskCancelled):
                return TaskProgress(CANCELLED, self._partial, self._tokens, str(self._error), requested)
            if self._error is not None:
                return TaskProgress(ERROR, self._partial, self._tokens, str(self._error), requested)
            if self._result is not None:
                return TaskProgress(DONE, self._result.answer, self._tokens, "", requested, self._result.stopped)
            waiting = None if self._busy_since is None else time.monotonic() - self._busy_since
            return TaskProgress(RUNNING, self._partial, self._tokens, "", requested, False, waiting, self._busy_limit)

    def cancel(self) -> None:
        """Stop the question; returns at once (the request to the backend is sent from another thread).

        The task then finishes ``done`` with the partial answer (``stopped``), or ``cancelled``
        when the backend had not started answering.
        """
        if self._cancel_event.is_set():
            return
        self._cancel_event.set()
        backend = self._backend
        if backend is not None:
            threading.Thread(target=self._send_cancel, args=(backend,), name="PhotonCancel", daemon=True).start()

    @staticmethod
    def _send_cancel(backend) -> None:
        try:
            backend.cancel()
        except BackendError:
            pass  # the worker's own wait reports a backend that went away

    def wait(self, timeout: float | None = None) -> TaskProgress:
        """Block until the worker ends (tests and scripts; the GUI polls instead)."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self.poll()

    def finish(self) -> PhotonAnswer | None:
        """Main thread, once finished: the heatmap node and history row.

        Returns None when the question was cancelled before any answer (nothing is added);
        raises :class:`BackendError` on failure.
        """
        progress = self.poll()
        if not progress.finished:
            raise RuntimeError("AskTask.finish() called before the answer arrived; poll() until finished")
        if progress.state == CANCELLED:
            return None
        if self._error is not None:
            raise self._error
        return self.logic.add_result(self.volume_node, self.question, self._result)
