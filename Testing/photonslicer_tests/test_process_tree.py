"""Stop ends the whole process tree, as Slicer starts it: through a launcher that forwards no signal.

``PythonSlicer`` is not the interpreter: it is a launcher that sets up Slicer's environment and
runs the real Python as *its* child, and it forwards no signal. Stopping only the launcher
leaves ``photon serve`` running, holding the port and the GPU memory. These tests put such a
launcher (``fake_pythonslicer``: starts ``sys.executable`` with its own arguments as a child,
does nothing on SIGTERM but die, or ignores SIGTERM altogether) between the module and the
server, then check that after Stop (and after the Slicer process exits without stopping) no
process of the tree is alive and the port can be bound again, within seconds.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from PhotonSlicerLib.local_backend import READY, STOPPED, LocalBackendProcess

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="the launcher stand-in is a POSIX script")

#: Like PythonSlicer: run the real interpreter as a child with the same arguments, forward
#: nothing. ``LAUNCHER_SIGTERM=ignore`` makes it ignore SIGTERM as well (the harder case:
#: terminating the launcher alone then does nothing at all).
LAUNCHER = """\
#!{python}
import os, signal, subprocess, sys
if os.environ.get("LAUNCHER_SIGTERM") == "ignore":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen([os.environ.get("LAUNCHER_REAL_PYTHON", {python!r})] + sys.argv[1:])
with open(os.environ["LAUNCHER_PID_FILE"], "w") as pids:
    pids.write(f"{{os.getpid()}} {{child.pid}}")
sys.exit(child.wait())
"""

#: A stand-in for ``photon serve`` that starts in a fraction of a second: binds a port, says so
#: as the server does, and serves until killed. ``SERVER_SIGTERM=ignore``: a server stuck in
#: shutdown (only SIGKILL ends it).
SERVER = """\
import os, signal, socket, sys, time
if os.environ.get("SERVER_SIGTERM") == "ignore":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen()
print(f"photon serve: listening on http://127.0.0.1:{listener.getsockname()[1]} (stand-in)", flush=True)
while True:
    time.sleep(0.1)
"""


def alive(pid: int) -> bool:
    """Running (a zombie waiting for its parent to reap it is not: it holds no port, no memory)."""
    status = Path(f"/proc/{pid}/status")
    if Path("/proc/self").is_dir():
        try:
            return "\nState:\tZ" not in status.read_text()
        except OSError:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def wait_for(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.fixture
def fake_pythonslicer(tmp_path):
    launcher = tmp_path / "PythonSlicer"
    launcher.write_text(LAUNCHER.format(python=sys.executable))
    launcher.chmod(0o755)
    (tmp_path / "serve_stand_in.py").write_text(SERVER)
    yield launcher
    # Never leave a process behind, even when a test fails (that is what these tests are about).
    pid_file = tmp_path / "pids"
    if pid_file.is_file():
        for pid in (int(pid) for pid in pid_file.read_text().split()):
            if alive(pid):
                os.kill(pid, 9)


def launched_tree(tmp_path) -> tuple[int, int]:
    """(launcher pid, server pid), as the launcher wrote them."""
    pid_file = tmp_path / "pids"
    assert wait_for(lambda: pid_file.is_file() and pid_file.read_text().count(" ") == 1, 10), (
        "the launcher did not start"
    )
    launcher_pid, server_pid = (int(pid) for pid in pid_file.read_text().split())
    return launcher_pid, server_pid


def environment(tmp_path, **settings: str) -> dict[str, str]:
    return dict(os.environ, LAUNCHER_PID_FILE=str(tmp_path / "pids"), **settings)


@pytest.mark.parametrize(
    ("launcher_sigterm", "server_sigterm"),
    [("die", "exit"), ("ignore", "exit"), ("die", "ignore")],
    ids=["launcher-dies-on-SIGTERM", "launcher-ignores-SIGTERM", "server-ignores-SIGTERM"],
)
def test_stop_ends_every_process_of_the_tree_and_frees_the_port(
    tmp_path, fake_pythonslicer, launcher_sigterm, server_sigterm
):
    env = environment(tmp_path, LAUNCHER_SIGTERM=launcher_sigterm, SERVER_SIGTERM=server_sigterm)
    backend = LocalBackendProcess(fake_pythonslicer, base_env=env, log_dir=tmp_path, photonlib_dir=None)
    backend.command = lambda: [str(fake_pythonslicer), str(tmp_path / "serve_stand_in.py")]
    backend.start()
    try:
        status = backend.wait_until_ready(timeout=20)
        assert status.state == READY, status.message + "\n" + backend.log_text()
        launcher_pid, server_pid = launched_tree(tmp_path)
        port = int(status.url.rsplit(":", 1)[1])
        assert alive(launcher_pid) and alive(server_pid) and not port_is_free(port)

        started = time.monotonic()
        status = backend.stop(wait=2)  # the panel's Stop, then the timer's kill after the grace period
        assert wait_for(lambda: backend.poll().state == STOPPED, 10), backend.poll()
        assert not alive(launcher_pid), "the launcher is still running"
        assert not alive(server_pid), "the server (the launcher's child) is still running after Stop"
        assert port_is_free(port), "the port is still taken after Stop"
        assert time.monotonic() - started < 8
    finally:
        backend.stop(wait=2)


def test_stop_from_the_panel_timer_ends_the_tree(tmp_path, fake_pythonslicer, monkeypatch):
    """The panel's way: ``stop()`` returns at once, the timer's ``poll()`` kills after the grace period."""
    from PhotonSlicerLib import local_backend

    monkeypatch.setattr(local_backend, "STOP_GRACE_S", 1.0)
    env = environment(tmp_path, LAUNCHER_SIGTERM="ignore", SERVER_SIGTERM="ignore")
    backend = LocalBackendProcess(fake_pythonslicer, base_env=env, log_dir=tmp_path, photonlib_dir=None)
    backend.command = lambda: [str(fake_pythonslicer), str(tmp_path / "serve_stand_in.py")]
    backend.start()
    try:
        assert backend.wait_until_ready(timeout=20).state == READY, backend.log_text()
        launcher_pid, server_pid = launched_tree(tmp_path)
        backend.stop()
        assert wait_for(lambda: backend.poll().state == STOPPED, 10), backend.poll()
        assert not alive(launcher_pid) and not alive(server_pid)
    finally:
        backend.stop(wait=2)


def test_quitting_slicer_without_stop_ends_the_tree(tmp_path, fake_pythonslicer):
    """Slicer's Python exits (quit, or a module that never pressed Stop): the tree ends with it."""
    script = tmp_path / "slicer_session.py"
    script.write_text(
        textwrap.dedent(f"""\
        import os, sys
        sys.path.insert(0, {str(REPOSITORY_ROOT / "PhotonSlicer")!r})
        from PhotonSlicerLib.local_backend import READY, LocalBackendProcess
        backend = LocalBackendProcess({str(fake_pythonslicer)!r}, log_dir={str(tmp_path)!r}, photonlib_dir=None)
        backend.command = lambda: [{str(fake_pythonslicer)!r}, {str(tmp_path / "serve_stand_in.py")!r}]
        backend.start()
        status = backend.wait_until_ready(timeout=20)
        print(status.url if status.state == READY else "failed: " + status.message, flush=True)
        sys.exit(0)  # no stop(): the interpreter ends, as when Slicer quits
    """)
    )
    env = environment(tmp_path, LAUNCHER_SIGTERM="ignore", SERVER_SIGTERM="ignore")
    session = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert session.returncode == 0 and session.stdout.startswith("http://"), session.stdout + session.stderr
    launcher_pid, server_pid = launched_tree(tmp_path)
    port = int(session.stdout.strip().rsplit(":", 1)[1])
    assert wait_for(lambda: not alive(launcher_pid) and not alive(server_pid), 5), "the tree outlived Slicer's Python"
    assert port_is_free(port)


def test_real_photon_serve_through_the_launcher_stops_completely(tmp_path, fake_pythonslicer, backend_python):
    """The real server, started exactly as the panel starts it with PythonSlicer."""
    env = environment(tmp_path, LAUNCHER_REAL_PYTHON=backend_python)
    backend = LocalBackendProcess(fake_pythonslicer, device="cpu", base_env=env, log_dir=tmp_path,
                                  photonlib_dir=REPOSITORY_ROOT / "PhotonLib")  # fmt: skip
    backend.start()
    try:
        status = backend.wait_until_ready(timeout=60)
        assert status.state == READY, status.message + "\n" + "\n".join(backend.log_text().splitlines()[-30:])
        launcher_pid, server_pid = launched_tree(tmp_path)
        port = int(status.url.rsplit(":", 1)[1])
        status = backend.stop(wait=10)
        assert wait_for(lambda: backend.poll().state == STOPPED, 10), backend.poll()
        assert not alive(launcher_pid) and not alive(server_pid), "photon serve outlived Stop"
        assert wait_for(lambda: port_is_free(port), 5)
    finally:
        backend.stop(wait=5)
