"""Setting up the local backend's Python, without Qt: what is there, what is missing, what to install.

- :func:`detect_gpu`: an NVIDIA GPU seen by ``nvidia-smi`` (never by importing torch in Slicer);
- :func:`probe_python`: the Python version and installed packages of the chosen Python (it runs
  that Python: PythonSlicer or an external environment, in the environment
  :func:`.local_backend.python_environment` gives it);
- :func:`setup_problems`: why that Python cannot run the backend (missing packages, versions
  outside the ranges PhotonLib declares, a Python older than 3.10), in words that say what to do;
- :func:`install_plan`: the pip commands that install a matching PyTorch (CUDA build when the
  device setting and the GPU allow it, else CPU) and PhotonLib's backend with the lock
  (``PhotonLib/constraints/lock.txt``) as pip constraints. For Slicer's own Python every package
  already installed is pinned at its installed version, so nothing Slicer ships is up- or
  downgraded (pip refuses instead, before changing anything).

The widget shows the plan, asks for confirmation, and runs its commands in a background process.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .backend import BUNDLED_LOCK_FILE, BUNDLED_PHOTONLIB_DIR
from .local_backend import is_slicer_python

TORCH_INDEX_URL = "https://download.pytorch.org/whl/{build}"
CUDA_BUILD = "cu128"
#: PhotonLib needs Python 3.10 (transformers 5); the lock was tested on 3.11 and 3.12.
MINIMUM_PYTHON = (3, 10)
#: What ``photon serve`` imports besides PhotonLib's own dependencies (its ``serve`` extra).
BACKEND_EXTRA = "serve"
NVIDIA_SMI_TIMEOUT_S = 5.0
PROBE_TIMEOUT_S = 30.0

#: Run in the chosen Python: its version and every installed distribution (no package is imported).
PROBE_SCRIPT = (
    "import json, sys, importlib.metadata as m\n"
    "packages = {}\n"
    "for d in m.distributions():\n"
    "    name = d.metadata['Name']\n"
    "    if name: packages[name] = d.version\n"
    "print(json.dumps({'python': list(sys.version_info[:3]), 'packages': packages}))\n"
)


def normalise(name: str) -> str:
    """A distribution name as pip compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


# ------------------------------------------------------------------------------ the GPU


@dataclass(frozen=True)
class GpuInfo:
    name: str
    memory: str
    driver: str


def detect_gpu(run: Callable[..., subprocess.CompletedProcess] = subprocess.run) -> GpuInfo | None:
    """The first NVIDIA GPU ``nvidia-smi`` lists, or None (no tool, no GPU, no answer within 5 s)."""
    command = ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"]
    try:
        done = run(command, capture_output=True, text=True, timeout=NVIDIA_SMI_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    for line in done.stdout.splitlines():
        parts = [part.strip() for part in line.split(",")]
        if len(parts) >= 3 and parts[0]:
            return GpuInfo(parts[0], parts[1], parts[2])
    return None


def torch_build(device: str, gpu: GpuInfo | None) -> str:
    """``cpu`` or the CUDA build: CUDA when the device setting allows it and there is a GPU."""
    if device.startswith("cpu") or gpu is None:
        return "cpu"
    return CUDA_BUILD


def torch_build_reason(device: str, gpu: GpuInfo | None) -> str:
    """Why :func:`torch_build` chose its build, and how to choose the other one, for the confirmation."""
    settings = "Edit > Application Settings > Photon > Device"
    if device.startswith("cpu"):
        return f"the Device setting is cpu ({settings})"
    if gpu is None:
        return "nvidia-smi found no NVIDIA GPU"
    return f"nvidia-smi found {gpu.name} ({gpu.memory}, driver {gpu.driver}); for the CPU build set {settings} to cpu"


# ------------------------------------------------------------------------------ versions


def _release(version: str) -> tuple[int, ...]:
    """The release numbers of a version ("2.13.0+cu128" -> (2, 13, 0); "5.17.0rc1" -> (5, 17, 0))."""
    numbers = []
    for part in version.split("+")[0].split("."):
        match = re.match(r"\d+", part)
        if not match:
            break
        numbers.append(int(match.group()))
    return tuple(numbers)


def _compare(left: tuple[int, ...], right: tuple[int, ...]) -> int:
    width = max(len(left), len(right))
    left, right = left + (0,) * (width - len(left)), right + (0,) * (width - len(right))
    return (left > right) - (left < right)


def version_satisfies(version: str, specifier: str) -> bool:
    """Does ``version`` meet ``specifier`` (e.g. ">=5.17,<5.25"; ==, !=, <, <=, >, >= on release numbers)?"""
    have = _release(version)
    for clause in filter(None, (part.strip() for part in specifier.split(","))):
        match = re.match(r"(==|!=|<=|>=|<|>|~=)\s*(\S+)", clause)
        if not match:
            continue
        operator, wanted = match.group(1), _release(match.group(2))
        order = _compare(have, wanted)
        ok = {
            "==": order == 0, "!=": order != 0, "<": order < 0, "<=": order <= 0, ">": order > 0, ">=": order >= 0,
            "~=": order >= 0 and have[: max(len(wanted) - 1, 1)] == wanted[: max(len(wanted) - 1, 1)],
        }[operator]  # fmt: skip
        if not ok:
            return False
    return True


def declared_requirements(pyproject: Path = BUNDLED_PHOTONLIB_DIR / "pyproject.toml") -> dict[str, str]:
    """PhotonLib's backend requirements, ``{name: specifier}``: its dependencies and the ``serve`` extra.

    Read with a small parser (Slicer 5.6/5.8's Python 3.9 has no ``tomllib``): the quoted
    strings of ``dependencies = [...]`` and ``serve = [...]``.
    """
    text = pyproject.read_text(encoding="utf-8")
    requirements: dict[str, str] = {}
    for key in ("dependencies", BACKEND_EXTRA):
        block = re.search(rf"^{key}\s*=\s*\[(.*?)\]", text, re.S | re.M)
        for item in re.findall(r'"([^"]+)"', block.group(1) if block else ""):
            match = re.match(r"([A-Za-z0-9_.\-]+)\s*(.*)", item.split(";")[0])
            if match:
                requirements[match.group(1)] = match.group(2).strip()
    return requirements


def read_lock(lock_file: Path = BUNDLED_LOCK_FILE) -> dict[str, str]:
    """The lock's pins, ``{normalised name: version}``."""
    pins = {}
    for line in lock_file.read_text(encoding="utf-8").splitlines():
        match = re.match(r"\s*([A-Za-z0-9_.\-]+)==(\S+)", line)
        if match:
            pins[normalise(match.group(1))] = match.group(2)
    return pins


# ------------------------------------------------------------------------------ the chosen Python


@dataclass(frozen=True)
class PythonReport:
    """What :func:`probe_python` found: the version, ``{normalised name: version}``, or why it failed."""

    python: str
    version: tuple[int, ...] = ()
    packages: dict[str, str] = field(default_factory=dict)
    error: str = ""


def probe_python(
    python: str, environment: Mapping[str, str], run: Callable[..., subprocess.CompletedProcess] = subprocess.run
) -> PythonReport:
    """Run ``python`` once to list its version and packages (seconds; call it off the main thread)."""
    try:
        done = run([python, "-c", PROBE_SCRIPT], capture_output=True, text=True, timeout=PROBE_TIMEOUT_S,
                   env=dict(environment), stdin=subprocess.DEVNULL)  # fmt: skip
    except FileNotFoundError:
        return PythonReport(python, error=f"The Python for the local backend was not found ({python}).")
    except (OSError, subprocess.SubprocessError) as error:
        return PythonReport(python, error=f"The Python for the local backend could not be run ({python}): {error}.")
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return PythonReport(python, error=f"The Python for the local backend could not be run ({python}): {last}")
    found = json.loads(lines[-1])
    packages = {normalise(name): version for name, version in found["packages"].items()}
    return PythonReport(python, tuple(found["python"]), packages)


def report_problems(report: PythonReport, requirements: Mapping[str, str]) -> list[str]:
    """What stops ``report``'s Python from running the backend, and what to do (empty: nothing)."""
    if report.error:
        return [
            report.error,
            "Choose another Python in the Backend section or in Edit > Application Settings > Photon.",
        ]
    if report.version[:2] < MINIMUM_PYTHON:
        version = ".".join(map(str, report.version[:3]))
        return [
            f"Python {version} ({report.python}) cannot run the backend: PhotonLib needs Python 3.10 or newer "
            "(Slicer 5.6 and 5.8 bundle 3.9). Set up an external Python 3.11 or 3.12 environment and choose it "
            "(see the PhotonSlicer documentation)."
        ]
    missing, outside = [], []
    for name, specifier in requirements.items():
        installed = report.packages.get(normalise(name))
        if installed is None:
            missing.append(name)
        elif specifier and not version_satisfies(installed, specifier):
            outside.append(f"{name} {installed} (PhotonLib needs {specifier})")
    problems = []
    if missing:
        problems.append(f"The backend's Python lacks {', '.join(missing)}.")
    if outside:
        problems.append(f"It has versions PhotonLib does not work with: {'; '.join(outside)}.")
    if problems:
        problems.append("Press Set up backend to install them.")
    return problems


def setup_problems(python: str, environment: Mapping[str, str]) -> list[str]:
    """:func:`report_problems` for ``python`` (the backend connection's check before a start)."""
    return report_problems(probe_python(python, environment), declared_requirements())


# ------------------------------------------------------------------------------ the plan


@dataclass(frozen=True)
class PlannedPackage:
    """One line of the confirmation: ``action`` is install, upgrade, keep (left as it is) or conflict."""

    name: str
    version: str
    action: str
    installed: str = ""


@dataclass(frozen=True)
class InstallPlan:
    """The pip commands (each a full command line) and what they install, for the confirmation."""

    python: str
    build: str
    commands: list[list[str]]
    packages: list[PlannedPackage]
    constraints: str  # the contents of the constraints file the commands name as CONSTRAINTS_FILE
    protected: list[str]  # names kept at their installed versions
    problems: list[str]
    installed: dict[str, str] = field(default_factory=dict)  # what the Python had, {normalised name: version}
    build_reason: str = ""  # why this PyTorch build (see torch_build_reason)

    def summary(self) -> str:
        """The confirmation text: where, which PyTorch build, and every package with its version."""
        build = "CUDA (" + self.build + ")" if self.build != "cpu" else "CPU"
        lines = [f"Install into {self.python} (PyTorch: {build} build):"]
        for package in self.packages:
            if package.action == "keep":
                lines.append(f"  {package.name} {package.installed} (already installed, kept)")
            elif package.action == "upgrade":
                lines.append(f"  {package.name} {package.version} (replaces {package.installed})")
            elif package.action == "conflict":
                lines.append(f"  {package.name}: needs {package.version}, but {package.installed} must be kept")
            else:
                lines.append(f"  {package.name} {package.version}")
        lines.append("and their dependencies at the versions of PhotonLib's lock (constraints/lock.txt).")
        if self.build_reason:
            lines.append(f"PyTorch {build} build: {self.build_reason}.")
        if self.protected:
            lines.append(f"Packages Slicer ships are never replaced ({len(self.protected)} kept at their versions).")
        return "\n".join(lines)


#: Where the commands expect the constraints file; the runner writes :attr:`InstallPlan.constraints` there.
CONSTRAINTS_FILE = "{constraints}"


def install_plan(
    report: PythonReport,
    *,
    device: str,
    gpu: GpuInfo | None,
    requirements: Mapping[str, str] | None = None,
    lock: Mapping[str, str] | None = None,
    photonlib_dir: Path = BUNDLED_PHOTONLIB_DIR,
    protect_installed: bool | None = None,
) -> InstallPlan:
    """The pip commands that make ``report``'s Python able to run the backend.

    ``protect_installed`` (default: when the Python is Slicer's own) pins every installed package
    at its version, so pip never up- or downgrades what Slicer ships.
    """
    requirements = declared_requirements() if requirements is None else requirements
    lock = read_lock() if lock is None else lock
    if protect_installed is None:
        protect_installed = is_slicer_python(report.python)
    problems = report_problems(report, {}) if (report.error or report.version[:2] < MINIMUM_PYTHON) else []
    build = torch_build(device, gpu)
    installed = report.packages
    protected = sorted(installed) if protect_installed else []
    pins = dict(lock)
    for name in protected:
        pins[name] = installed[name]
    constraints = "".join(f"{name}=={version}\n" for name, version in sorted(pins.items()))

    packages: list[PlannedPackage] = []
    for name, specifier in requirements.items():
        key = normalise(name)
        have, want = installed.get(key), lock.get(key, specifier or "newest")
        if have is not None and (not specifier or version_satisfies(have, specifier)):
            packages.append(PlannedPackage(name, have, "keep", have))
        elif have is not None and protect_installed:
            packages.append(PlannedPackage(name, specifier, "conflict", have))
        elif have is not None:
            packages.append(PlannedPackage(name, want, "upgrade", have))
        else:
            packages.append(PlannedPackage(name, want, "install"))
    conflicts = [package for package in packages if package.action == "conflict"]
    if conflicts:
        problems.append(
            "Slicer's own Python has versions PhotonLib cannot use, and Slicer's packages are never replaced: "
            + "; ".join(f"{p.name} {p.installed} (needs {p.version})" for p in conflicts)
            + ". Use an external Python environment instead."
        )

    pip = [report.python, "-m", "pip", "install", "--disable-pip-version-check"]
    commands: list[list[str]] = []
    torch = next((package for package in packages if normalise(package.name) == "torch"), None)
    if torch is not None and torch.action in ("install", "upgrade"):
        torch_version = lock.get("torch")
        commands.append(pip + [f"torch=={torch_version}" if torch_version else "torch", "--index-url",
                               TORCH_INDEX_URL.format(build=build), "-c", CONSTRAINTS_FILE])  # fmt: skip
    if any(package.action in ("install", "upgrade") for package in packages):
        commands.append(pip + ["-c", CONSTRAINTS_FILE, f"{photonlib_dir}[{BACKEND_EXTRA}]"])
    return InstallPlan(report.python, build, commands, packages, constraints, protected, problems,
                       dict(installed), torch_build_reason(device, gpu))  # fmt: skip


def plan_for_python(
    python: str,
    environment: Mapping[str, str],
    *,
    device: str,
    detect: Callable[[], GpuInfo | None] = detect_gpu,
    probe: Callable[[str, Mapping[str, str]], PythonReport] = probe_python,
) -> InstallPlan:
    """The plan for ``python`` as the panel's Set up backend makes it: probe it, find the GPU, plan.

    Seconds (it runs ``python`` and ``nvidia-smi``): call it off the main thread.
    """
    return install_plan(probe(python, environment), device=device, gpu=detect())


def commands_with_constraints(plan: InstallPlan, constraints_path: Path) -> list[list[str]]:
    """The plan's commands naming ``constraints_path`` (where the runner wrote ``plan.constraints``)."""
    return [[str(constraints_path) if part == CONSTRAINTS_FILE else part for part in command]
            for command in plan.commands]  # fmt: skip


def restart_needed(changed: Sequence[str], imported_modules: Sequence[str]) -> bool:
    """Must Slicer restart to use what was installed (a package it has imported already changed)?"""
    imported = {name.split(".")[0].lower() for name in imported_modules}
    return any(normalise(name).replace("-", "_") in imported for name in changed)
