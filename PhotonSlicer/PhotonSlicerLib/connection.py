"""The backend connection the panel shows, as a state machine without Qt.

States (``ConnectionStatus.state``):

- ``not set up``: the local backend's Python cannot run it (no Python there, PhotonLib's
  dependencies missing or outside the versions PhotonLib declares); the message says what to do;
- ``starting``: checking the Python, launching ``photon serve``, loading the model, or checking
  a backend (local once it listens; remote on Connect); also while stopping;
- ``ready``: a checked backend answers with this token; questions go to :attr:`BackendConnection.backend`;
- ``stopped``: nothing running (not started, or stopped on request);
- ``error``: the local backend ended by itself, or the check failed; the message says why.

Two modes: ``local`` (the bundled backend started here, :class:`LocalBackendProcess`) and
``remote`` (a URL and token typed by the user). The widget calls the ``start_local``/``stop_local``/
``connect_remote``/``set_mode`` methods from its buttons and :meth:`BackendConnection.poll` from a
timer while :attr:`BackendConnection.needs_polling`; network calls and the Python check run in
worker threads (:class:`BackgroundCall`), so nothing here blocks the caller.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from . import local_backend, panel
from .backend import BackendError, ClientBackend
from .background import BackgroundCall

NOT_SET_UP, STARTING, READY, STOPPED, ERROR = "not set up", "starting", "ready", "stopped", "error"
STATES = (NOT_SET_UP, STARTING, READY, STOPPED, ERROR)
LOCAL, REMOTE = "local", "remote"

#: ``(python, environment) -> problems``: what stops that Python from running the backend, in
#: words a user can act on (empty: it can). See :func:`PhotonSlicerLib.setup.setup_problems`.
SetupCheck = Callable[[str, Mapping[str, str]], "list[str]"]


@dataclass(frozen=True)
class ConnectionStatus:
    """What the Backend section shows. ``failure`` is set on the one poll where a failure happened."""

    mode: str
    state: str
    message: str
    url: str | None = None
    local_running: bool = False
    failure: str | None = None


class BackendConnection:
    """Local or remote backend: start, check, stop; see the module docstring for the states.

    Args:
        process_factory: makes the local backend (:class:`LocalBackendProcess` by default).
        client_factory: ``(url, token) -> ClientBackend``.
        background: runs a slow call in a thread (:class:`BackgroundCall`).
        setup_check: checks the local backend's Python before a start (none: start at once).
    """

    def __init__(
        self,
        *,
        process_factory: Callable[..., local_backend.LocalBackendProcess] = local_backend.LocalBackendProcess,
        client_factory: Callable[[str, str | None], ClientBackend] = ClientBackend,
        background: Callable[..., BackgroundCall] = BackgroundCall,
        setup_check: SetupCheck | None = None,
    ):
        self.process_factory, self.client_factory = process_factory, client_factory
        self.background, self.setup_check = background, setup_check
        self.mode = LOCAL
        self.local: local_backend.LocalBackendProcess | None = None
        #: The checked backend questions go to (None unless ready).
        self.backend: ClientBackend | None = None
        self._state, self._message = STOPPED, "Not started."
        self._failure: str | None = None
        self._check: BackgroundCall | None = None  # checking a backend (its info)
        self._checked: ClientBackend | None = None
        self._setup: BackgroundCall | None = None  # checking the local Python
        self._pending_start: dict | None = None  # the start waiting for that check
        self._local_check_started = False
        self._local_state = STOPPED

    # ------------------------------------------------------------------ what the panel shows
    @property
    def state(self) -> str:
        return self._state

    @property
    def message(self) -> str:
        return self._message

    @property
    def local_running(self) -> bool:
        return self.local is not None and self.local.running

    @property
    def checking_setup(self) -> bool:
        """The local Python's check (:meth:`check_local_setup`, or the one before a start) is under way."""
        return self._setup is not None

    @property
    def needs_polling(self) -> bool:
        """Something is under way (a check, a start, a stop) or a local backend runs and may end."""
        return (
            self._check is not None
            or self._setup is not None
            or (self.local is not None and self._local_state in (STARTING, READY))
        )

    def status(self) -> ConnectionStatus:
        url = self.backend.url if self.backend is not None else None
        return ConnectionStatus(self.mode, self._state, self._message, url, self.local_running, self._failure)

    def _set(self, state: str, message: str) -> None:
        self._state, self._message = state, message

    def _fail(self, state: str, message: str) -> None:
        self._set(state, message)
        self._failure = message

    # ------------------------------------------------------------------ commands
    def set_mode(self, mode: str) -> None:
        """Local or remote; a local backend keeps running while remote is chosen (Stop ends it)."""
        if mode not in (LOCAL, REMOTE):
            raise ValueError(f"mode must be {LOCAL!r} or {REMOTE!r}, not {mode!r}")
        if mode == self.mode:
            return
        self.mode = mode
        self.backend, self._check, self._checked = None, None, None
        if mode == REMOTE:
            # A check of the local Python still under way says nothing about a remote backend.
            self._setup, self._pending_start = None, None
            self._set(STOPPED, "Not connected.")
        elif self.local is not None and self.local.running:
            self._local_check_started = False  # connect to it again
            self._set(STARTING, "Reconnecting to the local backend ...")
        else:
            self._set(STOPPED, "Not started.")

    def check_local_setup(self, python: str, environment: Mapping[str, str]) -> None:
        """Check ``python`` in a thread (the panel opened, or another Python was chosen)."""
        if self.setup_check is None or self.mode != LOCAL or self.local_running:
            return
        self._pending_start = None
        self._setup = self.background(self.setup_check, python, environment)

    def start_local(self, python: str, *, startup_env: Mapping[str, str] | None = None, **options) -> None:
        """Check the Python (in a thread), then launch ``photon serve``; returns at once."""
        if self.mode != LOCAL:
            raise BackendError("Choose Local in the Backend section to start the bundled backend.")
        if self.local_running:
            raise BackendError("The local backend is already running. Stop it first.")
        self.backend = None
        self._pending_start = {"python": python, "startup_env": startup_env, **options}
        if self.setup_check is None:
            self._launch()
            return
        environment = local_backend.python_environment(python, os.environ, startup_env)
        self._setup = self.background(self.setup_check, python, environment)
        self._set(STARTING, "Checking the backend's Python ...")

    def _launch(self) -> None:
        options, self._pending_start = self._pending_start or {}, None
        process = self.process_factory(options.pop("python"), **options)
        process.start()  # raises BackendError (Python not found, cannot run)
        self.local, self._local_check_started, self._local_state = process, False, STARTING
        self._set(STARTING, "Starting the backend ...")

    def stop_local(self) -> None:
        """Ask the local backend to end (its whole process tree); :meth:`poll` sees it end."""
        self._pending_start = None
        if self._setup is not None and self.local is None:
            self._setup = None
            self._set(STOPPED, "Not started.")
            return
        if self.local is None:
            return
        status = self.local.stop()  # returns at once; poll() sees the tree end (or kills it)
        self.backend, self._check = None, None
        if status.state == STOPPED:
            self._local_state = STOPPED
            self._set(STOPPED, status.message)
        else:
            self._local_state = STARTING
            self._set(STARTING, "Stopping ...")

    def connect_remote(self, url: str, token: str | None) -> None:
        """Check ``url`` and ``token`` in a thread (a remote host may take long to answer)."""
        if self.mode != REMOTE:
            raise BackendError("Choose Remote URL in the Backend section to connect to another computer.")
        url = url.strip()
        if not url:
            raise BackendError("Type the backend's address (e.g. http://server:8765) first.")
        self.backend = None
        self._begin_check(self.client_factory(url, token or None))
        self._set(STARTING, f"Connecting to {url} ...")

    def forget_remote(self) -> None:
        """The URL or token changed: the next question or Connect uses the new ones."""
        if self.mode == REMOTE:
            self.backend, self._check = None, None
            if self._state in (READY, STARTING):
                self._set(STOPPED, "Not connected.")

    def backend_for_ask(self, url: str = "", token: str | None = None) -> ClientBackend:
        """The backend a question goes to (no network call here; the worker thread makes them)."""
        if self.mode == LOCAL:
            local = self.local
            if local is None or not local.running or local.url is None:
                raise BackendError(
                    "The local Photon backend is not running. Press Start in the Backend section "
                    "(or choose Remote URL)."
                )
            if self.backend is None or self.backend.url != local.url.rstrip("/"):
                self.backend = self.client_factory(local.url, local.token)
            return self.backend
        if not url.strip():
            raise BackendError("Type the backend's address in the Backend section first.")
        if self.backend is None or self.backend.url != url.strip().rstrip("/"):
            self.backend = self.client_factory(url.strip(), token or None)
        return self.backend

    def shutdown(self, wait: float = 3.0) -> None:
        """Slicer closes: end the local backend (it holds the token)."""
        self._check = self._setup = self._pending_start = None
        if self.local is not None:
            self.local.stop(wait=wait)
            self.local = None
        self.backend = None
        self._local_state = STOPPED
        self._set(STOPPED, "Not started." if self.mode == LOCAL else "Not connected.")

    # ------------------------------------------------------------------ the timer
    def poll(self) -> ConnectionStatus:
        """Cheap (no network): follow the Python check, the local process and the backend check."""
        self._failure = None
        if self._setup is not None and self._setup.finished:
            self._finish_setup_check()
        if self.local is not None:
            self._follow_local_process()
        if self._check is not None and self._check.finished:
            self._finish_check()
        return self.status()

    def _finish_setup_check(self) -> None:
        check, self._setup = self._setup, None
        if self.mode != LOCAL:  # the user chose Remote meanwhile: the local Python is not the question
            self._pending_start = None
            return
        try:
            problems = check.result()
        except BackendError as error:
            problems = [f"The backend's Python could not be checked: {error}"]
        if problems:
            self._pending_start = None
            message = " ".join(problems)
            if self._state == STARTING:  # a Start was refused: say it in a box too
                self._fail(NOT_SET_UP, message)
            else:
                self._set(NOT_SET_UP, message)
            return
        if self._pending_start is not None:
            try:
                self._launch()
            except BackendError as error:
                self._fail(ERROR, str(error))
        elif self._state == NOT_SET_UP or (self._state == STOPPED and self.local is None):
            self._set(STOPPED, "Not started.")

    def _follow_local_process(self) -> None:
        status = self.local.poll()
        previous, self._local_state = self._local_state, status.state
        if self.mode != LOCAL:
            return
        if status.state == READY and not self._local_check_started:
            self._local_check_started = True  # once per launch, even if it fails
            self._begin_check(self.client_factory(status.url, self.local.token))
        if status.state in (STOPPED, ERROR):
            self.backend, self._check = None, None
        if status.state == ERROR and previous != ERROR:
            self._fail(ERROR, status.message)
        elif status.state == READY and self._check is not None:
            self._set(STARTING, f"Listening at {status.url}; checking it ...")
        elif status.state != READY:
            self._set(status.state, status.message)

    def _begin_check(self, backend: ClientBackend) -> None:
        self._checked = backend
        self._check = self.background(backend.check, url=backend.url)

    def _finish_check(self) -> None:
        check, backend, self._check = self._check, self._checked, None
        try:
            info = check.result()
        except BackendError as error:
            self._fail(ERROR, str(error))
            return
        self.backend = backend
        self._set(READY, f"Ready: {panel.server_text(info)} at {backend.url}.")
