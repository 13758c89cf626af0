"""How ``photon`` ends: a named input error is exit 2 and one line, anything else is a bug (exit 1,
where the traceback went, or the traceback with ``--debug``), a closed pipe is quiet."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from photonlib.cli import info
from photonlib.cli.main import BROKEN_PIPE, BUG, USER_ERROR, main
from photonlib.errors import ConfigurationError, MissingExtraError

PHOTON = Path(sys.executable).with_name("photon")


def failing_run(error: BaseException):
    def run(args):
        raise error

    return run


def test_a_missing_file_is_a_user_error_in_one_line(capsys, tmp_path):
    assert main(["info", str(tmp_path / "absent.nii.gz")]) == USER_ERROR
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("photon info: error: ") and "absent.nii.gz" in err
    assert "Traceback" not in err


def test_a_configuration_error_or_missing_extra_is_exit_2(capsys, tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("stage: 7\n")
    assert main(["train", "--config", str(recipe)]) == USER_ERROR
    assert "stage must be 0" in capsys.readouterr().err
    for error in (ConfigurationError("its_temperature must be positive"), MissingExtraError("--png needs matplotlib")):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(info, "run", failing_run(error))
            assert main(["info"]) == USER_ERROR
        assert capsys.readouterr().err == f"photon info: error: {error}\n"


def test_an_unexpected_exception_is_reported_as_a_bug_with_its_traceback_saved(capsys, monkeypatch):
    # A bare ValueError is not an input error any more: only the named ones are.
    monkeypatch.setattr(info, "run", failing_run(ValueError("shapes (3,) and (4,) do not align")))
    assert main(["info"]) == BUG
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "internal error: ValueError: shapes (3,) and (4,) do not align" in err
    assert "bug in PhotonLib" in err and "--debug" in err and "Traceback" not in err
    saved = Path(re.search(r"traceback is in (\S+) ", err).group(1))
    try:
        text = saved.read_text()
        assert "Traceback (most recent call last)" in text and "raise error" in text
        assert text.rstrip().endswith("ValueError: shapes (3,) and (4,) do not align")
        if os.name == "posix":
            assert saved.stat().st_mode & 0o077 == 0  # private: only the user reads it
    finally:
        saved.unlink()


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_prints_the_traceback(capsys, monkeypatch, where):
    monkeypatch.setattr(info, "run", failing_run(RuntimeError("boom")))
    argv = ["--debug", "info"] if where == "before" else ["info", "--debug"]
    assert main(argv) == BUG
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "RuntimeError: boom" in err
    assert "traceback is in" not in err


def test_debug_with_a_user_error_prints_the_traceback_and_still_exits_2(capsys, monkeypatch):
    monkeypatch.setattr(info, "run", failing_run(ConfigurationError("bad")))
    assert main(["--debug", "info"]) == USER_ERROR
    err = capsys.readouterr().err
    assert "Traceback" in err and err.rstrip().endswith("photon info: error: bad")


def test_a_closed_pipe_ends_quietly():
    # `photon info | head -0`: the reader has gone before photon writes.
    process = subprocess.Popen([str(PHOTON), "info"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()
    try:
        _, err = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == BROKEN_PIPE, err.decode()
    assert b"Traceback" not in err and b"BrokenPipeError" not in err
