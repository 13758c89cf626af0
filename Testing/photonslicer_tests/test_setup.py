"""Setting up the backend's Python (PhotonSlicerLib.setup), without Qt and without installing anything big.

GPU detection with a scripted ``nvidia-smi``, version checks against the ranges PhotonLib
declares, the install plan (CUDA or CPU PyTorch, the lock as constraints, Slicer's packages
pinned), and a real ``pip install --dry-run`` showing that the pins stop pip from replacing an
installed package. PyTorch is never installed here.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from PhotonSlicerLib import setup
from PhotonSlicerLib.setup import GpuInfo, PythonReport

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]

GPU = GpuInfo("NVIDIA H200", "143771 MiB", "570.124.06")
REQUIREMENTS = {"numpy": ">=1.24", "torch": ">=2.4", "transformers": ">=5.17,<5.25", "fastapi": ">=0.110"}
LOCK = {"numpy": "2.4.6", "torch": "2.13.0", "transformers": "5.23.0", "fastapi": "0.165.0"}


def completed(stdout="", returncode=0):
    return subprocess.CompletedProcess([], returncode, stdout, "")


def test_gpu_from_nvidia_smi_and_absent_gpu_means_cpu():
    seen = {}

    def run(command, **options):
        seen.update(options, command=command)
        return completed("NVIDIA H200, 143771 MiB, 570.124.06\n")

    assert setup.detect_gpu(run) == GPU
    assert seen["timeout"] == setup.NVIDIA_SMI_TIMEOUT_S and seen["command"][0] == "nvidia-smi"

    def missing(command, **options):
        raise FileNotFoundError("nvidia-smi")

    def hung(command, **options):
        raise subprocess.TimeoutExpired(command, options["timeout"])

    assert setup.detect_gpu(missing) is None and setup.detect_gpu(hung) is None
    assert setup.detect_gpu(lambda command, **options: completed("", 9)) is None
    assert setup.torch_build("auto", GPU) == "cu128" and setup.torch_build("cuda", GPU) == "cu128"
    assert setup.torch_build("auto", None) == "cpu" and setup.torch_build("cpu", GPU) == "cpu"  # the CPU fallback


@pytest.mark.parametrize(
    "version, specifier, expected",
    [("5.23.0", ">=5.17,<5.25", True), ("5.25.0", ">=5.17,<5.25", False), ("5.10.2", ">=5.17,<5.25", False),
     ("2.13.0+cu128", "==2.13.0", True), ("2.13.1", "==2.13.0", False), ("1.26.4", ">=1.24", True),
     ("5.17.0rc1", ">=5.17", True), ("0.29.0", ">=0.29", True), ("2.4", ">2.4", False), ("1.0", "", True)],
)  # fmt: skip
def test_version_ranges(version, specifier, expected):
    assert setup.version_satisfies(version, specifier) is expected


def test_declared_requirements_are_photonlibs_dependencies_and_serve_extra():
    declared = setup.declared_requirements()
    assert declared["transformers"] == ">=5.17,<5.25" and declared["torch"] == ">=2.4"
    assert "fastapi" in declared and "uvicorn" in declared and "pytest" not in declared
    lock = setup.read_lock()
    assert lock["torch"] == "2.13.0" and all(setup.normalise(name) in lock for name in declared)


def test_problems_say_what_is_missing_outside_the_range_and_what_to_do():
    report = PythonReport("/env/bin/python", (3, 12, 1), {"numpy": "2.4.6", "transformers": "5.10.0"})
    problems = setup.report_problems(report, REQUIREMENTS)
    assert problems[0] == "The backend's Python lacks torch, fastapi."
    assert "transformers 5.10.0 (PhotonLib needs >=5.17,<5.25)" in problems[1]
    assert problems[-1] == "Press Set up backend to install them."
    ready = PythonReport("/env/bin/python", (3, 12, 1), {**LOCK, "torch": "2.13.0+cu128"})
    assert setup.report_problems(ready, REQUIREMENTS) == []


def test_python_3_9_of_slicer_5_6_is_told_to_use_an_external_environment():
    problems = setup.report_problems(PythonReport("/opt/Slicer-5.6/bin/PythonSlicer", (3, 9, 10), {}), REQUIREMENTS)
    assert len(problems) == 1 and "Python 3.9.10" in problems[0] and "external Python 3.11 or 3.12" in problems[0]
    plan = setup.install_plan(PythonReport("/opt/Slicer-5.6/bin/PythonSlicer", (3, 9, 10), {}), device="auto",
                              gpu=None, requirements=REQUIREMENTS, lock=LOCK)  # fmt: skip
    assert plan.problems  # the widget refuses to run such a plan


def test_probe_of_a_real_python_and_of_a_missing_one(tmp_path):
    report = setup.probe_python(sys.executable, dict(os.environ))
    assert report.version[:2] == tuple(sys.version_info[:2]) and "pytest" in report.packages and not report.error
    missing = setup.probe_python(str(tmp_path / "no-python"), {})
    assert "was not found" in missing.error
    assert setup.report_problems(missing, REQUIREMENTS)[0] == missing.error


def test_plan_for_an_external_environment_cpu():
    report = PythonReport("/env/bin/python", (3, 12, 1), {"pip": "25.0"})
    plan = setup.install_plan(report, device="auto", gpu=None, requirements=REQUIREMENTS, lock=LOCK,
                              photonlib_dir=Path("/ext/PhotonLib"))  # fmt: skip
    assert plan.build == "cpu" and not plan.problems and not plan.protected
    torch_command, photonlib_command = plan.commands
    assert torch_command[:4] == ["/env/bin/python", "-m", "pip", "install"]
    assert "torch==2.13.0" in torch_command
    assert torch_command[torch_command.index("--index-url") + 1] == "https://download.pytorch.org/whl/cpu"
    assert photonlib_command[-1] == "/ext/PhotonLib[serve]" and "-c" in photonlib_command
    assert "transformers==5.23.0\n" in plan.constraints
    summary = plan.summary()
    assert "CPU build" in summary and "transformers 5.23.0" in summary and "torch 2.13.0" in summary


def test_plan_with_a_gpu_takes_the_cuda_build_and_the_user_can_choose_cpu():
    report = PythonReport("/env/bin/python", (3, 12, 1), {})
    cuda = setup.install_plan(report, device="auto", gpu=GPU, requirements=REQUIREMENTS, lock=LOCK)
    assert cuda.commands[0][cuda.commands[0].index("--index-url") + 1].endswith("/whl/cu128")
    assert "CUDA (cu128) build" in cuda.summary()
    cpu = setup.install_plan(report, device="cpu", gpu=GPU, requirements=REQUIREMENTS, lock=LOCK)
    assert cpu.commands[0][cpu.commands[0].index("--index-url") + 1].endswith("/whl/cpu")


def test_plan_for_slicers_own_python_never_replaces_its_packages():
    slicer_python = PythonReport("/opt/Slicer-5.10/bin/PythonSlicer", (3, 12, 10),
                                 {"numpy": "2.2.6", "requests": "2.32.3", "pip": "25.0"})  # fmt: skip
    plan = setup.install_plan(slicer_python, device="auto", gpu=None, requirements=REQUIREMENTS, lock=LOCK)
    assert plan.protected == ["numpy", "pip", "requests"]
    assert "numpy==2.2.6\n" in plan.constraints and "numpy==2.4.6" not in plan.constraints  # the installed one wins
    assert "requests==2.32.3\n" in plan.constraints
    numpy = next(package for package in plan.packages if package.name == "numpy")
    assert (numpy.action, numpy.installed) == ("keep", "2.2.6") and "numpy 2.2.6 (already installed, kept)" in (
        plan.summary()
    )
    assert all("-c" in command for command in plan.commands)  # every pip call carries the pins
    old = PythonReport("/opt/Slicer/bin/PythonSlicer", (3, 12, 10), {"numpy": "1.21.0"})
    conflict = setup.install_plan(old, device="cpu", gpu=None, requirements=REQUIREMENTS, lock=LOCK)
    assert conflict.problems and "numpy 1.21.0 (needs >=1.24)" in conflict.problems[0]


def test_the_confirmation_says_why_this_pytorch_build_and_how_to_choose_the_cpu_one():
    report = PythonReport("/env/bin/python", (3, 12, 1), {})
    cuda = setup.install_plan(report, device="auto", gpu=GPU, requirements=REQUIREMENTS, lock=LOCK).summary()
    assert ("PyTorch CUDA (cu128) build: nvidia-smi found NVIDIA H200 (143771 MiB, driver 570.124.06); for the CPU "
            "build set Edit > Application Settings > Photon > Device to cpu.") in cuda.splitlines()  # fmt: skip
    chosen = setup.install_plan(report, device="cpu", gpu=GPU, requirements=REQUIREMENTS, lock=LOCK).summary()
    assert "PyTorch CPU build: the Device setting is cpu (Edit > Application Settings > Photon > Device)." in chosen
    none = setup.install_plan(report, device="cuda", gpu=None, requirements=REQUIREMENTS, lock=LOCK).summary()
    assert "PyTorch CPU build: nvidia-smi found no NVIDIA GPU." in none.splitlines()


def test_plan_for_python_probes_the_python_and_finds_the_gpu():
    seen = []

    def probe(python, environment):
        seen.append((python, dict(environment)))
        return PythonReport(python, (3, 12, 1), {"numpy": "2.4.6"})

    plan = setup.plan_for_python("/env/bin/python", {"HOME": "/home/me"}, device="auto", detect=lambda: GPU, probe=probe)
    assert seen == [("/env/bin/python", {"HOME": "/home/me"})]
    assert plan.python == "/env/bin/python" and plan.build == "cu128" and plan.installed == {"numpy": "2.4.6"}


def test_nothing_to_install_when_everything_is_there():
    report = PythonReport("/env/bin/python", (3, 12, 1), dict(LOCK))
    plan = setup.install_plan(report, device="auto", gpu=GPU, requirements=REQUIREMENTS, lock=LOCK)
    assert plan.commands == [] and all(package.action == "keep" for package in plan.packages)


def test_pins_of_installed_packages_make_pip_refuse_to_replace_them(tmp_path):
    """A real pip dry run (offline, nothing installed): the kept version stops any other from being chosen."""
    report = setup.probe_python(sys.executable, dict(os.environ))
    plan = setup.install_plan(report, device="cpu", gpu=None, requirements={"pytest": ">=1"}, lock={},
                              protect_installed=True)  # fmt: skip
    constraints = tmp_path / "constraints.txt"
    constraints.write_text(plan.constraints)
    pip = [sys.executable, "-m", "pip", "install", "--dry-run", "--no-index", "--disable-pip-version-check",
           "-c", str(constraints)]  # fmt: skip
    kept = subprocess.run(pip + ["pytest"], capture_output=True, text=True, timeout=120)
    assert kept.returncode == 0 and "already satisfied" in kept.stdout
    replaced = subprocess.run(pip + ["pytest<7"], capture_output=True, text=True, timeout=120)
    assert replaced.returncode != 0 and "ResolutionImpossible" in (replaced.stdout + replaced.stderr)
    assert setup.commands_with_constraints(plan, constraints) == []


def test_restart_is_needed_only_when_an_imported_package_changed():
    assert setup.restart_needed(["typing-extensions"], ["typing_extensions", "numpy.linalg"])
    assert not setup.restart_needed(["transformers", "torch"], ["numpy", "requests"])


def test_setup_never_imports_torch():
    code = "import sys; sys.path.insert(0, sys.argv[1]); import PhotonSlicerLib.setup; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code, str(REPOSITORY_ROOT / "PhotonSlicer")], check=True, timeout=60)
