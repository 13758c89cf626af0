"""The local backend as the panel's Start/Stop buttons run it: a real ``photon serve`` child process.

Plain Python, nothing mocked: the child is started from the ``backend_python`` fixture's Python
(this interpreter when it has PhotonLib's backend dependencies, else
``PHOTONSLICER_BACKEND_PYTHON``, as an external environment inside Slicer), reached over HTTP
with the per-launch token, and stopped. Linux's /proc shows where the token is (and is not).
"""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

import pytest
from PhotonSlicerLib import local_backend
from PhotonSlicerLib.backend import BackendError, connect
from PhotonSlicerLib.local_backend import (
    ERROR,
    READY,
    STARTING,
    STOPPED,
    TOKEN_ENV,
    LocalBackendProcess,
    backend_environment,
)

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]

PROC = Path("/proc")


def test_local_backend_starts_with_a_fresh_token_answers_only_with_it_and_stops(tmp_path, backend_python):
    backend = LocalBackendProcess(backend_python, device="cpu", log_dir=tmp_path)
    assert backend.poll().state == STOPPED and backend.token is None
    backend.start()
    try:
        assert backend.poll().state == STARTING  # returns at once; the model loads in the child
        token, pid = backend.token, backend._process.pid
        assert token and len(token) >= 40
        status = backend.wait_until_ready(timeout=60)  # an exiting child ends the wait at once
        assert status.state == READY, f"{status.state}: {status.message}; last log lines:\n" + "\n".join(
            backend.log_text().splitlines()[-30:]
        )
        assert status.url.startswith("http://127.0.0.1:") and status.url == backend.url
        assert "Ready" in status.message

        # The token is required and accepted.
        with pytest.raises(BackendError, match="refused the token"):
            connect(backend.url, None).check()
        info = connect(backend.url, token).check()
        assert info["api_version"]

        # ... and it is nowhere but in this object and the child's environment.
        log = backend.log_text()
        assert "listening on" in log and token not in log
        assert token not in repr(backend)
        if PROC.is_dir():
            assert token.encode() not in (PROC / str(pid) / "cmdline").read_bytes()  # `ps` shows this
            assert f"{TOKEN_ENV}={token}".encode() in (PROC / str(pid) / "environ").read_bytes()
        assert token not in " ".join(backend.command())

        status = backend.stop(wait=15)
        assert status.state == STOPPED and status.message == "Stopped."
        assert backend.token is None and backend.url is None and not backend.running
        if PROC.is_dir():
            assert not (PROC / str(pid)).exists() or b"zombie" in (PROC / str(pid) / "status").read_bytes().lower()
        assert token not in backend.log_text()
    finally:
        backend.stop(wait=5)


def test_each_launch_gets_its_own_token():
    tokens = {local_backend.new_token() for _ in range(100)}
    assert len(tokens) == 100 and all(len(token) >= 40 for token in tokens)


def test_child_environment_drops_slicers_python_settings_and_carries_the_token(tmp_path):
    slicer_env = {
        "PATH": "/usr/bin",
        "PYTHONHOME": "/opt/Slicer/lib/Python",
        "PYTHONPATH": "/opt/Slicer/x",
        "HOME": "/h",
    }
    env = backend_environment(slicer_env, "secret-token", REPOSITORY_ROOT / "PhotonLib")
    assert env[TOKEN_ENV] == "secret-token"
    assert "PYTHONHOME" not in env and env["PYTHONPATH"] == str(REPOSITORY_ROOT / "PhotonLib")
    assert env["PATH"] == "/usr/bin" and env["HOME"] == "/h"
    assert TOKEN_ENV not in slicer_env  # the caller's environment (Slicer's own) is not touched
    assert "PYTHONPATH" not in backend_environment({}, "t", tmp_path)  # no PhotonLib there: nothing added


def test_missing_python_is_explained(tmp_path):
    backend = LocalBackendProcess(tmp_path / "no-such-python", log_dir=tmp_path)
    with pytest.raises(BackendError, match="Python for the local backend was not found"):
        backend.start()
    assert backend.token is None and backend.poll().state == STOPPED


def test_python_without_the_backend_packages_is_explained(tmp_path):
    bare = tmp_path / "bare-env"
    venv.EnvBuilder(with_pip=False, system_site_packages=False).create(bare)
    python = bare / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")
    backend = LocalBackendProcess(python, log_dir=tmp_path)
    backend.start()
    status = backend.wait_until_ready(timeout=60)
    assert status.state == ERROR
    assert "lacks the package" in status.message and "Install PhotonLib" in status.message
    assert backend.token is None and "No module named" in backend.log_text()


def test_server_refusing_its_arguments_is_explained(tmp_path, backend_python):
    backend = LocalBackendProcess(backend_python, log_dir=tmp_path, extra_args=("--max-upload-mb", "lots"))
    backend.start()
    status = backend.wait_until_ready(timeout=60)
    assert status.state == ERROR and status.message.startswith("The backend did not start:")
    assert "--max-upload-mb" in status.message


def test_module_process_code_never_imports_torch():
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "import PhotonSlicerLib.local_backend, PhotonSlicerLib.panel;"
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    subprocess.run([sys.executable, "-c", code, str(REPOSITORY_ROOT / "PhotonSlicer")], check=True)


def test_out_of_memory_hint_names_the_device_setting_the_module_offers(tmp_path):
    """The hint names the Device setting of the Photon settings page (no --device option exists in the panel)."""
    from PhotonSlicerLib import settings

    backend = LocalBackendProcess(sys.executable, log_dir=tmp_path)
    backend._recent_lines.append("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB")
    hint = backend._explain_exit(1)
    assert "--device" not in hint
    assert "set Device to cpu in Edit > Application Settings > Photon" in hint
    assert "cpu" in settings.DEVICES
    settings_page = (REPOSITORY_ROOT / "PhotonSlicer" / "PhotonSlicerLib" / "settings_panel.py").read_text()
    assert 'TITLE = "Photon"' in settings_page and '_("Device:")' in settings_page
