"""Running an install plan (:class:`.setup.InstallPlan`) in the background, without Qt.

The panel's **Set up backend** button confirms the plan, then hands it to a :class:`PlanRunner`:
a worker thread runs the plan's pip commands one after the other, each as a child process in a
process group of its own (as the local backend is started, :func:`.local_backend.subprocess_launcher`),
with its output going to a log file. The panel's timer calls :meth:`PlanRunner.poll` (cheap: it
reads what the thread recorded) to show which command of how many runs; :meth:`PlanRunner.cancel`
ends the running command's whole process tree and runs no further one. Once every command has
succeeded, the chosen Python is probed again to see what changed (for :meth:`PlanRunner.restart_needed`).

pip installs a package completely or not at all, so a failed or cancelled command leaves what
was installed before it (and the packages the earlier commands installed) as they were; the
log file keeps pip's output.
"""

from __future__ import annotations

import contextlib
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from . import local_backend
from .local_backend import is_slicer_python
from .setup import InstallPlan, PythonReport, commands_with_constraints, restart_needed

RUNNING, FINISHED, FAILED, CANCELLED = "running", "finished", "failed", "cancelled"
#: After Cancel: how long a command is asked to end (SIGTERM) before it is killed.
CANCEL_GRACE_S = 5.0
POLL_INTERVAL_S = 0.05


@dataclass(frozen=True)
class RunProgress:
    """What the panel shows while the plan runs and after.

    ``state``: running, finished, failed or cancelled. ``command_index`` is the command under way
    (1-based; after the end, the last one started), ``command_label`` what it does in a few words.
    ``changed``: the packages whose version changed (known once finished).
    """

    state: str
    command_index: int
    command_count: int
    command_label: str
    message: str
    log_path: str
    changed: tuple[str, ...] = ()

    @property
    def finished(self) -> bool:
        return self.state != RUNNING


def command_label(command: Sequence[str]) -> str:
    """A pip command in a few words: "pip install torch==2.13.0" (folders by their name, options left out)."""
    parts = list(command)
    if "pip" in parts and "install" in parts:
        words, skip = [], False
        for part in parts[parts.index("install") + 1 :]:
            if skip:
                skip = False
            elif part in ("-c", "--constraint", "--index-url", "--extra-index-url", "-i"):
                skip = True
            elif not part.startswith("-"):
                words.append(Path(part).name if ("/" in part or "\\" in part) else part)
        return "pip install " + " ".join(words)
    return " ".join([Path(parts[0]).name] + parts[1:]) if parts else ""


def changed_packages(before: Mapping[str, str], after: Mapping[str, str]) -> tuple[str, ...]:
    """Packages installed or given another version (names as the reports have them)."""
    return tuple(sorted(name for name, version in after.items() if before.get(name) != version))


class PlanRunner:
    """Runs ``plan``'s commands in a worker thread; poll it from a timer.

    Args:
        plan: the confirmed plan (its ``problems`` must be empty).
        environment: the environment the commands run in (:func:`.local_backend.python_environment`
            of the plan's Python).
        before: the installed packages to compare with afterwards (default: those the plan was made from).
        probe: after the last command, lists the packages again (e.g. ``lambda: probe_python(...)``);
            none: ``changed`` stays empty.
        log_dir: where the log file is written (default: the system's temporary folder).
        launcher: starts one command (:func:`.local_backend.subprocess_launcher`; tests pass their own).
    """

    def __init__(
        self,
        plan: InstallPlan,
        environment: Mapping[str, str],
        *,
        before: Mapping[str, str] | None = None,
        probe: Callable[[], PythonReport] | None = None,
        log_dir: str | Path | None = None,
        launcher: local_backend.ProcessLauncher = local_backend.subprocess_launcher,
    ):
        if plan.problems:
            raise ValueError("this plan cannot be run: " + " ".join(plan.problems))
        self.plan = plan
        self.environment = dict(environment)
        self.before = dict(plan.installed if before is None else before)
        self.probe = probe
        self.launcher = launcher
        self._folder = Path(tempfile.mkdtemp(prefix="photon-setup-", dir=str(log_dir) if log_dir else None))
        self.log_path = self._folder / "setup.log"
        self.constraints_path = self._folder / "constraints.txt"
        self.commands = commands_with_constraints(plan, self.constraints_path)
        self._lock = threading.Lock()
        self._cancel = threading.Event()
        self._process: local_backend.RunningProcess | None = None
        self._index = 0
        self._state = RUNNING
        self._message = "Not started."
        self._changed: tuple[str, ...] = ()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ the panel's calls
    def start(self) -> PlanRunner:
        """Write the constraints file and start the worker thread; returns at once."""
        self.constraints_path.write_text(self.plan.constraints, encoding="utf-8")
        self.log_path.write_text(f"Set up the Photon backend in {self.plan.python}\n", encoding="utf-8")
        self._message = "Starting ..."
        self._thread = threading.Thread(target=self._run, name="PhotonPlanRunner", daemon=True)
        self._thread.start()
        return self

    def poll(self) -> RunProgress:
        """Where the run is (no waiting)."""
        with self._lock:
            index = self._index
            label = command_label(self.commands[index - 1]) if index else ""
            return RunProgress(self._state, index, len(self.commands), label, self._message,
                               str(self.log_path), self._changed)  # fmt: skip

    def cancel(self) -> None:
        """Run no further command and end the running one (its whole process tree); returns at once."""
        self._cancel.set()
        with self._lock:
            process = self._process
        if process is not None:
            with contextlib.suppress(OSError):
                process.terminate()

    @property
    def cancel_requested(self) -> bool:
        return self._cancel.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the run to end (tests, scripts); True once it has."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self.poll().finished

    def log_text(self, max_chars: int = 200_000) -> str:
        """The commands and their output so far (the end of it, at most ``max_chars``)."""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return text[-max_chars:]

    def restart_needed(self, imported_modules: Sequence[str]) -> bool:
        """Must Slicer restart: the plan installed into Slicer's own Python and changed a package it imported?"""
        return is_slicer_python(self.plan.python) and restart_needed(self.poll().changed, imported_modules)

    # ------------------------------------------------------------------ the worker thread
    def _set(self, **fields) -> None:
        with self._lock:
            for name, value in fields.items():
                setattr(self, "_" + name, value)

    def _log(self, text: str) -> None:
        with self.log_path.open("a", encoding="utf-8") as log:
            log.write(text)

    def _run(self) -> None:
        try:
            self._run_commands()
        except Exception as error:  # reported through poll(), never lost in the thread
            self._log(f"\n{type(error).__name__}: {error}\n")
            self._set(state=FAILED, message=f"The set-up stopped: {error}", process=None)

    def _run_commands(self) -> None:
        total = len(self.commands)
        for index, command in enumerate(self.commands, start=1):
            if self._cancel.is_set():
                break
            label = command_label(command)
            self._set(index=index, message=f"Command {index} of {total}: {label} ...")
            self._log(f"\n$ {subprocess.list2cmdline(command)}\n")
            with self.log_path.open("ab") as log:
                try:
                    process = self.launcher(command, self.environment, log)
                except OSError as error:
                    self._set(state=FAILED, message=f"Command {index} of {total} ({label}) could not be run: {error}.")
                    return
                self._set(process=process)
                exit_code = self._wait(process)
            self._set(process=None)
            if self._cancel.is_set():
                break
            if exit_code != 0:
                self._log(f"[exit code {exit_code}]\n")
                self._set(state=FAILED, message=(
                    f"Command {index} of {total} ({label}) failed with exit code {exit_code}; pip's output is in the log "
                    f"({self.log_path}). pip stops before installing when it cannot resolve or download the packages "
                    "(no network, no matching version), so what was installed before is kept."
                ))  # fmt: skip
                return
        if self._cancel.is_set():
            self._log("\n[cancelled]\n")
            self._set(state=CANCELLED, message=(
                "Set-up cancelled: the command under way was ended and no further one was run; "
                "what was installed before it is unchanged."
            ))  # fmt: skip
            return
        changed: tuple[str, ...] = ()
        if self.probe is not None:
            self._set(message="Checking what was installed ...")
            report = self.probe()
            changed = changed_packages(self.before, report.packages) if not report.error else ()
        self._log("\n[done]\n")
        self._set(state=FINISHED, changed=changed, message=f"Set-up finished: {total} of {total} commands succeeded.")

    def _wait(self, process: local_backend.RunningProcess) -> int:
        """The command's exit code; after Cancel, its tree is asked to end, then killed."""
        cancelled_at = None
        while True:
            exit_code = process.poll()
            if exit_code is not None:
                return exit_code
            if self._cancel.is_set():
                if cancelled_at is None:
                    cancelled_at = time.monotonic()
                    with contextlib.suppress(OSError):
                        process.terminate()
                elif time.monotonic() - cancelled_at > CANCEL_GRACE_S:
                    with contextlib.suppress(OSError):
                        process.kill()
            time.sleep(POLL_INTERVAL_S)
