"""The module panel (Resources/UI/PhotonSlicer.ui) loads under PySide6 offscreen and is captured to a PNG.

Slicer's CTK/MRML widget classes do not exist in PySide6: the stand-ins of ui_stand_ins.py,
with the same class names and the properties the .ui sets, are registered with QUiLoader, so
the layout, object names, texts and dynamic properties are those Slicer will see. Set PHOTONSLICER_UI_PNG to
keep the screenshot somewhere to look at.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
QtCore = pytest.importorskip("PySide6.QtCore")
from PySide6.QtWidgets import QApplication, QComboBox, QLineEdit, QWidget  # noqa: E402 (after importorskip)
from ui_stand_ins import ctkCollapsibleButton, load_panel  # noqa: E402

UI_FILE = Path(__file__).resolve().parents[2] / "PhotonSlicer" / "Resources" / "UI" / "PhotonSlicer.ui"
SECTIONS = {
    "backendCollapsibleButton": "Backend",
    "questionCollapsibleButton": "Question",
    "answerCollapsibleButton": "Answer",
    "heatmapCollapsibleButton": "Heatmap",
    "historyCollapsibleButton": "History",
}
#: Widgets the module code reaches through childWidgetVariables.
EXPECTED_WIDGETS = (
    "backendModeComboBox backendUrlLineEdit backendTokenLineEdit backendPythonLineEdit startBackendButton "
    "stopBackendButton connectButton showBackendLogButton setupBackendButton setupProgressBar cancelSetupButton "
    "backendStatusLabel inputVolumeSelector "
    "exampleQuestionsComboBox questionTextEdit maxNewTokensSpinBox askButton cancelButton askProgressBar askStatusLabel "
    "answerTextEdit "
    "tokensKeptLabel timingsLabel showHeatmapCheckBox heatmapOpacitySlider heatmapColorSelector "
    "heatmapThresholdSlider jumpToMostKeptButton historyTableView"
).split()


@pytest.fixture(scope="module")
def panel():
    application = QApplication.instance() or QApplication([])
    widget = load_panel(UI_FILE)
    widget.resize(380, 980)
    widget.show()
    application.processEvents()
    yield widget
    widget.close()


def test_panel_has_every_section_and_widget(panel):
    assert type(panel).__name__ == "qMRMLWidget"
    for name, title in SECTIONS.items():
        section = panel.findChild(QWidget, name)
        assert isinstance(section, ctkCollapsibleButton) and section.title() == title
    missing = [name for name in EXPECTED_WIDGETS if panel.findChild(QWidget, name) is None]
    assert not missing


def test_token_is_hidden_and_never_bound_to_the_saved_parameter_node(panel):
    token = panel.findChild(QLineEdit, "backendTokenLineEdit")
    assert token.echoMode() == QLineEdit.Password
    assert token.property("SlicerParameterName") is None  # parameter nodes are saved with the scene


def test_bound_widgets_carry_their_parameter_names(panel):
    assert panel.findChild(QWidget, "inputVolumeSelector").property("SlicerParameterName") == "inputVolume"
    assert panel.findChild(QWidget, "inputVolumeSelector").nodeTypes == ["vtkMRMLScalarVolumeNode"]
    assert panel.findChild(QWidget, "heatmapOpacitySlider").property("SlicerParameterName") == "heatmapOpacity"
    assert panel.findChild(QWidget, "heatmapOpacitySlider").value == pytest.approx(0.5)
    examples = panel.findChild(QComboBox, "exampleQuestionsComboBox")
    assert examples.itemText(0) == "Choose an example question..."  # the module adds the examples


def test_panel_is_captured_to_png(panel, tmp_path):
    path = tmp_path / "PhotonSlicer-panel.png"
    assert panel.grab().save(str(path))
    assert path.stat().st_size > 5000  # a real picture, not an empty one
    if os.environ.get("PHOTONSLICER_UI_PNG"):
        shutil.copy(path, os.environ["PHOTONSLICER_UI_PNG"])
