"""Running an install plan in the background (PhotonSlicerLib.plan_runner), without Qt, with harmless commands.

The commands are small ``python -c`` programs (one prints, one fails, one sleeps until it is
cancelled) and a real offline ``pip install --dry-run``: nothing is installed, PyTorch never.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from PhotonSlicerLib import plan_runner, setup
from PhotonSlicerLib.plan_runner import PlanRunner
from PhotonSlicerLib.setup import InstallPlan, PythonReport

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]

PYTHON = sys.executable


def plan(*commands, python=PYTHON, installed=None, constraints="numpy==2.4.6\n", problems=()):
    return InstallPlan(python, "cpu", [list(command) for command in commands], [], constraints, [], list(problems),
                       dict(installed or {}))  # fmt: skip


def python_command(code: str, *arguments: str) -> list[str]:
    return [PYTHON, "-c", code, *arguments]


def run_to_end(runner: PlanRunner, timeout: float = 60) -> plan_runner.RunProgress:
    assert runner.wait(timeout), "the run did not end"
    return runner.poll()


def test_commands_run_in_order_with_progress_and_their_output_in_the_log(tmp_path):
    first = python_command("import time; print('first command'); time.sleep(0.5)")
    second = python_command("import sys; print('constraints:', open(sys.argv[1]).read().strip())",
                            setup.CONSTRAINTS_FILE)  # fmt: skip
    runner = PlanRunner(plan(first, second), dict(os.environ), log_dir=tmp_path).start()
    seen = set()
    deadline = time.monotonic() + 60
    while not runner.poll().finished and time.monotonic() < deadline:
        progress = runner.poll()
        if progress.state == plan_runner.RUNNING and progress.command_index:
            seen.add((progress.command_index, progress.command_count))
            assert progress.message.startswith(f"Command {progress.command_index} of 2: ")
        time.sleep(0.02)
    progress = runner.poll()
    assert progress.state == plan_runner.FINISHED and progress.message == "Set-up finished: 2 of 2 commands succeeded."
    assert (1, 2) in seen and progress.command_index == 2
    log = runner.log_text()
    assert log.index("first command") < log.index("constraints: numpy==2.4.6")  # the plan's pins, written for pip
    assert Path(progress.log_path) == runner.log_path and runner.log_path.parent.parent == tmp_path
    assert runner.constraints_path.read_text() == "numpy==2.4.6\n"


def test_a_failing_command_stops_the_run_and_says_which_and_where_the_log_is(tmp_path):
    failing = python_command("import sys; print('ERROR: No matching distribution found for torch'); sys.exit(3)")
    never = python_command("print('must not run')")
    runner = PlanRunner(plan(python_command("print('ok')"), failing, never), {**os.environ}, log_dir=tmp_path)
    progress = run_to_end(runner.start())
    assert progress.state == plan_runner.FAILED and progress.command_index == 2
    assert progress.message.startswith("Command 2 of 3 (python -c ") and "exit code 3" in progress.message
    assert str(runner.log_path) in progress.message and "what was installed before is kept" in progress.message
    log = runner.log_text()
    assert "No matching distribution found for torch" in log and "[exit code 3]" in log and "must not run" not in log


def test_a_command_that_cannot_be_started_fails_the_run(tmp_path):
    runner = PlanRunner(plan([str(tmp_path / "no-such-python"), "-m", "pip"]), dict(os.environ), log_dir=tmp_path)
    progress = run_to_end(runner.start())
    assert progress.state == plan_runner.FAILED and "could not be run" in progress.message


def test_cancel_ends_the_running_command_and_its_children_and_runs_no_further_one(tmp_path):
    # The command starts a child of its own (as pip starts build processes): Cancel must end both.
    child_pid_file = tmp_path / "child.pid"
    code = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
        "open(sys.argv[1], 'w').write(str(child.pid))\n"
        "print('sleeping', flush=True); time.sleep(120)\n"
    )
    never = python_command("print('must not run')")
    runner = PlanRunner(plan(python_command(code, str(child_pid_file)), never), dict(os.environ), log_dir=tmp_path)
    runner.start()
    deadline = time.monotonic() + 30
    while not child_pid_file.is_file() or not child_pid_file.read_text():
        assert time.monotonic() < deadline, "the command did not start"
        time.sleep(0.05)
    started = time.monotonic()
    runner.cancel()
    progress = run_to_end(runner, timeout=20)
    assert time.monotonic() - started < plan_runner.CANCEL_GRACE_S + 5
    assert progress.state == plan_runner.CANCELLED and progress.message.startswith("Set-up cancelled")
    assert "must not run" not in runner.log_text() and "[cancelled]" in runner.log_text()
    child_pid = int(child_pid_file.read_text())
    deadline = time.monotonic() + 10
    while _alive(child_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child_pid), "the command's own child outlived Cancel"


def _alive(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat")
    if stat.parent.parent.joinpath("self", "stat").is_file():
        try:
            return stat.read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
        except OSError:
            return False
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def test_changed_packages_come_from_a_probe_after_the_run_and_decide_the_restart(tmp_path):
    before = {"numpy": "2.2.6", "requests": "2.32.3"}
    after = PythonReport("/opt/Slicer/bin/PythonSlicer", (3, 12, 10), {**before, "torch": "2.13.0", "numpy": "2.4.6"})
    slicer_plan = plan(python_command("print('installing')"), python="/opt/Slicer/bin/PythonSlicer", installed=before)
    runner = PlanRunner(slicer_plan, dict(os.environ), probe=lambda: after, log_dir=tmp_path)
    progress = run_to_end(runner.start())
    assert progress.state == plan_runner.FINISHED and progress.changed == ("numpy", "torch")
    assert runner.restart_needed(["numpy.linalg", "vtk"])  # Slicer imported numpy, which changed
    assert not runner.restart_needed(["vtk", "requests"])
    external = PlanRunner(plan(python_command("pass"), installed=before), dict(os.environ), probe=lambda: after,
                          log_dir=tmp_path)  # fmt: skip
    run_to_end(external.start())
    assert not external.restart_needed(["numpy"])  # another Python's packages are not loaded in Slicer


def test_a_plan_with_problems_is_refused():
    try:
        PlanRunner(plan(python_command("pass"), problems=["Python 3.9 cannot run the backend."]), {})
    except ValueError as error:
        assert "Python 3.9 cannot run the backend." in str(error)
    else:
        raise AssertionError("a plan with problems must not run")


def test_a_real_pip_dry_run_of_the_plan_runs_offline(tmp_path):
    """The plan's own pip command line (constraints file and all), as --dry-run --no-index: nothing installed."""
    report = setup.probe_python(PYTHON, dict(os.environ))
    real = setup.install_plan(report, device="cpu", gpu=None, requirements={"pytest": ">=1"}, lock={},
                              protect_installed=True)  # fmt: skip
    pip = [PYTHON, "-m", "pip", "install", "--dry-run", "--no-index", "--disable-pip-version-check",
           "-c", setup.CONSTRAINTS_FILE, "pytest"]  # fmt: skip
    dry = InstallPlan(real.python, real.build, [pip], real.packages, real.constraints, real.protected, [],
                      real.installed)  # fmt: skip
    runner = PlanRunner(dry, dict(os.environ), probe=lambda: setup.probe_python(PYTHON, dict(os.environ)),
                        log_dir=tmp_path)  # fmt: skip
    progress = run_to_end(runner.start(), timeout=120)
    assert progress.state == plan_runner.FINISHED, runner.log_text()
    assert "already satisfied" in runner.log_text() and progress.changed == ()
    assert progress.command_label == "pip install pytest"


def test_command_labels_name_what_is_installed():
    torch = ["/env/bin/python", "-m", "pip", "install", "--disable-pip-version-check", "torch==2.13.0",
             "--index-url", "https://download.pytorch.org/whl/cpu", "-c", "/tmp/c.txt"]  # fmt: skip
    assert plan_runner.command_label(torch) == "pip install torch==2.13.0"
    photonlib = ["/env/bin/python", "-m", "pip", "install", "-c", "/tmp/c.txt", "/ext/lib/PhotonLib[serve]"]
    assert plan_runner.command_label(photonlib) == "pip install PhotonLib[serve]"
    assert plan_runner.command_label(["/usr/bin/python3", "-c", "pass"]) == "python3 -c pass"


def test_the_runner_never_imports_qt_or_torch():
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import PhotonSlicerLib.plan_runner; "
            "assert not {'torch', 'qt', 'PySide6', 'slicer'} & set(sys.modules), sorted(sys.modules)")  # fmt: skip
    subprocess.run([PYTHON, "-c", code, str(REPOSITORY_ROOT / "PhotonSlicer")], check=True, timeout=60)
