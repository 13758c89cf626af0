"""Stand-ins for Slicer's CTK/MRML widget classes so QUiLoader (PySide6) can build the module's .ui.

Each has the class name the .ui uses and the properties it sets, so the layout, object names,
texts and dynamic properties are those Slicer will see. Used by test_ui.py (the screenshot,
Resources/make_screenshot.py, opens the real panel in slicer_harness.py instead).
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Property, QFile, Qt
from PySide6.QtUiTools import QUiLoader
from PySide6.QtWidgets import QComboBox, QDoubleSpinBox, QGroupBox, QHBoxLayout, QSlider, QTableView, QWidget


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


STAND_INS = (qMRMLWidget, ctkCollapsibleButton, ctkSliderWidget, qMRMLNodeComboBox, qMRMLTableView)


def load_panel(ui_file: Path) -> QWidget:
    """The .ui as a widget tree (a QApplication must exist)."""
    loader = QUiLoader()
    for stand_in in STAND_INS:
        loader.registerCustomWidget(stand_in)
    file = QFile(str(ui_file))
    if not file.open(QFile.ReadOnly):
        raise OSError(f"cannot open {ui_file}")
    widget = loader.load(file)
    file.close()
    if widget is None:
        raise RuntimeError(loader.errorString())
    return widget
