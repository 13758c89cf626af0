"""Run the real PhotonSlicer module inside the real Python of each supported Slicer release.

Each release's pure-Python ``slicer`` package (``shared/platform/slicer/<release>/slicer``:
ScriptedLoadableModule, parameterNodeWrapper and its GUI connectors, slicer.util, slicer.i18n)
is imported unmodified, on top of slicer-core's MRML (the compiled classes Slicer's own
``__init__`` loads from its "kits") and PySide6 widgets (offscreen). Only the compiled parts of
the application are stood in for (slicer_stand_ins.py). Each release runs in its own
subprocess, so nothing of one release's package is cached in another's.

Tests use it in two halves:

- In pytest (``run_scenarios``): one subprocess per release runs every scenario asked for, each
  in a fork of its own with a fresh session (so no state passes between scenarios), and returns,
  per scenario, whether it passed and its traceback.
- In the subprocess (``python slicer_harness.py <release> <scenario module> <names...>``):
  ``SlicerSession`` boots Slicer's package, loads ``PhotonSlicer/PhotonSlicer.py`` as Slicer loads
  a scripted module, opens its panel (``setup()``, ``enter()``) and gives scenarios the handles
  to drive it: the widgets of the real .ui (typed into with QTest key events), the scene, the
  parameter node, and the message boxes the module showed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import traceback
import types
from pathlib import Path

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]
MODULE_DIR = REPOSITORY_ROOT / "PhotonSlicer"
#: Slicer's own Python package of each release (see its SOURCE.md); override with PHOTONSLICER_SLICER_PLATFORM.
PLATFORM_DIR = Path(
    os.environ.get("PHOTONSLICER_SLICER_PLATFORM", REPOSITORY_ROOT.parent / "shared" / "platform" / "slicer")
)
RELEASES = ("v5.6.2", "v5.8.1", "v5.10.0")
#: The oldest Python each release's own package runs on (5.10 bundles 3.12 and uses 3.10+ APIs).
RELEASE_MINIMUM_PYTHON = {"v5.6.2": (3, 9), "v5.8.1": (3, 9), "v5.10.0": (3, 10)}
#: The newest Python each release's own package runs on: 5.6 and 5.8 bundle Python 3.9 and their
#: package imports ``imp`` (``slicer/__init__.py`` at import, slicer.util), which Python 3.12 removed.
RELEASE_MAXIMUM_PYTHON = {"v5.6.2": (3, 11), "v5.8.1": (3, 11)}
#: What the harness itself runs on besides the release's package: Slicer's MRML and Qt widgets.
HARNESS_NEEDS = {
    "slicer_core": "slicer-core (Slicer's MRML without the application; it has no wheel for this Python)",
    "vtk": "VTK (comes with slicer-core)",
    "PySide6": "PySide6 (the Qt widgets)",
}
#: MRML methods slicer-core (a newer Slicer) has that a release's compiled MRML lacks; the harness
#: hides them so the module meets the release's API. vtkMRMLTableNode's UseColumnNameAsColumnHeader
#: was renamed UseColumnTitleAsColumnHeader in Slicer 5.8 (the old name stays, deprecated).
MRML_ABSENT_IN_RELEASE = {
    "v5.6.2": {"vtkMRMLTableNode": ("SetUseColumnTitleAsColumnHeader", "GetUseColumnTitleAsColumnHeader")},
}
SCENARIO_TIMEOUT_S = 60
SUBPROCESS_TIMEOUT_S = 240


def _version(version: tuple[int, int]) -> str:
    return ".".join(map(str, version))


def release_skip_reason(release: str) -> str | None:
    """Why a release cannot run here, or None."""
    python = _version(sys.version_info[:2])
    if not (PLATFORM_DIR / release / "slicer" / "__init__.py").is_file():
        return f"Slicer's Python package of {release} is not in {PLATFORM_DIR}"
    if sys.version_info[:2] < RELEASE_MINIMUM_PYTHON[release]:
        return f"Slicer {release}'s Python package needs Python {_version(RELEASE_MINIMUM_PYTHON[release])} or newer"
    newest = RELEASE_MAXIMUM_PYTHON.get(release)
    if newest and sys.version_info[:2] > newest:
        return (
            f"Slicer {release} bundles Python 3.9 and its Python package imports `imp`, which Python {python} "
            f"no longer has (it runs on Python {_version(newest)} at the newest)"
        )
    absent = [why for name, why in HARNESS_NEEDS.items() if importlib.util.find_spec(name) is None]
    if absent:
        return f"the harness needs what this Python ({python}) lacks: " + "; ".join(absent)
    return None


def run_scenarios(release: str, scenario_module: Path, names: list[str]) -> dict[str, dict]:
    """Run scenarios in a fresh subprocess on ``release``: {name: {"ok": bool, "error": str}}."""
    with tempfile.TemporaryDirectory(prefix="photonslicer-harness-") as home:
        environment = dict(os.environ, QT_QPA_PLATFORM="offscreen", XDG_CONFIG_HOME=home, HOME=home)
        environment.pop("PHOTONSLICER_TEST_URL", None)
        done = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), release, str(scenario_module), *names],
            capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT_S, env=environment, cwd=home,
        )  # fmt: skip
    marker = "PHOTONSLICER-HARNESS-RESULTS "
    lines = [line for line in done.stdout.splitlines() if line.startswith(marker)]
    if not lines:
        raise RuntimeError(
            f"the harness for Slicer {release} ended (exit {done.returncode}) without results:\n"
            f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
        )
    results = json.loads(lines[-1][len(marker) :])
    for result in results.values():
        result["log"] = done.stderr[-3000:]
    return results


# ------------------------------------------------------------------------------ in the subprocess


class SlicerSession:
    """Slicer's real Python package of one release, booted over slicer-core and PySide6."""

    def __init__(self, release: str):
        self.release = release
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
        self._boot_slicer_package()
        self.moduleWidget = None
        self.module = None

    # --------------------------------------------------------------- boot
    def _boot_slicer_package(self) -> None:
        import slicer_stand_ins as stand_ins
        from PySide6 import QtCore, QtWidgets

        release_dir = PLATFORM_DIR / self.release
        sys.path.insert(0, str(release_dir))
        # Slicer's __init__ loads the compiled kits named in slicer/kits.py (generated at build time):
        # here the one kit is slicer-core's MRML.
        kits = types.ModuleType("slicer.kits")
        kits.available_kits = ["slicer_core"]
        sys.modules["slicer.kits"] = kits
        sys.modules["qt"] = self.qt = stand_ins.qt_module()
        sys.modules["ctk"] = self.ctk = stand_ins.ctk_module()
        import slicer

        assert Path(slicer.__file__).resolve().parent == (release_dir / "slicer").resolve(), slicer.__file__
        self.slicer = slicer
        for name, cls in stand_ins.qmrml_classes().items():
            setattr(slicer, name, cls)
        self._hide_newer_mrml_api()

        QtCore.QCoreApplication.setOrganizationName("NA-MIC")
        QtCore.QCoreApplication.setApplicationName("Slicer")
        self.application = QtWidgets.QApplication.instance() or QtWidgets.QApplication(["Slicer"])
        self.scene = slicer.vtkMRMLScene()
        self._populate_scene_as_the_application_does()
        slicer.mrmlScene = self.scene
        slicer.app = stand_ins.SlicerApplication(self.application, self.scene, dict(os.environ))
        self.markupsLogic = stand_ins.MarkupsLogic()
        slicer.modules.markups = stand_ins.LoadedModule(logic=lambda: self.markupsLogic)
        # A main window, so slicer.util.errorDisplay shows its box (recorded by the ctkMessageBox stand-in).
        self.mainWindow = self.qt.QMainWindow()
        self.mainWindow.setObjectName("qSlicerMainWindow")
        self.messages = stand_ins.ctkMessageBox.shown

    def _hide_newer_mrml_api(self) -> None:
        for class_name, methods in MRML_ABSENT_IN_RELEASE.get(self.release, {}).items():
            base = getattr(self.slicer, class_name)

            def __getattribute__(node, name, _methods=methods, _base=base, _class=class_name):  # noqa: N807
                if name in _methods:
                    raise AttributeError(f"'{_class}' object has no attribute '{name}' (Slicer {self.release})")
                return _base.__getattribute__(node, name)

            release_class = type(class_name, (base,), {"__getattribute__": __getattribute__})
            base.override(release_class)

    def _populate_scene_as_the_application_does(self) -> None:
        """The colour tables (hidden from editors, as Slicer's Colors module adds them) and the three slice views."""
        import vtk

        output = vtk.vtkOutputWindow.GetInstance()
        output.SetDisplayModeToNever()  # FindDefaultColorFiles complains that no application logic exists
        colorLogic = self.slicer.vtkSlicerColorLogic()
        colorLogic.SetMRMLScene(self.scene)
        output.SetDisplayModeToDefault()
        self._colorLogic = colorLogic
        for layoutName in ("Red", "Yellow", "Green"):
            composite = self.scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode")
            composite.SetLayoutName(layoutName)

    # --------------------------------------------------------------- the module
    def load_module(self):
        """Import PhotonSlicer.py and create its module object, as qSlicerScriptedLoadableModule does."""
        if self.module is not None:
            return self.module
        sys.path.insert(0, str(MODULE_DIR))
        import PhotonSlicer

        self.pythonModule = PhotonSlicer
        parent = types.SimpleNamespace(path=str(MODULE_DIR / "PhotonSlicer.py"), icon=None)
        self.moduleParent = parent
        self.module = PhotonSlicer.PhotonSlicer(parent)
        self.slicer.modules.photonslicer = self.slicer.modules.PhotonSlicer = parent
        self.slicer.modules.PhotonSlicerInstance = self.module
        return self.module

    def open_panel(self):
        """The module's panel as Slicer shows it: a qSlicerScriptedLoadableModuleWidget, ``setup()``, ``enter()``."""
        self.load_module()
        parentWidget = self.slicer.qMRMLWidget()
        parentWidget.setLayout(self.qt.QVBoxLayout())
        parentWidget.setMRMLScene(self.scene)
        parentWidget.isEntered = False
        self.panelParent = parentWidget
        widget = self.pythonModule.PhotonSlicerWidget(parentWidget)
        widget.setup()
        self.slicer.modules.PhotonSlicerWidget = widget
        parentWidget.resize(400, 1000)
        parentWidget.show()
        self.enter()
        self.moduleWidget = widget
        return widget

    def enter(self) -> None:
        self.panelParent.isEntered = True
        self.slicer.modules.PhotonSlicerWidget.enter()
        self.application.processEvents()

    def exit(self) -> None:
        self.slicer.modules.PhotonSlicerWidget.exit()
        self.panelParent.isEntered = False
        self.application.processEvents()

    # --------------------------------------------------------------- driving
    def type_text(self, widget, text: str) -> None:
        """Type ``text`` key by key into ``widget`` (focused), as a user does."""
        from PySide6.QtTest import QTest

        widget.setFocus()
        for character in text:
            QTest.keyClick(widget, character)
            self.application.processEvents()

    def add_volume(self, name: str = "CT", shape=(6, 7, 8)):
        import numpy as np

        array = np.arange(int(np.prod(shape)), dtype=np.int16).reshape(shape)
        return self.slicer.util.addVolumeFromArray(array, ijkToRAS=np.diag([1.5, 1.0, 2.0, 1.0]), name=name)


def _run_scenario(release: str, scenarios_module_name: str, name: str) -> dict:
    try:
        session = SlicerSession(release)
        scenario = getattr(__import__(scenarios_module_name), name)
    except Exception:
        return {"ok": False, "error": "the harness did not boot:\n" + traceback.format_exc()}
    try:
        scenario(session)
        return {"ok": True, "error": ""}
    except Exception:
        return {"ok": False, "error": traceback.format_exc()}


def _run_forked(release: str, scenarios_module_name: str, name: str) -> dict:
    """One scenario in a forked child: a fresh session (Qt application, scene, module) for each."""
    import select
    import signal

    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # the child: boot, run, report, leave without Qt/VTK teardown
        os.close(read_end)
        result = _run_scenario(release, scenarios_module_name, name)
        with os.fdopen(write_end, "w") as pipe:
            pipe.write(json.dumps(result))
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        ready, _, _ = select.select([pipe], [], [], SCENARIO_TIMEOUT_S)
        if not ready:
            os.kill(child, signal.SIGKILL)
            os.waitpid(child, 0)
            return {"ok": False, "error": f"no result within {SCENARIO_TIMEOUT_S} s (the scenario hung)"}
        text = pipe.read()  # the child writes its result at once, then exits
    _, status = os.waitpid(child, 0)
    if not text:
        return {"ok": False, "error": f"the scenario's process died (wait status {status})"}
    return json.loads(text)


def _main(argv: list[str]) -> int:
    release, scenario_path, names = argv[0], Path(argv[1]), argv[2:]
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.path.insert(0, str(scenario_path.parent))
    # The slow imports once; every scenario then boots Slicer's package afresh in its own fork.
    import numpy  # noqa: F401
    import PySide6.QtTest  # noqa: F401
    import PySide6.QtUiTools  # noqa: F401
    import PySide6.QtWidgets  # noqa: F401
    import slicer_core  # noqa: F401
    import vtk  # noqa: F401

    results: dict[str, dict] = {}
    for name in names:
        if hasattr(os, "fork"):
            results[name] = _run_forked(release, scenario_path.stem, name)
        else:
            results[name] = _run_scenario(release, scenario_path.stem, name)
    sys.stdout.write("PHOTONSLICER-HARNESS-RESULTS " + json.dumps(results) + "\n")
    sys.stdout.flush()
    os._exit(0)  # skip Qt/VTK teardown order trouble at interpreter exit


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
