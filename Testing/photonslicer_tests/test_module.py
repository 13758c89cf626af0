"""PhotonSlicer.py and the widget-independent pieces of the panel, without the Slicer application.

``PhotonSlicer.py`` imports under ``slicer-core`` once the application-only modules it names
(``qt``, ``slicer.ScriptedLoadableModule``, ``slicer.parameterNodeWrapper``, ``slicer.i18n``)
are stood in for, in a subprocess so the stand-ins stay there. What Slicer's
parameterNodeWrapper would do with the parameter node class and the .ui is checked against
the widget/type pairs its GUI connectors accept (Slicer's guiConnectors.py): a pair it does
not accept makes ``connectGui`` fail when the module opens.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import numpy as np
import pytest
import slicer
import vtk
from PhotonSlicerLib import panel, volumes

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]
MODULE_DIR = REPOSITORY_ROOT / "PhotonSlicer"
UI_FILE = MODULE_DIR / "Resources" / "UI" / "PhotonSlicer.ui"

#: Imports PhotonSlicer.py with stand-ins and prints what the checks below need.
IMPORT_MODULE = r"""
import enum, json, sys, types, typing
sys.path.insert(0, sys.argv[1])
import slicer

def stand_in_module(name, **attributes):
    module = types.ModuleType(name)
    module.__dict__.update(attributes)
    sys.modules[name] = module
    return module

base = lambda name: type(name, (), {"__init__": lambda self, parent=None: None,
                                    "getParameterNode": lambda self: "raw parameter node"})
stand_in_module("slicer.ScriptedLoadableModule", **{name: base(name) for name in (
    "ScriptedLoadableModule", "ScriptedLoadableModuleLogic", "ScriptedLoadableModuleTest",
    "ScriptedLoadableModuleWidget")})
stand_in_module("slicer.i18n", tr=lambda text: text, translate=lambda context, text: text)
class WithinRange:
    def __init__(self, minimum, maximum): self.minimum, self.maximum = minimum, maximum
stand_in_module("slicer.parameterNodeWrapper", parameterNodeWrapper=lambda cls: cls, WithinRange=WithinRange)
stand_in_module("slicer.parameterNodeWrapper.guiConnectors", QLineEditToStrConnector=object,
                QTextEditPlainTextToStrConnector=object)
stand_in_module("qt")

import PhotonSlicer
from PhotonSlicerLib.logic import PhotonAskLogic

logic = PhotonSlicer.PhotonSlicerLogic()
assert isinstance(logic, PhotonAskLogic) and logic.backend is None
assert "torch" not in sys.modules

def describe(annotation):
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        base, *extra = typing.get_args(annotation)
        bounded = any(isinstance(item, WithinRange) for item in extra)
        return {**describe(base), "bounded": bounded}
    if origin is typing.Union:
        arguments = typing.get_args(annotation)
        if all(a is type(None) or (isinstance(a, type) and issubclass(a, slicer.vtkMRMLNode)) for a in arguments):
            return {"kind": "node", "types": [a.__name__ for a in arguments if a is not type(None)]}
        return {"kind": "union-not-of-nodes"}
    if isinstance(annotation, type) and issubclass(annotation, slicer.vtkMRMLNode):
        return {"kind": "node", "types": [annotation.__name__]}
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return {"kind": "enum", "labels": [member.label() for member in annotation]}
    if isinstance(annotation, type):
        return {"kind": annotation.__name__}
    return {"kind": repr(annotation)}

fields = {name: describe(annotation) for name, annotation in
          typing.get_type_hints(PhotonSlicer.PhotonSlicerParameterNode, include_extras=True).items()}
defaults = {name: getattr(PhotonSlicer.PhotonSlicerParameterNode, name) for name in fields
            if isinstance(getattr(PhotonSlicer.PhotonSlicerParameterNode, name, None), (int, float, str, bool))}
from PhotonSlicerLib import settings
print(json.dumps({"fields": fields, "defaults": defaults, "python_setting": settings.PYTHON_KEY,
                  "setting_keys": list(settings.KEYS)}))
"""

#: Widget classes Slicer's parameterNodeWrapper binds to each kind of field (guiConnectors.py).
CONNECTABLE = {
    "str": {"QLineEdit", "QTextEdit", "QLabel"},  # not QPlainTextEdit
    "bool": {"QCheckBox", "QPushButton", "ctkCheckablePushButton"},
    "int": {"QSpinBox", "QSlider", "ctkSliderWidget"},
    "float": {"QDoubleSpinBox", "ctkSliderWidget"},
    "enum": {"QComboBox", "ctkComboBox"},
    "node": {"qMRMLNodeComboBox"},
}


@pytest.fixture(scope="module")
def module_description():
    done = subprocess.run(
        [sys.executable, "-c", IMPORT_MODULE, str(MODULE_DIR)], check=True, capture_output=True, text=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def ui_bindings() -> dict[str, ElementTree.Element]:
    bound = {}
    for widget in ElementTree.parse(UI_FILE).getroot().iter("widget"):
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                bound[prop.findtext("string")] = widget
    return bound


def test_module_imports_under_slicer_core_and_its_logic_is_the_lib_logic(module_description):
    assert "inputVolume" in module_description["fields"]


def test_every_bound_widget_has_a_parameter_slicer_can_connect_it_to(module_description):
    fields = module_description["fields"]
    bindings = ui_bindings()
    assert set(bindings) <= set(fields), f"bound in the .ui but not parameters: {set(bindings) - set(fields)}"
    for name, widget in bindings.items():
        field, widget_class = fields[name], widget.get("class")
        assert widget_class in CONNECTABLE[field["kind"]], f"{name}: {widget_class} cannot show a {field['kind']}"
        if widget_class in {"ctkSliderWidget", "QSlider"}:
            assert field.get("bounded"), f"{name}: a slider needs a WithinRange annotation"
    # The node selectors list the node classes the parameters hold.
    for name in ("inputVolume", "heatmapColor"):
        selector_types = [string.text for string in bindings[name].iter("string") if string.text.startswith("vtkMRML")]
        assert sorted(selector_types) == sorted(fields[name]["types"]), name


def test_backend_mode_combo_shows_the_enum_labels(module_description):
    labels = module_description["fields"]["backendMode"]["labels"]
    combo = ui_bindings()["backendMode"]
    items = [item.findtext("property/string") for item in combo.findall("item")]
    assert items == labels == ["Local (this computer)", "Remote URL"]


def test_no_token_or_python_path_in_the_parameter_node(module_description):
    """The parameter node is saved with the scene: tokens never go there; the Python path is a setting."""
    assert not [name for name in module_description["fields"] if re.search(r"token(?!s)", name.lower())]
    assert "backendPython" not in module_description["fields"]
    assert "token" not in module_description["python_setting"].lower()
    for widget in ElementTree.parse(UI_FILE).getroot().iter("widget"):
        if widget.get("name") in {"backendTokenLineEdit", "backendPythonLineEdit"}:
            assert not [p for p in widget.findall("property") if p.get("name") == "SlicerParameterName"]


def test_parameter_defaults_match_the_ui(module_description):
    defaults = module_description["defaults"]
    bindings = ui_bindings()
    for name in ("heatmapOpacity", "heatmapThreshold"):
        assert float(bindings[name].find("property[@name='value']/double").text) == pytest.approx(defaults[name])
    assert int(bindings["maxNewTokens"].find("property[@name='value']/number").text) == defaults["maxNewTokens"]


# ------------------------------------------------------------------------------ panel wording


def test_example_questions_cover_the_3d_rad_task_families():
    families = {family.lower() for family in panel.EXAMPLE_QUESTIONS}
    assert families == {
        "anomaly detection", "image observation", "medical computation", "existence detection",
        "static temporal diagnosis", "longitudinal temporal diagnosis",
    }  # fmt: skip
    items = panel.example_items()
    assert items[0] == panel.EXAMPLE_PROMPT and panel.question_of_item(items[0]) == ""
    questions = [panel.question_of_item(item) for item in items[1:]]
    assert all(question.endswith(("?", ".")) for question in questions)
    assert "Is there a lesion in the liver?" in questions


def test_answer_figures_in_words():
    assert panel.tokens_text(410, 4000) == "410 of 4,000 image tokens (10.2 %)"
    assert panel.tokens_text(0, 0) == "-"
    timings = {"preprocess": 0.412, "vision": 1.2, "prefill": 0.3, "decode": 2.1, "total": 4.05}
    assert (
        panel.timings_text(timings) == "preprocess 0.41 s, vision 1.20 s, prefill 0.30 s, decode 2.10 s; total 4.05 s"
    )
    assert panel.timings_text({}) == "-"
    assert panel.answer_text(" Yes. ", stopped=False) == "Yes."
    assert panel.answer_text("A lesion in", stopped=True).startswith("[Cancelled: partial answer] A lesion in")
    assert panel.progress_text(0, 256, False).startswith("Sending")
    assert panel.progress_text(12, 256, False) == "Answering: 12 of at most 256 tokens"
    assert panel.progress_text(12, 256, True) == "Cancelling ..."
    waiting = panel.progress_text(0, 256, False, waiting_s=12.4, wait_limit_s=120)
    assert waiting == "Waiting for the server (busy with other questions): 12 of at most 120 s"
    assert panel.progress_text(0, 256, True, waiting_s=12.4, wait_limit_s=120) == "Cancelling ..."


def test_backend_status_in_words():
    assert panel.backend_status_text("ready", "Ready at http://127.0.0.1:1.", asking=True) == (
        "Busy: answering a question."
    )
    assert panel.backend_status_text("error", "The backend did not start: x", asking=False).startswith("Error: ")
    assert panel.server_text({"model": {"name": "photon-s1", "device": "cuda:0"}}) == "photon-s1 on cuda:0"
    demo = panel.server_text({"model": {"name": "photon-demo", "device": "cpu"}})
    assert demo.startswith("photon-demo on cpu (demo model") and "synthetic phantoms" in demo


# ------------------------------------------------------------------------------ jump target


def test_jump_target_follows_the_heatmaps_parent_transform():
    slicer.mrmlScene = scene = slicer.vtkMRMLScene()
    heat = np.zeros((4, 5, 6), np.float32)
    heat[2, 3, 1] = 1.0  # k, j, i
    ijk_to_ras = np.diag([2.0, 3.0, 4.0, 1.0])
    ijk_to_ras[:3, 3] = (10.0, 20.0, 30.0)
    node = slicer.util.addVolumeFromArray(heat, ijkToRAS=ijk_to_ras, name="heat")
    assert volumes.most_kept_position_world(node) == pytest.approx((12.0, 29.0, 38.0))
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    matrix = vtk.vtkMatrix4x4()
    matrix.SetElement(0, 3, 5.0)  # 5 mm to the right
    transform.SetMatrixTransformToParent(matrix)
    node.SetAndObserveTransformNodeID(transform.GetID())
    assert volumes.most_kept_position_ras(node) == pytest.approx((12.0, 29.0, 38.0))
    assert volumes.most_kept_position_world(node) == pytest.approx((17.0, 29.0, 38.0))
    scene.Clear(1)
