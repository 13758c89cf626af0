"""A slow call in a daemon thread, polled from a Qt timer (no Qt, no MRML: usable anywhere)."""

from __future__ import annotations

import threading

from .backend import explain


class BackgroundCall:
    """Any slow call (checking a backend on Connect) in a daemon thread, polled like :class:`AskTask`."""

    def __init__(self, function, *args, url: str = "", **kwargs):
        self._outcome: tuple[bool, object] | None = None
        self._url = url
        self._thread = threading.Thread(
            target=self._run, args=(function, args, kwargs), name="PhotonBackgroundCall", daemon=True
        )
        self._thread.start()

    def _run(self, function, args, kwargs) -> None:
        try:
            self._outcome = (True, function(*args, **kwargs))
        except BaseException as error:  # reported through result()
            self._outcome = (False, explain(error, self._url))

    @property
    def finished(self) -> bool:
        return self._outcome is not None

    def wait(self, timeout: float | None = None) -> bool:
        self._thread.join(timeout)
        return self.finished

    def result(self):
        """The function's return value; raises its (explained) error. Call once ``finished``."""
        if self._outcome is None:
            raise RuntimeError("BackgroundCall.result() called before the call finished")
        succeeded, value = self._outcome
        if not succeeded:
            raise value
        return value
