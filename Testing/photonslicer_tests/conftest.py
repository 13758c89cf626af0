"""The Slicer-side tests also run in a Python like Slicer's own (3.9 in Slicer 5.6/5.8, 3.12 in 5.10).

Slicer imports ``photonlib`` from the PhotonLib folder bundled with the extension, never from an
installed package, and its Python has neither PyTorch nor the serving packages. So:

- ``photonlib`` comes from ``PhotonLib/`` when it is not installed (exactly as
  ``PhotonSlicerLib.backend`` finds it inside Slicer);
- a test module whose imports need something this Python lacks (slicer-core's ``slicer`` and
  ``vtk``: no wheel for Python 3.9; PyTorch and FastAPI for the serving helpers) is skipped with
  the reason instead of failing to import;
- the tests that need a real ``photon serve`` run it with ``PHOTONSLICER_BACKEND_PYTHON`` (a
  Python with PhotonLib's backend dependencies, as the panel's *Python* box names one) or with
  this Python if it has them, and are skipped with the reason otherwise (the ``backend_python`` fixture);
- ``PHOTONSLICER_TESTS_REQUIRE`` (comma-separated module names, set by
  ``.ci/slicer_pythons.sh``) turns a missing module into an error, so CI never passes by skipping.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import sys
from pathlib import Path

import pytest

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]
if importlib.util.find_spec("photonlib") is None:
    sys.path.insert(0, str(REPOSITORY_ROOT / "PhotonLib"))


def module_available(name: str) -> bool:
    """Installed as a real module or package, not a namespace portion (a bare folder of that name on the path)."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return False
    return spec is not None and spec.origin not in (None, "namespace")


#: Modules a test file may import that a Slicer-like Python may not have, and why.
OPTIONAL_MODULES = {
    "slicer": "slicer-core (Slicer's MRML without the application; it has no wheel for Python 3.9)",
    "vtk": "VTK (comes with slicer-core)",
    "PySide6": "PySide6 (the .ui tests)",
    "torch": "PyTorch (the real Photon backend)",
    "fastapi": "FastAPI (the real Photon backend)",
    "SimpleITK": "SimpleITK (photonlib's volume reader)",
}
#: Local test helpers, what they import in turn, and what they are.
HELPER_NEEDS = {
    "support.serving": (
        ("torch", "fastapi"),
        "it runs the backend in the test's own process, not a photon serve of PHOTONSLICER_BACKEND_PYTHON",
    ),
    "support.volumes": (("SimpleITK",), "it writes volume files"),
    "ui_stand_ins": (("PySide6",), "it builds the .ui"),
}


def missing_modules(path: Path) -> list[str]:
    """What ``path`` imports at its top level that this Python lacks, each with why it is needed."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError):
        return []  # let pytest report it
    missing: list[str] = []
    for node in tree.body:
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules = [node.module]
        else:
            continue
        for module in modules:
            root = module.split(".")[0]
            if module in HELPER_NEEDS:
                needs, what = HELPER_NEEDS[module]
                absent = [OPTIONAL_MODULES[name] for name in needs if not module_available(name)]
                if absent:
                    missing.append("; ".join(absent) + f", needed by {module}: {what}")
            elif root in OPTIONAL_MODULES and not module_available(root):
                missing.append(OPTIONAL_MODULES[root])
    return sorted(set(missing))


def find_backend_python() -> str | None:
    """A Python that can run ``photon serve``: ``PHOTONSLICER_BACKEND_PYTHON``, else this one if it can."""
    configured = os.environ.get("PHOTONSLICER_BACKEND_PYTHON")
    if configured:
        return configured
    if all(module_available(name) for name in ("torch", "fastapi", "uvicorn")):
        return sys.executable
    return None


@pytest.fixture
def backend_python() -> str:
    """The Python to run a real ``photon serve`` with (the test is skipped where there is none)."""
    python = find_backend_python()
    if python is None:
        pytest.skip(
            f"no Python that can run photon serve: this one ({sys.version.split()[0]}) lacks PyTorch/FastAPI "
            "and PHOTONSLICER_BACKEND_PYTHON is not set"
        )
    return python


def pytest_configure(config):
    # "backend" is not a module: it asks for a Python that runs the real photon serve.
    required = [name.strip() for name in os.environ.get("PHOTONSLICER_TESTS_REQUIRE", "").split(",") if name.strip()]
    absent = [name for name in required if not (find_backend_python() if name == "backend" else module_available(name))]
    if absent:
        raise pytest.UsageError(
            f"PHOTONSLICER_TESTS_REQUIRE names what this Python ({sys.version.split()[0]}) lacks: " + ", ".join(absent)
        )


class _SkippedModule(pytest.Module):
    reason = ""

    def collect(self):
        pytest.skip(self.reason)


def pytest_pycollect_makemodule(module_path, parent):
    absent = missing_modules(Path(module_path))
    if absent:
        module = _SkippedModule.from_parent(parent, path=Path(module_path))
        module.reason = f"{Path(module_path).name}: this Python ({sys.version.split()[0]}) lacks " + "; ".join(absent)
        return module
    return None
