"""The lock (PhotonLib/constraints/lock.txt) agrees with the ranges PhotonLib declares.

The lock is pip constraints: one exact ``name==version`` per distribution that
``pip install torch==2.13.0 && pip install -e "./PhotonLib[test]"`` installs. A range changed in
pyproject.toml without refreshing the lock (PhotonLib/scripts/refresh_lock.sh) would make
``pip install -c`` fail to resolve; these checks catch that before a user does.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

tomllib = pytest.importorskip("tomllib")  # Python 3.11+, as the lock itself

ROOT = Path(__file__).resolve().parents[1]
LOCK_FILE = ROOT / "PhotonLib" / "constraints" / "lock.txt"
PYPROJECT = ROOT / "PhotonLib" / "pyproject.toml"
REFRESH_SCRIPT = ROOT / "PhotonLib" / "scripts" / "refresh_lock.sh"


def lock_pins() -> dict[str, Version]:
    """Canonical name -> pinned version, after checking every line is a plain ``name==version``."""
    pins: dict[str, Version] = {}
    for number, line in enumerate(LOCK_FILE.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        requirement = Requirement(line)
        (specifier,) = requirement.specifier  # exactly one
        assert specifier.operator == "==" and not requirement.extras and requirement.marker is None, (
            f"lock.txt line {number}: expected name==version, got {line!r}"
        )
        name = canonicalize_name(requirement.name)
        assert name not in pins, f"lock.txt line {number}: {requirement.name} is pinned twice"
        pins[name] = Version(specifier.version)
    return pins


def declared_requirements() -> list[Requirement]:
    """PhotonLib's dependencies and its test extra, with photonlib[...] self-references expanded."""
    project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
    extras = project["optional-dependencies"]
    pending = [Requirement(text) for text in project["dependencies"] + extras["test"]]
    requirements, seen_extras = [], {"test"}
    while pending:
        requirement = pending.pop(0)
        if canonicalize_name(requirement.name) == "photonlib":
            for extra in sorted(requirement.extras - seen_extras):
                seen_extras.add(extra)
                pending += [Requirement(text) for text in extras[extra]]
        else:
            requirements.append(requirement)
    return requirements


def test_lock_pins_every_declared_requirement_inside_its_range():
    pins = lock_pins()
    requirements = declared_requirements()
    assert {"torch", "transformers", "fastapi", "pytest"} <= {canonicalize_name(r.name) for r in requirements}
    problems = []
    for requirement in requirements:
        pinned = pins.get(canonicalize_name(requirement.name))
        if pinned is None:
            problems.append(f"{requirement} is not pinned")
        elif not requirement.specifier.contains(pinned, prereleases=True):
            problems.append(f"{requirement} but the lock pins {pinned}")
    advice = "lock.txt disagrees with pyproject.toml (run PhotonLib/scripts/refresh_lock.sh): "
    assert not problems, advice + "; ".join(problems)


def test_lock_leaves_out_photonlib_and_pip():
    pins = lock_pins()
    assert "photonlib" not in pins
    assert "pip" not in pins  # it comes with the virtual environment, not with the install
    assert len(pins) > 50  # the whole install, not only the direct dependencies


def test_torch_is_pinned_without_a_local_label():
    """``torch==2.13.0`` accepts 2.13.0+cpu and 2.13.0+cu128; ``torch==2.13.0+cpu`` would refuse CUDA builds."""
    torch = lock_pins()["torch"]
    assert torch.local is None
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert f"pip install torch=={torch}" in readme


def test_refresh_script_writes_this_lock_with_the_same_torch():
    script = REFRESH_SCRIPT.read_text(encoding="utf-8")
    assert re.search(r"^LOCK=PhotonLib/constraints/lock\.txt$", script, flags=re.M)
    torch_version = re.search(r"^TORCH_VERSION=(\S+)$", script, flags=re.M)
    assert torch_version and Version(torch_version.group(1)) == lock_pins()["torch"]
    assert "pip install -c PhotonLib/constraints/lock.txt" in LOCK_FILE.read_text(encoding="utf-8")
