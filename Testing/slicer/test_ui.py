"""The module panel (Resources/UI/PhotonSlicer.ui) loads under PySide6 offscreen and is captured to a PNG.

Slicer's CTK/MRML widget classes do not exist in PySide6: small stand-ins with the same class
names and the properties the .ui sets are registered with QUiLoader, so the layout, object
names, texts and dynamic properties are those Slicer will see. Set PHOTONSLICER_UI_PNG to
keep the screenshot somewhere to look at.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
QtCore = pytest.importorskip("PySide6.QtCore")
from PySide6.QtCore import Property, QFile, Qt  # noqa: E402
from PySide6.QtUiTools import QUiLoader  # noqa: E402
from PySide6.QtWidgets import (  # noqa: E402
    QApplication,
    QComboBox,
    QDoubleSpinBox,
    QGroupBox,
    QHBoxLayout,
    QLineEdit,
    QSlider,
    QTableView,
    QWidget,
)

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
    "stopBackendButton connectButton showBackendLogButton backendStatusLabel inputVolumeSelector "
    "exampleQuestionsComboBox questionTextEdit maxNewTokensSpinBox askButton cancelButton askProgressBar askStatusLabel "
    "answerTextEdit "
    "tokensKeptLabel timingsLabel showHeatmapCheckBox heatmapOpacitySlider heatmapColorSelector "
    "heatmapThresholdSlider jumpToMostKeptButton historyTableView"
).split()


# Stand-ins for Slicer's classes (named as in the .ui so QUiLoader creates them).
class qMRMLWidget(QWidget):  # noqa: N801
    pass


class ctkCollapsibleButton(QGroupBox):  # noqa: N801
    def _text(self) -> str:
        return self.title()

    def _set_text(self, text: str) -> None:
        self.setTitle(text)

    text = Property(str, _text, _set_text)


class ctkSliderWidget(QWidget):  # noqa: N801
    """Slider and spin box over a float range, as ctkSliderWidget shows them."""

    def __init__(self, parent=None):
        super().__init__(parent)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.slider = QSlider(Qt.Horizontal, self)
        self.spin = QDoubleSpinBox(self)
        layout.addWidget(self.slider)
        layout.addWidget(self.spin)
        self.slider.setRange(0, 1000)
        self.spin.valueChanged.connect(self._sync)

    def _sync(self, value: float) -> None:
        span = (self.spin.maximum() - self.spin.minimum()) or 1.0
        self.slider.setValue(round(1000 * (value - self.spin.minimum()) / span))

    value = Property(float, lambda self: self.spin.value(), lambda self, v: self.spin.setValue(v))
    minimum = Property(float, lambda self: self.spin.minimum(), lambda self, v: self.spin.setMinimum(v))
    maximum = Property(float, lambda self: self.spin.maximum(), lambda self, v: self.spin.setMaximum(v))
    singleStep = Property(float, lambda self: self.spin.singleStep(), lambda self, v: self.spin.setSingleStep(v))


class qMRMLNodeComboBox(QComboBox):  # noqa: N801
    def __init__(self, parent=None):
        super().__init__(parent)
        self._node_types: list[str] = []
        self._flags = {}

    def _set_node_types(self, types) -> None:
        self._node_types = list(types)
        self.clear()
        self.addItem(f"Select a {self._node_types[0].removeprefix('vtkMRML').removesuffix('Node')}")

    nodeTypes = Property(list, lambda self: self._node_types, _set_node_types)
    showChildNodeTypes = Property(
        bool, lambda self: self._flags.get("child", True), lambda self, v: self._flags.update(child=v)
    )
    addEnabled = Property(bool, lambda self: self._flags.get("add", True), lambda self, v: self._flags.update(add=v))
    removeEnabled = Property(
        bool, lambda self: self._flags.get("remove", True), lambda self, v: self._flags.update(remove=v)
    )
    noneEnabled = Property(
        bool, lambda self: self._flags.get("none", False), lambda self, v: self._flags.update(none=v)
    )


class qMRMLTableView(QTableView):  # noqa: N801
    pass


@pytest.fixture(scope="module")
def panel():
    application = QApplication.instance() or QApplication([])
    loader = QUiLoader()
    for stand_in in (qMRMLWidget, ctkCollapsibleButton, ctkSliderWidget, qMRMLNodeComboBox, qMRMLTableView):
        loader.registerCustomWidget(stand_in)
    ui_file = QFile(str(UI_FILE))
    assert ui_file.open(QFile.ReadOnly)
    widget = loader.load(ui_file)
    ui_file.close()
    assert widget is not None, loader.errorString()
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
