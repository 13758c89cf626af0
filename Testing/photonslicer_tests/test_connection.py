"""The backend-connection state machine of the panel (PhotonSlicerLib.connection), without Qt.

Every transition between not set up / starting / ready / stopped / error, in local and remote
mode, with a scripted local process and scripted background calls (finished when the test says
so): nothing is started and no network is used.
"""

from __future__ import annotations

import pytest
from PhotonSlicerLib import connection, local_backend
from PhotonSlicerLib.backend import BackendError
from PhotonSlicerLib.connection import (
    ERROR,
    LOCAL,
    NOT_SET_UP,
    READY,
    REMOTE,
    STARTING,
    STOPPED,
    BackendConnection,
)
from PhotonSlicerLib.local_backend import LocalBackendStatus


class ManualCall:
    """A BackgroundCall the test finishes by hand."""

    made: list[ManualCall] = []

    def __init__(self, function, *args, url="", **kwargs):
        self.function, self.args, self.kwargs, self.url = function, args, kwargs, url
        self._outcome = None
        ManualCall.made.append(self)

    def run(self):
        try:
            self._outcome = (True, self.function(*self.args, **self.kwargs))
        except BackendError as error:
            self._outcome = (False, error)

    @property
    def finished(self):
        return self._outcome is not None

    def result(self):
        ok, value = self._outcome
        if not ok:
            raise value
        return value


class ScriptedProcess:
    """A LocalBackendProcess whose poll() says what the test sets."""

    def __init__(self, python, **options):
        self.python, self.options = python, options
        self.status = LocalBackendStatus(local_backend.STARTING, "Starting: loading the model (1 s) ...")
        self.token, self.url, self.started, self.stopped = None, None, False, False
        self.fail_start = options.pop("fail_start", None)

    def start(self):
        if self.fail_start:
            raise BackendError(self.fail_start)
        self.started, self.token = True, "launch-token"

    @property
    def running(self):
        return self.started and self.status.state in (local_backend.STARTING, local_backend.READY)

    def listen(self, url="http://127.0.0.1:5555"):
        self.url = url
        self.status = LocalBackendStatus(local_backend.READY, f"Ready at {url}.", url)

    def end(self, state, message):
        self.token, self.url = None, None
        self.status = LocalBackendStatus(state, message)

    def poll(self):
        return self.status

    def stop(self, wait=0.0):
        self.stopped = True
        if wait:
            self.end(local_backend.STOPPED, "Stopped.")
        else:
            self.status = LocalBackendStatus(self.status.state, "Stopping ...", self.url)
        return self.status


class FakeClient:
    answers: dict[str, object] = {}

    def __init__(self, url, token=None):
        self.url, self.token = url.rstrip("/"), token

    def check(self):
        answer = FakeClient.answers.get(self.url, {"model": {"name": "photon-s1", "device": "cpu"}})
        if isinstance(answer, Exception):
            raise answer
        return answer


@pytest.fixture
def made():
    ManualCall.made = []
    FakeClient.answers = {}
    processes = []

    def factory(python, **options):
        processes.append(ScriptedProcess(python, **options))
        return processes[-1]

    return processes, factory


def connection_with(factory, setup_check=None):
    return BackendConnection(
        process_factory=factory, client_factory=FakeClient, background=ManualCall, setup_check=setup_check
    )


def test_local_start_listen_check_ready_stop(made):
    processes, factory = made
    conn = connection_with(factory)
    assert (conn.state, conn.mode, conn.needs_polling) == (STOPPED, LOCAL, False)
    conn.start_local("/env/bin/python", device="cpu")
    process = processes[0]
    assert process.started and process.options["device"] == "cpu"
    assert conn.state == STARTING and conn.needs_polling
    assert conn.poll().message.startswith("Starting: loading the model")
    process.listen()
    status = conn.poll()
    assert status.state == STARTING and len(ManualCall.made) == 1  # checking it with this launch's token
    assert conn.backend is None
    ManualCall.made[0].run()
    status = conn.poll()
    assert status.state == READY and status.message == "Ready: photon-s1 on cpu at http://127.0.0.1:5555."
    assert conn.backend.token == "launch-token" and status.url == "http://127.0.0.1:5555"
    assert conn.needs_polling  # a running backend may still end by itself
    assert conn.poll().state == READY and len(ManualCall.made) == 1  # checked once per launch
    assert conn.backend_for_ask() is conn.backend

    conn.stop_local()
    assert conn.state == STARTING and conn.message == "Stopping ..." and conn.backend is None
    process.end(local_backend.STOPPED, "Stopped.")
    status = conn.poll()
    assert status.state == STOPPED and status.failure is None and not conn.needs_polling
    with pytest.raises(BackendError, match="not running"):
        conn.backend_for_ask()


def test_local_backend_ending_by_itself_is_an_error_reported_once(made):
    processes, factory = made
    conn = connection_with(factory)
    conn.start_local("/env/bin/python")
    processes[0].end(local_backend.ERROR, "The backend ran out of GPU memory ...")
    status = conn.poll()
    assert status.state == ERROR and status.failure == "The backend ran out of GPU memory ..."
    assert conn.poll().failure is None and conn.state == ERROR  # the box is shown once
    assert not conn.needs_polling
    conn.start_local("/env/bin/python")  # from error, Start again
    assert conn.state == STARTING and len(processes) == 2


def test_failed_check_of_the_local_backend_is_an_error(made):
    processes, factory = made
    conn = connection_with(factory)
    FakeClient.answers["http://127.0.0.1:5555"] = BackendError("The backend's version does not match.")
    conn.start_local("/env/bin/python")
    processes[0].listen()
    conn.poll()
    ManualCall.made[0].run()
    status = conn.poll()
    assert status.state == ERROR and status.failure == "The backend's version does not match."
    assert conn.backend is None


def test_python_that_cannot_run_the_backend_is_not_set_up(made):
    processes, factory = made
    checked = []

    def setup_check(python, environment):
        checked.append((python, dict(environment)))
        return ["PyTorch is not installed in /env/bin/python.", "Press Set up backend."]

    conn = connection_with(factory, setup_check)
    conn.check_local_setup("/env/bin/python", {"HOME": "/h"})
    assert conn.state == STOPPED  # the panel opened: the check runs in a thread
    ManualCall.made[0].run()
    status = conn.poll()
    assert status.state == NOT_SET_UP and status.failure is None  # shown in the status line, no box
    assert status.message == "PyTorch is not installed in /env/bin/python. Press Set up backend."

    conn.start_local("/env/bin/python", startup_env={"HOME": "/h", "PYTHONHOME": "/slicer"})
    assert conn.state == STARTING and conn.message == "Checking the backend's Python ..."
    assert not processes  # nothing launched before the check
    assert checked[-1][1] == {"HOME": "/h"}  # the environment rule: startup env, without Slicer's Python
    ManualCall.made[-1].run()
    status = conn.poll()
    assert status.state == NOT_SET_UP and status.failure and not processes  # a refused Start: a box too


def test_python_set_up_after_all_starts_and_clears_not_set_up(made):
    processes, factory = made
    problems = [["transformers 5.10.0 is older than PhotonLib needs (>=5.17,<5.25)."]]
    conn = connection_with(factory, lambda python, environment: problems[-1])
    conn.check_local_setup("/env/bin/python", {})
    ManualCall.made[-1].run()
    assert conn.poll().state == NOT_SET_UP
    problems.append([])  # the user installed it
    conn.check_local_setup("/env/bin/python", {})
    ManualCall.made[-1].run()
    assert conn.poll().state == STOPPED and conn.message == "Not started."
    conn.start_local("/env/bin/python")
    ManualCall.made[-1].run()
    assert conn.poll().state == STARTING and processes and processes[0].started


def test_launch_failure_is_an_error(made):
    processes, factory = made
    conn = connection_with(factory)
    with pytest.raises(BackendError, match="not found"):
        conn.start_local("/no/python", fail_start="The Python for the local backend was not found.")
    conn2 = connection_with(factory, lambda python, environment: [])
    conn2.start_local("/no/python", fail_start="The Python for the local backend was not found.")
    ManualCall.made[-1].run()
    status = conn2.poll()
    assert status.state == ERROR and "not found" in status.failure


def test_start_twice_or_in_remote_mode_is_refused(made):
    processes, factory = made
    conn = connection_with(factory)
    conn.start_local("/env/bin/python")
    with pytest.raises(BackendError, match="already running"):
        conn.start_local("/env/bin/python")
    conn.set_mode(REMOTE)
    with pytest.raises(BackendError, match="Choose Local"):
        conn.start_local("/env/bin/python")


def test_remote_connect_ready_then_token_change_forgets_it(made):
    _, factory = made
    conn = connection_with(factory)
    conn.set_mode(REMOTE)
    assert (conn.state, conn.message) == (STOPPED, "Not connected.")
    with pytest.raises(BackendError, match="Choose Remote"):
        connection_with(factory).connect_remote("http://server:8765", "t")
    with pytest.raises(BackendError, match="address"):
        conn.connect_remote("  ", "t")
    conn.connect_remote("http://server:8765/", "remote-token")
    assert conn.state == STARTING and conn.message == "Connecting to http://server:8765/ ..."
    ManualCall.made[-1].run()
    status = conn.poll()
    assert status.state == READY and conn.backend.token == "remote-token" and not conn.needs_polling
    conn.forget_remote()
    assert conn.state == STOPPED and conn.backend is None
    backend = conn.backend_for_ask("http://server:8765", "new-token")  # a question connects afresh
    assert backend.token == "new-token" and conn.backend_for_ask("http://server:8765/", "x") is backend


def test_remote_refused_token_is_an_error(made):
    _, factory = made
    conn = connection_with(factory)
    conn.set_mode(REMOTE)
    FakeClient.answers["http://server:8765"] = BackendError("The backend refused the token.")
    conn.connect_remote("http://server:8765", "wrong")
    ManualCall.made[-1].run()
    status = conn.poll()
    assert status.state == ERROR and status.failure == "The backend refused the token."


def test_switching_modes_keeps_the_local_backend_and_reconnects_to_it(made):
    processes, factory = made
    conn = connection_with(factory)
    conn.start_local("/env/bin/python")
    processes[0].listen()
    conn.poll()
    ManualCall.made[-1].run()
    assert conn.poll().state == READY
    conn.set_mode(REMOTE)
    assert conn.state == STOPPED and conn.backend is None and processes[0].running
    conn.poll()  # the local process is still followed, but does not show in remote mode
    assert conn.state == STOPPED
    conn.set_mode(LOCAL)
    assert conn.state == STARTING
    conn.poll()
    ManualCall.made[-1].run()
    assert conn.poll().state == READY and len(ManualCall.made) == 2
    with pytest.raises(ValueError):
        conn.set_mode("cloud")


def test_a_check_under_way_is_dropped_when_the_mode_changes(made):
    _, factory = made
    conn = connection_with(factory)
    conn.set_mode(REMOTE)
    conn.connect_remote("http://server:8765", "t")
    conn.set_mode(LOCAL)
    ManualCall.made[-1].run()
    assert conn.poll().state == STOPPED and conn.backend is None


def test_stop_during_the_python_check_cancels_the_start(made):
    processes, factory = made
    conn = connection_with(factory, lambda python, environment: [])
    conn.start_local("/env/bin/python")
    conn.stop_local()
    assert conn.state == STOPPED
    assert conn.poll().state == STOPPED and not processes


def test_shutdown_ends_the_local_backend(made):
    processes, factory = made
    conn = connection_with(factory)
    conn.start_local("/env/bin/python")
    conn.shutdown(wait=1)
    assert processes[0].stopped and conn.local is None and conn.state == STOPPED


def test_the_states_are_the_documented_five():
    assert connection.STATES == ("not set up", "starting", "ready", "stopped", "error")


def test_environment_rule_for_pythonslicer_and_other_pythons():
    slicer_env = {"PATH": "/slicer/bin:/usr/bin", "PYTHONHOME": "/slicer/lib/Python", "PYTHONPATH": "/slicer/x"}
    startup = {"PATH": "/usr/bin", "HOME": "/h"}
    assert local_backend.python_environment("/slicer/bin/PythonSlicer", slicer_env, startup) == {
        "PATH": "/slicer/bin:/usr/bin"
    }
    assert local_backend.python_environment("C:/Slicer/bin/PythonSlicer.exe", slicer_env, startup)["PATH"] == (
        "/slicer/bin:/usr/bin"
    )
    assert local_backend.python_environment("/env/bin/python", slicer_env, startup) == startup
    assert local_backend.python_environment("/env/bin/python", slicer_env, None) == {"PATH": "/slicer/bin:/usr/bin"}


def test_a_local_python_check_finishing_after_choosing_remote_leaves_the_remote_state(made):
    """The panel opened in Local mode (its Python is being checked), the user chose Remote and
    connected: the late check of the local Python must not turn the remote state into not set up."""
    _, factory = made
    conn = connection_with(factory, lambda python, environment: ["PyTorch is not installed."])
    conn.check_local_setup("/env/bin/python", {})
    conn.set_mode(REMOTE)
    FakeClient.answers["http://gpu-box:8765"] = BackendError("connection refused")
    conn.connect_remote("http://gpu-box:8765", "t" * 20)
    local_check, remote_check = ManualCall.made
    remote_check.run()
    assert conn.poll().state == ERROR
    local_check.run()  # finishes later
    status = conn.poll()
    assert status.state == ERROR and "connection refused" in status.message
