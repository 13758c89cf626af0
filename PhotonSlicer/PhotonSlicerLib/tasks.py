"""A question answered in a worker thread and polled from the main thread (a ``qt.QTimer`` in Slicer).

Slicer must never freeze on a network call, and MRML nodes must only be touched on the main
thread. So: :meth:`AskTask.start` reads the voxels (main thread) and hands the upload and the
wait to a thread; the widget calls :meth:`AskTask.poll` from a timer to show progress; once
``poll().finished``, :meth:`AskTask.finish` (main thread) adds the heatmap node and the history
row. No Qt here, so this runs and is tested under plain Python.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from .backend import BackendAnswer, BackendError, explain
from .logic import PhotonAnswer, PhotonAskLogic


@dataclass(frozen=True)
class TaskProgress:
    state: str  # running, done, error
    partial_answer: str
    tokens_generated: int
    error: str = ""

    @property
    def finished(self) -> bool:
        return self.state != "running"


class AskTask:
    """One question about one volume node; see the module docstring for which call runs where."""

    def __init__(self, logic: PhotonAskLogic, volume_node, question: str, *, max_new_tokens: int | None = None):
        self.logic, self.volume_node, self.question = logic, volume_node, question
        self.max_new_tokens = max_new_tokens
        self._lock = threading.Lock()
        self._partial, self._tokens = "", 0
        self._result: BackendAnswer | None = None
        self._error: BackendError | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> AskTask:
        """Main thread: read the volume (fails at once for an unusable one), then ask in a daemon thread."""
        array, geometry = self.logic.read_volume(self.volume_node)
        backend = self.logic.current_backend()
        self._thread = threading.Thread(
            target=self._run, args=(backend, array, geometry), name="PhotonAsk", daemon=True
        )  # daemon: closing Slicer must not wait for a slow backend
        self._thread.start()
        return self

    def _run(self, backend, array, geometry) -> None:
        try:
            result = backend.ask(
                array, geometry, self.question, max_new_tokens=self.max_new_tokens, on_progress=self._progress
            )
            with self._lock:
                self._result = result
        except BaseException as error:  # every failure reaches the user through poll()/finish()
            with self._lock:
                self._error = explain(error, getattr(backend, "url", ""))

    def _progress(self, partial_answer: str, tokens_generated: int) -> None:
        with self._lock:
            self._partial, self._tokens = partial_answer, tokens_generated

    def poll(self) -> TaskProgress:
        """Any thread, cheap: the state, the answer so far and the token count."""
        with self._lock:
            if self._error is not None:
                return TaskProgress("error", self._partial, self._tokens, str(self._error))
            if self._result is not None:
                return TaskProgress("done", self._result.answer, self._tokens)
            return TaskProgress("running", self._partial, self._tokens)

    def cancel(self) -> None:
        """Ask the backend to stop; the task then finishes with the partial answer (``stopped``)."""
        self.logic.cancel()

    def wait(self, timeout: float | None = None) -> TaskProgress:
        """Block until the worker ends (tests and scripts; the GUI polls instead)."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self.poll()

    def finish(self) -> PhotonAnswer:
        """Main thread, once finished: the heatmap node and history row; raises BackendError on failure."""
        progress = self.poll()
        if not progress.finished:
            raise RuntimeError("AskTask.finish() called before the answer arrived; poll() until finished")
        if self._error is not None:
            raise self._error
        return self.logic.add_result(self.volume_node, self.question, self._result)
