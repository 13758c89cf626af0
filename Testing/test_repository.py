"""The README's two commands and CI agree, so what a newcomer types is what CI checks."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> tuple[str, str]:
    """The first two bash blocks of the README: set up + run, then the tests."""
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)\n```", text, flags=re.S)
    assert len(blocks) >= 2, "the README must give the quick-start and test commands as bash blocks"
    return blocks[0].strip(), blocks[1].strip()


def ci_commands() -> list[str]:
    lines = (ROOT / ".ci" / "run").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def test_ci_runs_exactly_the_readme_test_command():
    """The first pass of CI runs the README's test command verbatim (on failure it names the versions)."""
    _, test_command = readme_commands()
    assert any(line == test_command or line.startswith(test_command + " ||") for line in ci_commands())


def test_ci_installs_with_the_lock_the_quick_start_uses():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "LOCK=PhotonLib/constraints/lock.txt" in ci and '-c "$LOCK" -e "./PhotonLib[test]"' in ci


def test_ci_installs_what_the_quick_start_installs():
    setup, _ = readme_commands()
    quick_start_steps = [step.strip() for step in setup.split("&&")]
    installs = [step.split("install", 1)[1].split()[-1] for step in quick_start_steps if " install " in step]
    assert installs == ["torch==2.13.0", '"./PhotonLib[test]"']
    ci = "\n".join(ci_commands())
    for package in installs:
        assert package in ci
    assert quick_start_steps[0] == "python3 -m venv .venv"
    assert quick_start_steps[-1].startswith('.venv/bin/photon ask "')


def test_quick_start_installs_photonlib_with_the_lock_file():
    setup, _ = readme_commands()
    photonlib_install = next(step for step in setup.split("&&") if "PhotonLib[test]" in step).split()
    assert "-c" in photonlib_install, "the quick start installs PhotonLib without the lock"
    lock = photonlib_install[photonlib_install.index("-c") + 1]
    assert lock == "PhotonLib/constraints/lock.txt"
    assert (ROOT / lock).is_file()


def test_ci_script_fails_on_error():
    text = (ROOT / ".ci" / "run").read_text()
    assert "set -euo pipefail" in text
