"""The bundled backend on this computer: ``photon serve`` started from a configured Python.

The model needs PyTorch, which never enters Slicer's own process: the backend runs as a child
process of a Python that has PhotonLib's dependencies (Slicer's own ``PythonSlicer`` after a
``pip_install``, or an external environment). It runs the PhotonLib shipped with the extension
(put first on its ``PYTHONPATH``), so client and server versions always match.

Security: every launch gets a fresh random token, handed to the server through the
``PHOTON_TOKEN`` environment variable of the child only (not its command line, which other
users can read with ``ps``). It lives in this object's memory and nowhere else: not in the
log, the scene, the parameter node or the settings.

No Qt here: the widget polls :meth:`LocalBackendProcess.poll` from a ``qt.QTimer``; tests run
a real ``photon serve`` under plain Python. Starting, polling and stopping never block for
long: the model load happens in the child, and the status comes from its log file.

Stopping ends the whole process tree. ``PythonSlicer`` is a launcher: it runs the real
interpreter as its own child and forwards no signal, so ending the launcher alone would leave
the server holding the port and the GPU memory. The backend therefore starts in a process
group of its own (a new session on POSIX, ``CREATE_NEW_PROCESS_GROUP`` on Windows); Stop
signals the group (SIGTERM, then SIGKILL after a grace period; ``taskkill /T /F`` on Windows),
and the backend counts as running until no process of the group is left. When Slicer's Python
exits (Slicer quits) every backend still running is stopped the same way (an ``atexit``
handler, :func:`stop_all`).
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import datetime
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol

from .backend import BUNDLED_PHOTONLIB_DIR, BackendError

#: How the server receives its token (``photon serve --help``; never on the command line).
TOKEN_ENV = "PHOTON_TOKEN"
STOPPED, STARTING, READY, ERROR = "stopped", "starting", "ready", "error"
#: Seconds a stopping server gets to shut down gracefully before it is killed.
STOP_GRACE_S = 5.0
#: Environment variables of Slicer's own Python that would break another interpreter.
SLICER_PYTHON_VARIABLES = ("PYTHONHOME", "PYTHONPATH", "PYTHONSTARTUP", "PYTHONNOUSERSITE", "PYTHONEXECUTABLE")

_LISTENING = re.compile(r"listening on (http://\S+?)[\s(;]")
_LOADING = "loading the model"
_FAILURES = (
    # (pattern in the log, what the user should do)
    (
        re.compile(r"No module named '?([\w]+)"),
        "The backend's Python lacks the package '{0}'. Install PhotonLib's backend dependencies into that "
        "Python (see the PhotonSlicer documentation), or choose another Python.",
    ),
    (
        re.compile(r"cannot listen on .*?\(([^)]*)\)"),
        "The backend could not open its network port ({0}). Another backend may be running; stop it and start again.",
    ),
    (
        re.compile(r"photon serve: error: (.+)"),
        "The backend did not start: {0}",
    ),
    (
        re.compile(r"(CUDA out of memory|OutOfMemoryError)"),
        "The backend ran out of GPU memory while loading the model. Close other GPU programs, or run it on the "
        "CPU: set Device to cpu in Edit > Application Settings > Photon and press Start again.",
    ),
)


class RunningProcess(Protocol):
    """What is needed of a started process (``subprocess.Popen`` is one)."""

    pid: int

    def poll(self) -> int | None: ...

    def terminate(self) -> None: ...

    def kill(self) -> None: ...

    def wait(self, timeout: float | None = None) -> int: ...


class ProcessLauncher(Protocol):
    """Starts ``command`` with ``env``, its output (stdout and stderr) going to ``log``; returns at once."""

    def __call__(self, command: Sequence[str], env: Mapping[str, str], log: IO[bytes]) -> RunningProcess: ...


class ProcessTree:
    """A started child and every process it starts (a :class:`RunningProcess`).

    The child leads a process group of its own (see :func:`subprocess_launcher`).
    :meth:`terminate` and :meth:`kill` reach every member of the group, and :meth:`poll`
    reports an exit code only once the child *and* everything it started have ended: a
    launcher such as ``PythonSlicer`` may end while the server it started still runs.
    """

    def __init__(self, child: subprocess.Popen):
        self.child = child
        self.pid = child.pid
        self._group: int | None = None
        if sys.platform != "win32":
            with contextlib.suppress(OSError):
                if os.getpgid(child.pid) == child.pid:  # it leads its own group (start_new_session)
                    self._group = child.pid

    def poll(self) -> int | None:
        exit_code = self.child.poll()
        if exit_code is None or self._group_alive():
            return None
        return exit_code

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            exit_code = self.poll()
            if exit_code is not None:
                return exit_code
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(self.child.args, timeout)
            time.sleep(0.02)

    def terminate(self) -> None:
        """Ask every process of the tree to end (SIGTERM; on Windows the tree is ended at once)."""
        if sys.platform == "win32":
            self._taskkill()
        else:
            self._signal(signal.SIGTERM)

    def kill(self) -> None:
        """End every process of the tree now."""
        if sys.platform == "win32":
            self._taskkill()
        else:
            self._signal(signal.SIGKILL)

    def _signal(self, signal_number: int) -> None:
        if self._group is not None:
            with contextlib.suppress(ProcessLookupError):  # the whole group has ended already
                os.killpg(self._group, signal_number)
        elif self.child.poll() is None:
            self.child.send_signal(signal_number)

    def _taskkill(self) -> None:
        # /T: the child and every process it started; /F: console processes without a window
        # cannot be asked to close. A child that is gone already makes taskkill fail: harmless.
        if self.child.poll() is None:
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                subprocess.run(
                    ["taskkill", "/PID", str(self.pid), "/T", "/F"], stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=10,
                    creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0),
                )  # fmt: skip
            if self.child.poll() is None:
                self.child.kill()

    def _group_alive(self) -> bool:
        """Is any process of the group still running (zombies do not count: they hold nothing)?"""
        if self._group is None:
            return False
        proc = Path("/proc")
        if (proc / "self" / "stat").is_file():
            for entry in proc.iterdir():
                if not entry.name.isdigit():
                    continue
                try:
                    stat = (entry / "stat").read_text()
                except OSError:  # ended while we looked
                    continue
                fields = stat[stat.rfind(")") + 2 :].split()  # after "pid (name) "
                if len(fields) > 2 and fields[2] == str(self._group) and fields[0] not in ("Z", "X"):
                    return True
            return False
        try:
            os.killpg(self._group, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def subprocess_launcher(command: Sequence[str], env: Mapping[str, str], log: IO[bytes]) -> RunningProcess:
    """The default launcher: a child leading its own process group, without a console window on Windows.

    Its own group (a new session on POSIX) lets Stop reach every process the child starts,
    and keeps Ctrl+C in a terminal that runs Slicer from reaching the backend.
    """
    if sys.platform == "win32":
        options = {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP | getattr(subprocess, "CREATE_NO_WINDOW", 0)}
    else:
        options = {"start_new_session": True}
    child = subprocess.Popen(
        list(command), env=dict(env), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, **options
    )
    return ProcessTree(child)


def new_token() -> str:
    """A fresh random bearer token (256 bits), made for one launch."""
    return secrets.token_urlsafe(32)


def is_slicer_python(python: str | os.PathLike[str]) -> bool:
    """Is ``python`` Slicer's own launcher (``PythonSlicer``, ``PythonSlicer.exe``)?"""
    return Path(str(python)).name.lower().startswith("pythonslicer")


def python_environment(
    python: str | os.PathLike[str],
    slicer_environment: Mapping[str, str],
    startup_environment: Mapping[str, str] | None,
) -> dict[str, str]:
    """The environment every child Python of the module starts from (the backend and pip alike).

    The one rule: ``PythonSlicer`` runs in Slicer's own environment (``slicer_environment``,
    i.e. ``os.environ``: its launcher sets its Python up again), any other Python in the
    environment Slicer itself was started from (``startup_environment``, i.e.
    ``slicer.util.startupEnvironment()``), so Slicer's libraries cannot break it. Either way
    Slicer's own Python variables (``PYTHONHOME``, ``PYTHONPATH``, ...) are left out. Without
    a startup environment (plain Python, tests) the current one is used.
    """
    use_slicers = is_slicer_python(python) or startup_environment is None
    base = slicer_environment if use_slicers else startup_environment
    return {key: value for key, value in base.items() if key not in SLICER_PYTHON_VARIABLES}


def backend_environment(
    base_env: Mapping[str, str], token: str, photonlib_dir: Path | None = BUNDLED_PHOTONLIB_DIR
) -> dict[str, str]:
    """The backend child's environment: ``base_env`` without Slicer's Python settings, plus the token and PhotonLib.

    ``base_env`` is what :func:`python_environment` chose for the backend's Python.
    """
    env = {key: value for key, value in base_env.items() if key not in SLICER_PYTHON_VARIABLES}
    env[TOKEN_ENV] = token
    env["PYTHONUNBUFFERED"] = "1"  # the status comes from the log: lines must arrive at once
    if photonlib_dir is not None and (Path(photonlib_dir) / "photonlib" / "__init__.py").is_file():
        env["PYTHONPATH"] = str(photonlib_dir)
    return env


def default_python() -> str:
    """Slicer's own Python launcher (``PythonSlicer``) when there is one, else this interpreter."""
    import shutil

    return shutil.which("PythonSlicer") or sys.executable


#: Backends started in this Python and not yet ended: stopped by :func:`stop_all` at exit.
_RUNNING: set[LocalBackendProcess] = set()
_RUNNING_LOCK = threading.Lock()


def stop_all(wait: float = 3.0) -> None:
    """Stop every local backend this Python started (each gets ``wait`` seconds, then is killed).

    Runs at interpreter exit (Slicer quitting) through :mod:`atexit`; the module's widget also
    stops its backend in ``cleanup()``.
    """
    with _RUNNING_LOCK:
        backends = list(_RUNNING)
    for backend in backends:  # all asked at once, so their grace periods overlap
        with contextlib.suppress(Exception):  # at exit: never raise, try every backend
            backend.stop()
    for backend in backends:
        with contextlib.suppress(Exception):
            backend.stop(wait=wait)


atexit.register(stop_all)


@dataclass(frozen=True)
class LocalBackendStatus:
    """``state``: stopped, starting, ready or error; ``message`` says it in words for the panel."""

    state: str
    message: str
    url: str | None = None


class LocalBackendProcess:
    """``photon serve`` in a child process: start, poll, stop, log.

    Args:
        python: the Python executable that has PhotonLib's backend dependencies.
        port: 0 picks a free port (the URL is read from the log once the server listens).
        model: a Photon model folder; None uses the demo model embedded in photonlib.
        device: ``auto``, ``cpu`` or ``cuda[:N]``.
        startup_env: the environment Slicer was started from (``slicer.util.startupEnvironment()``);
            with it the child's environment follows :func:`python_environment`.
        base_env: the environment the child starts from, overriding that rule (tests).
        log_dir: where the log files go (one per launch); a temporary folder by default.
        launcher: how the process is started (:func:`subprocess_launcher`).
    """

    def __init__(
        self,
        python: str | os.PathLike[str],
        *,
        port: int = 0,
        model: str | None = None,
        device: str = "auto",
        extra_args: Sequence[str] = (),
        startup_env: Mapping[str, str] | None = None,
        base_env: Mapping[str, str] | None = None,
        log_dir: str | os.PathLike[str] | None = None,
        photonlib_dir: Path | None = BUNDLED_PHOTONLIB_DIR,
        launcher: ProcessLauncher = subprocess_launcher,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.python = str(python)
        self.port, self.model, self.device, self.extra_args = port, model, device, tuple(extra_args)
        self.base_env, self.startup_env = base_env, startup_env
        self.log_dir = Path(log_dir) if log_dir else Path(tempfile.gettempdir()) / "PhotonSlicer"
        self.photonlib_dir = photonlib_dir
        self.launcher, self.clock = launcher, clock
        self.token: str | None = None  # this launch's token: memory only
        self.url: str | None = None
        self.log_path: Path | None = None
        self._process: RunningProcess | None = None
        self._log: IO[bytes] | None = None
        self._read_offset = 0
        self._recent_lines: collections.deque[str] = collections.deque(maxlen=200)
        self._started_at = 0.0
        self._stop_deadline: float | None = None
        self._state, self._message = STOPPED, "Not started."

    def __repr__(self) -> str:  # never shows the token
        return f"LocalBackendProcess({self.python!r}, state={self._state!r}, url={self.url!r})"

    # ------------------------------------------------------------------ commands
    def command(self) -> list[str]:
        """The command line (no token on it: the token goes through the environment)."""
        command = [self.python, "-m", "photonlib.cli.main", "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        command += ["--device", self.device]
        if self.model:
            command += ["--model", str(self.model)]
        return command + list(self.extra_args)

    def start(self) -> None:
        """Launch with a fresh token; returns at once (poll() says when it is ready)."""
        if self.running:
            raise BackendError("The local backend is already running. Stop it first.")
        python = Path(self.python)
        if not self.python or not (python.is_file() and os.access(python, os.X_OK)):
            raise BackendError(
                f"The Python for the local backend was not found ({self.python or 'none set'}). "
                "Choose a Python with PhotonLib installed in the Backend section."
            )
        self.log_dir.mkdir(parents=True, exist_ok=True)
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        self.log_path = self.log_dir / f"photon-serve-{stamp}-{os.getpid()}.log"
        self._close_log()
        self._log = open(self.log_path, "wb")  # noqa: SIM115  (the child writes to it until stopped)
        self._log.write(f"PhotonSlicer: starting {' '.join(self.command())}\n".encode())
        self._log.flush()
        self.token, self.url = new_token(), None
        self._read_offset, self._stop_deadline = 0, None
        self._recent_lines.clear()
        base = self.base_env
        if base is None:
            base = python_environment(self.python, os.environ, self.startup_env)
        env = backend_environment(base, self.token, self.photonlib_dir)
        try:
            self._process = self.launcher(self.command(), env, self._log)
        except OSError as error:
            self.token = None
            self._close_log()
            raise BackendError(
                f"The local backend could not be started: {error.strerror or error}.", str(error)
            ) from error
        self._started_at = self.clock()
        self._state, self._message = STARTING, "Starting the backend ..."
        with _RUNNING_LOCK:
            _RUNNING.add(self)

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def poll(self) -> LocalBackendStatus:
        """Cheap (reads the new part of the log, no network): call it from a timer."""
        self._read_new_log_lines()
        process = self._process
        if process is None:
            return LocalBackendStatus(self._state, self._message, None)
        exit_code = process.poll()
        if exit_code is None:
            if self._stop_deadline is not None:
                if self.clock() >= self._stop_deadline:
                    process.kill()
                return LocalBackendStatus(STARTING if self.url is None else READY, "Stopping ...", self.url)
            if self.url is None:
                for line in self._recent_lines:
                    match = _LISTENING.search(line + " ")
                    if match:
                        self.url = match.group(1)
                        break
            if self.url is not None:
                self._state, self._message = READY, f"Ready at {self.url}."
            else:
                waited = self.clock() - self._started_at
                doing = "loading the model" if any(_LOADING in line for line in self._recent_lines) else "starting"
                self._state, self._message = STARTING, f"Starting: {doing} ({waited:.0f} s) ..."
            return LocalBackendStatus(self._state, self._message, self.url)
        # The process has ended.
        self._read_new_log_lines()
        stopped_on_request = self._stop_deadline is not None
        self._process, self.token, self.url = None, None, None
        with _RUNNING_LOCK:
            _RUNNING.discard(self)
        self._close_log()
        if stopped_on_request:
            self._state, self._message = STOPPED, "Stopped."
        else:
            self._state, self._message = ERROR, self._explain_exit(exit_code)
        return LocalBackendStatus(self._state, self._message, None)

    def stop(self, wait: float = 0.0) -> LocalBackendStatus:
        """Ask the server (its whole process tree) to shut down; with ``wait`` > 0, block up to that long, then kill it.

        Without ``wait`` it returns at once and :meth:`poll` kills the tree once the grace
        period (``STOP_GRACE_S``) has passed.
        """
        process = self._process
        if process is None:
            return self.poll()
        if process.poll() is None:
            if self._stop_deadline is None:
                self._stop_deadline = self.clock() + STOP_GRACE_S
                process.terminate()
            if wait > 0:
                try:
                    process.wait(wait)
                except subprocess.TimeoutExpired:
                    process.kill()
                    with contextlib.suppress(subprocess.TimeoutExpired):  # poll() says what is left
                        process.wait(5)
        else:
            self._stop_deadline = self._stop_deadline or self.clock()
        return self.poll()

    def wait_until_ready(self, timeout: float = 120.0, interval: float = 0.1) -> LocalBackendStatus:
        """Block until ready or failed (tests, scripts; the panel polls instead)."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.poll()
            if status.state in (READY, ERROR, STOPPED) or time.monotonic() >= deadline:
                return status
            time.sleep(interval)

    # ------------------------------------------------------------------ log
    def log_text(self, max_chars: int = 200_000) -> str:
        """The end of this launch's log (what the Log button shows)."""
        if self.log_path is None or not self.log_path.is_file():
            return "The local backend has not been started in this Slicer session."
        with open(self.log_path, "rb") as log:
            log.seek(0, os.SEEK_END)
            size = log.tell()
            log.seek(max(0, size - max_chars))
            return log.read().decode("utf-8", errors="replace")

    def _read_new_log_lines(self) -> None:
        if self.log_path is None or not self.log_path.is_file():
            return
        with open(self.log_path, "rb") as log:
            log.seek(self._read_offset)
            chunk = log.read()
        complete = chunk.rfind(b"\n") + 1  # keep a half-written last line for the next poll
        self._read_offset += complete
        for line in chunk[:complete].decode("utf-8", errors="replace").splitlines():
            self._recent_lines.append(line)

    def _explain_exit(self, exit_code: int) -> str:
        for pattern, message in _FAILURES:
            for line in reversed(self._recent_lines):
                match = pattern.search(line)
                if match:
                    return message.format(*(match.groups() or ("",))).strip()
        return f"The local backend stopped unexpectedly (exit code {exit_code}). Open the log for details."

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None
