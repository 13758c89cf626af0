"""The real PhotonSlicer module inside the real Python of Slicer 5.6.2, 5.8.1 and 5.10.0.

slicer_harness.py boots each release's own ``slicer`` package (parameter node wrapper, GUI
connectors, ScriptedLoadableModule, slicer.util, i18n) over slicer-core's MRML and PySide6
widgets, in one subprocess per release, and runs every scenario of slicer_scenarios.py there:
the panel is opened as Slicer opens it and typed into with QTest key events.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import slicer_harness
import slicer_scenarios

SCENARIO_MODULE = Path(slicer_scenarios.__file__).resolve()
_results: dict = {}


def _release_results(release: str) -> dict:
    if release not in _results:
        _results[release] = slicer_harness.run_scenarios(release, SCENARIO_MODULE, slicer_scenarios.SCENARIOS)
    return _results[release]


@pytest.mark.parametrize("scenario", slicer_scenarios.SCENARIOS)
@pytest.mark.parametrize("release", slicer_harness.RELEASES)
def test_scenario_in_slicer(release, scenario):
    reason = slicer_harness.release_skip_reason(release)
    if reason:
        pytest.skip(reason)
    result = _release_results(release)[scenario]
    assert result["ok"], f"Slicer {release}, {scenario}:\n{result['error']}"


def test_stand_in_property_whose_cpp_getter_is_virtual_reads_without_recursion():
    """A layout's ``spacing`` as PythonQt reads it: once, from C++, also while Qt lays the widget out.

    The stand-in attribute shadows the virtual ``QLayout::spacing()``, so shiboken's override
    lookup read it again from inside ``QObject.property``, without end: read from Python, a
    RecursionError; read by Qt laying the panel out, a segfault on Python 3.12 (Slicer 5.10's
    panel died in ``show()``) and a silently swallowed RecursionError on 3.11.
    """
    if importlib.util.find_spec("PySide6") is None:
        pytest.skip("PySide6 is not installed (the stand-ins map PythonQt onto it)")
    script = (
        "import sys\n"
        "from PySide6 import QtWidgets\n"
        "import slicer_stand_ins\n"
        "qt = slicer_stand_ins.qt_module()\n"
        "application = QtWidgets.QApplication([])\n"
        "widget = qt.QWidget()\n"
        "layout = qt.QVBoxLayout()\n"
        "widget.setLayout(layout)\n"
        "layout.addWidget(qt.QLabel('text'))\n"
        "layout.spacing = 7\n"
        "assert layout.spacing == 7 and QtWidgets.QVBoxLayout.spacing(layout) == 7, layout.spacing\n"
        "widget.show()\n"
        "application.processEvents()\n"
        "assert widget.sizeHint.height() > 0 and layout.spacing == 7\n"
        "print('read', layout.spacing)\n"
    )
    environment = dict(os.environ, QT_QPA_PLATFORM="offscreen", PYTHONPATH=str(Path(__file__).resolve().parent))
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=environment)
    assert run.returncode == 0 and "read 7" in run.stdout, f"exit {run.returncode}:\n{run.stdout}\n{run.stderr[-3000:]}"
