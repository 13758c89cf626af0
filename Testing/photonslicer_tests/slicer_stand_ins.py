"""Stand-ins for the compiled parts of 3D Slicer, for the harness of slicer_harness.py.

Only what a real Slicer has in C++ is stood in for here: PythonQt's ``qt`` module (mapped to
PySide6 with PythonQt's conventions: Qt properties read and written as attributes, ``name`` for
``objectName``, ``connect("signal(args)", slot)``), the CTK and qMRML widgets the module's .ui
uses (driven like the real ones: a node combo box lists the scene's nodes of its types, hides
nodes hidden from editors unless ``showHidden``, and emits ``currentNodeChanged``; a slider
widget emits ``valueChanged``), and ``slicer.app``. Slicer's own Python code (the parameter
node wrapper and its GUI connectors, ScriptedLoadableModule, slicer.util, slicer.i18n) is never
stood in for: the harness imports the real one of each release.
"""

from __future__ import annotations

import sys
import threading
import types
from collections.abc import Callable
from typing import Any

from PySide6 import QtCore, QtGui, QtUiTools, QtWidgets
from PySide6.QtCore import Property, Signal

# ------------------------------------------------------------------------------ PythonQt's qt

_QT_MODULES = (QtCore, QtGui, QtWidgets, QtUiTools)
_original_connect = QtCore.QObject.connect
_original_disconnect = QtCore.QObject.disconnect


def _pythonqt_connect(self, *args, **kwargs):
    """``obj.connect("clicked(bool)", slot)`` as PythonQt has it; every other form is PySide6's."""
    if len(args) == 2 and isinstance(args[0], str) and args[0][:1].isalpha() and callable(args[1]):
        signature, slot = args
        signal = getattr(self, signature.split("(")[0], None)
        if signal is None or not hasattr(signal, "connect"):
            raise AttributeError(f"{type(self).__name__} has no signal {signature}")
        return signal.connect(slot)
    return _original_connect(self, *args, **kwargs)


def _pythonqt_disconnect(self, *args, **kwargs):
    if len(args) == 2 and isinstance(args[0], str) and args[0][:1].isalpha() and callable(args[1]):
        signature, slot = args
        return getattr(self, signature.split("(")[0]).disconnect(slot)
    return _original_disconnect(self, *args, **kwargs)


#: PythonQt names every QObject's objectName "name" too (slicer.util.childWidgetVariables uses it).
_name_property = property(lambda self: QtCore.QObject.objectName(self), lambda self, value: self.setObjectName(value))
QtCore.QObject.name = _name_property

_adapted: dict[type, type] = {}
_reading = threading.local()  # the (object, property) reads under way in this thread


def _property_accessors(name: str):
    """A Qt property as an attribute, read with ``QObject.property`` as PythonQt reads it.

    The attribute shadows the C++ getter of the same name, and for a virtual one (``spacing``
    of a layout: ``QLayout::spacing()``) shiboken asks the Python object for an override by
    reading that attribute while ``QObject.property`` runs the getter: that read is answered
    with None (no override, so the C++ getter runs), as a PythonQt object has no Python
    override. Without that, each read recursed until a RecursionError: on Python 3.11 it was
    raised in the accessor and swallowed by shiboken (which then ran the C++ getter); Python
    3.12 counts C-level recursion apart from Python frames and ran out of the C budget first,
    inside shiboken's lazy creation of a wrapper type, which does not check for the error and
    crashed (a segfault in ``introduceWrapperType``).
    """

    def read(self):
        under_way = _reading.__dict__.setdefault("keys", set())
        key = (id(self), name)
        if key in under_way:
            return None
        under_way.add(key)
        try:
            return self.property(name)
        finally:
            under_way.discard(key)

    return property(read, lambda self, value: self.setProperty(name, value))


def pythonqt_class(cls: type) -> type:
    """A subclass of a PySide6 QObject class whose Qt properties are attributes, as in PythonQt.

    PythonQt gives a property precedence over a method of the same name (``lineEdit.text`` is
    the text, ``widget.enabled = False`` disables it), which is what Slicer's Python code expects.
    """
    if cls in _adapted:
        return _adapted[cls]
    if not (isinstance(cls, type) and issubclass(cls, QtCore.QObject)):
        return cls
    meta = cls.staticMetaObject
    # connect/disconnect must be in the subclass itself: PySide6 resolves a QObject's own
    # connect before a patched base-class attribute.
    attributes: dict[str, Any] = {"__module__": "qt", "connect": _pythonqt_connect,
                                  "disconnect": _pythonqt_disconnect, "name": _name_property}  # fmt: skip
    for index in range(meta.propertyCount()):
        name = meta.property(index).name()
        # Properties the stand-ins declare in Python are attributes already.
        if not isinstance(getattr(cls, name, None), (Property, property)):
            attributes[name] = _property_accessors(name)
    if hasattr(cls, "exec"):
        attributes["exec_"] = lambda self, *args: self.exec(*args)
    adapted = type(cls.__name__, (cls,), attributes)
    _adapted[cls] = adapted
    return adapted


class _QtModule(types.ModuleType):
    """``import qt``: PySide6's classes with PythonQt's conventions, looked up by name."""

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        if name == "QUiLoader":
            return UiLoader
        for module in _QT_MODULES:
            if hasattr(module, name):
                value = pythonqt_class(getattr(module, name))
                setattr(self, name, value)
                return value
        raise AttributeError(f"module 'qt' has no attribute {name!r}")


# ------------------------------------------------------------------------------ CTK and qMRML


class qMRMLWidget(QtWidgets.QWidget):  # noqa: N801
    """A widget with an MRML scene; the .ui's connections hand it on to the MRML children."""

    mrmlSceneChanged = Signal(object)

    def __init__(self, parent=None):
        super().__init__(parent)
        self._scene = None

    def setMRMLScene(self, scene) -> None:  # noqa: N802
        self._scene = scene
        self.mrmlSceneChanged.emit(scene)

    def mrmlScene(self):  # noqa: N802
        return self._scene


class ctkCollapsibleButton(QtWidgets.QGroupBox):  # noqa: N801
    def _text(self) -> str:
        return self.title()

    def _set_text(self, text: str) -> None:
        self.setTitle(text)

    text = Property(str, _text, _set_text)
    collapsed = Property(bool, lambda self: not self.isChecked() if self.isCheckable() else False,
                         lambda self, value: None)  # fmt: skip


class ctkSliderWidget(QtWidgets.QWidget):  # noqa: N801
    """A slider and a spin box over a float range; ``valueChanged(double)`` as ctkSliderWidget emits it."""

    valueChanged = Signal(float)

    def __init__(self, parent=None):
        super().__init__(parent)
        layout = QtWidgets.QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.slider = QtWidgets.QSlider(QtCore.Qt.Horizontal, self)
        self.spinBox = QtWidgets.QDoubleSpinBox(self)
        self.spinBox.setDecimals(2)
        layout.addWidget(self.slider)
        layout.addWidget(self.spinBox)
        self.slider.setRange(0, 1000)
        self.spinBox.valueChanged.connect(self._onSpinBoxChanged)
        self.slider.valueChanged.connect(self._onSliderChanged)

    def _onSpinBoxChanged(self, value: float) -> None:
        span = (self.spinBox.maximum() - self.spinBox.minimum()) or 1.0
        blocked = self.slider.blockSignals(True)
        self.slider.setValue(round(1000 * (value - self.spinBox.minimum()) / span))
        self.slider.blockSignals(blocked)
        self.valueChanged.emit(value)

    def _onSliderChanged(self, position: int) -> None:
        span = self.spinBox.maximum() - self.spinBox.minimum()
        self.spinBox.setValue(self.spinBox.minimum() + span * position / 1000)

    def _set_minimum(self, value: float) -> None:
        self.spinBox.setMinimum(value)

    def _set_maximum(self, value: float) -> None:
        self.spinBox.setMaximum(value)

    value = Property(float, lambda self: self.spinBox.value(), lambda self, v: self.spinBox.setValue(v))
    minimum = Property(float, lambda self: self.spinBox.minimum(), _set_minimum)
    maximum = Property(float, lambda self: self.spinBox.maximum(), _set_maximum)
    singleStep = Property(float, lambda self: self.spinBox.singleStep(), lambda self, v: self.spinBox.setSingleStep(v))
    decimals = Property(int, lambda self: self.spinBox.decimals(), lambda self, v: self.spinBox.setDecimals(v))


def _node_list_property(attribute: str, default):
    def getter(self):
        return getattr(self, attribute, default)

    def setter(self, value):
        setattr(self, attribute, type(default)(value))
        self._refresh()

    return getter, setter


class qMRMLNodeComboBox(QtWidgets.QComboBox):  # noqa: N801
    """The scene's nodes of ``nodeTypes``, as qMRMLNodeComboBox lists them.

    Like the real one: nodes hidden from editors (``HideFromEditors``) are left out unless
    ``showHidden``; ``showChildNodeTypes`` (default true) admits subclasses; with ``noneEnabled``
    false the first node is selected once there is one; ``setCurrentNode`` with a node that is not
    listed leaves no current node; ``currentNodeChanged`` carries the node (or None).
    """

    currentNodeChanged = Signal(object)
    currentNodeIDChanged = Signal(str)

    def __init__(self, parent=None):
        super().__init__(parent)
        self._scene = None
        self._observations: list[int] = []
        self._nodeIds: list[str | None] = []
        self._current: str | None = None
        self._refreshing = False
        self.currentIndexChanged.connect(self._onIndexChanged)

    nodeTypes = Property(list, *_node_list_property("_nodeTypes", []))
    showHidden = Property(bool, *_node_list_property("_showHidden", False))
    showChildNodeTypes = Property(bool, *_node_list_property("_showChildNodeTypes", True))
    noneEnabled = Property(bool, *_node_list_property("_noneEnabled", False))
    addEnabled = Property(bool, *_node_list_property("_addEnabled", True))
    removeEnabled = Property(bool, *_node_list_property("_removeEnabled", True))
    renameEnabled = Property(bool, *_node_list_property("_renameEnabled", False))
    hideChildNodeTypes = Property(list, *_node_list_property("_hideChildNodeTypes", []))

    def setMRMLScene(self, scene) -> None:  # noqa: N802
        if self._scene is not None:
            for tag in self._observations:
                self._scene.RemoveObserver(tag)
        self._scene, self._observations = scene, []
        if scene is not None:
            for event in (scene.NodeAddedEvent, scene.NodeRemovedEvent, scene.EndCloseEvent,
                          scene.EndImportEvent, scene.EndBatchProcessEvent):  # fmt: skip
                self._observations.append(scene.AddObserver(event, lambda caller, event: self._refresh()))
        self._refresh()

    def mrmlScene(self):  # noqa: N802
        return self._scene

    def _listed(self, node) -> bool:
        if node.GetHideFromEditors() and not self.showHidden:
            return False
        if node.GetClassName() in self.hideChildNodeTypes:
            return False
        for node_type in self.nodeTypes:
            if node.GetClassName() == node_type or (self.showChildNodeTypes and node.IsA(node_type)):
                return True
        return False

    def nodes(self) -> list:
        """The nodes listed, in scene order (a harness helper, not qMRMLNodeComboBox API)."""
        return [self._scene.GetNodeByID(node_id) for node_id in self._nodeIds if node_id]

    def _refresh(self) -> None:
        if self._refreshing:
            return
        self._refreshing = True
        try:
            ids: list[str | None] = [None] if self.noneEnabled else []
            if self._scene is not None and self.nodeTypes:
                collection = self._scene.GetNodes()
                for index in range(collection.GetNumberOfItems()):
                    node = collection.GetItemAsObject(index)
                    if self._listed(node):
                        ids.append(node.GetID())
            blocked = self.blockSignals(True)
            self.clear()
            for node_id in ids:
                self.addItem("None" if node_id is None else self._scene.GetNodeByID(node_id).GetName())
            self._nodeIds = ids
            self.blockSignals(blocked)
            if self._current in ids:
                self._select(self._current, emit=False)
            elif not self.noneEnabled and any(ids):
                self._select(next(node_id for node_id in ids if node_id), emit=True)
            else:
                self._select(None, emit=self._current is not None)
        finally:
            self._refreshing = False

    def _select(self, node_id: str | None, emit: bool) -> None:
        blocked = self.blockSignals(True)
        self.setCurrentIndex(self._nodeIds.index(node_id) if node_id in self._nodeIds else -1)
        self.blockSignals(blocked)
        changed = node_id != self._current
        self._current = node_id
        if emit and changed:
            self.currentNodeChanged.emit(self.currentNode())
            self.currentNodeIDChanged.emit(node_id or "")

    def _onIndexChanged(self, index: int) -> None:
        node_id = self._nodeIds[index] if 0 <= index < len(self._nodeIds) else None
        if node_id != self._current:
            self._current = node_id
            self.currentNodeChanged.emit(self.currentNode())
            self.currentNodeIDChanged.emit(node_id or "")

    def currentNode(self):  # noqa: N802
        return self._scene.GetNodeByID(self._current) if self._current and self._scene is not None else None

    def currentNodeID(self) -> str:  # noqa: N802
        return self._current or ""

    def setCurrentNode(self, node) -> None:  # noqa: N802
        self.setCurrentNodeID(node.GetID() if node is not None else "")

    def setCurrentNodeID(self, node_id: str) -> None:  # noqa: N802
        self._select(node_id if node_id in self._nodeIds else None, emit=True)


class qMRMLTableView(QtWidgets.QTableView):  # noqa: N801
    """A vtkMRMLTableNode's table, one row per table row, behind a sort proxy, as qMRMLTableView shows it."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self._tableNode = None
        self._observation = None
        self._model = QtGui.QStandardItemModel(self)
        self._proxy = QtCore.QSortFilterProxyModel(self)
        self._proxy.setSourceModel(self._model)
        self.setModel(self._proxy)
        # PythonQt lets Python connect to the selection model with a signature string.
        self.setSelectionModel(pythonqt_class(QtCore.QItemSelectionModel)(self._proxy, self))

    def setMRMLScene(self, scene) -> None:  # noqa: N802
        self._scene = scene

    def setMRMLTableNode(self, tableNode) -> None:  # noqa: N802
        if self._tableNode is not None and self._observation is not None:
            self._tableNode.RemoveObserver(self._observation)
        self._tableNode, self._observation = tableNode, None
        if tableNode is not None:
            self._observation = tableNode.AddObserver("ModifiedEvent", lambda caller, event: self._update())
        self._update()

    def mrmlTableNode(self):  # noqa: N802
        return self._tableNode

    def sortFilterProxyModel(self):  # noqa: N802
        return self._proxy

    def _update(self) -> None:
        self._model.clear()
        if self._tableNode is None:
            return
        table = self._tableNode.GetTable()
        names = [table.GetColumnName(column) for column in range(table.GetNumberOfColumns())]
        self._model.setHorizontalHeaderLabels(names)
        for row in range(table.GetNumberOfRows()):
            self._model.appendRow(
                # The cell's text as qMRMLTableModel shows it (vtkVariant's str() would add quotes).
                [QtGui.QStandardItem(table.GetValue(row, column).ToString()) for column in range(len(names))]
            )


class ctkMessageBox(QtWidgets.QMessageBox):  # noqa: N801
    """Records what would be shown and returns at once (a modal box would wait for a click).

    It returns the button the user pressed, as the real one does: the first of ``answers`` when
    the box offers it (a scenario puts ``QMessageBox.Cancel`` there to decline), else OK.
    """

    shown: list[dict[str, str]] = []
    answers: list = []

    def exec(self, *args):
        box = QtWidgets.QMessageBox  # (the PythonQt-style subclass has text as an attribute)
        ctkMessageBox.shown.append({"text": box.text(self), "detailedText": box.detailedText(self),
                                    "windowTitle": box.windowTitle(self)})  # fmt: skip
        if ctkMessageBox.answers and box.standardButtons(self) & ctkMessageBox.answers[0]:
            return int(ctkMessageBox.answers.pop(0).value)
        return int(QtWidgets.QMessageBox.Ok.value)

    def exec_(self, *args):
        return self.exec()


def _plain_stand_in(name: str, base: type) -> type:
    """A distinct class for a CTK/qMRML widget the module does not use (Slicer's connectors name them)."""
    return type(name, (base,), {"__module__": "ctk" if name.startswith("ctk") else "slicer"})


def ctk_module() -> types.ModuleType:
    module = types.ModuleType("ctk")
    module.ctkCollapsibleButton = pythonqt_class(ctkCollapsibleButton)
    module.ctkSliderWidget = pythonqt_class(ctkSliderWidget)
    module.ctkMessageBox = pythonqt_class(ctkMessageBox)
    for name, base in (("ctkCheckBox", QtWidgets.QCheckBox), ("ctkComboBox", QtWidgets.QComboBox),
                       ("ctkDoubleSlider", QtWidgets.QSlider), ("ctkDoubleSpinBox", QtWidgets.QDoubleSpinBox),
                       ("ctkRangeWidget", QtWidgets.QWidget), ("ctkDoubleRangeSlider", QtWidgets.QWidget),
                       ("ctkPathLineEdit", QtWidgets.QWidget), ("ctkDirectoryButton", QtWidgets.QWidget),
                       ("ctkCheckablePushButton", QtWidgets.QPushButton),
                       ("ctkColorPickerButton", QtWidgets.QPushButton)):  # fmt: skip
        setattr(module, name, pythonqt_class(_plain_stand_in(name, base)))
    return module


def qmrml_classes() -> dict[str, type]:
    classes = {
        "qMRMLWidget": pythonqt_class(qMRMLWidget),
        "qMRMLNodeComboBox": pythonqt_class(qMRMLNodeComboBox),
        "qMRMLTableView": pythonqt_class(qMRMLTableView),
    }
    for name, base in (("qMRMLSliderWidget", ctkSliderWidget), ("qMRMLSpinBox", QtWidgets.QDoubleSpinBox),
                       ("qMRMLRangeWidget", QtWidgets.QWidget)):  # fmt: skip
        classes[name] = pythonqt_class(_plain_stand_in(name, base))
    return classes


class UiLoader(QtUiTools.QUiLoader):
    """``qt.QUiLoader``: every widget of the .ui is made as PythonQt would give it to Python.

    Qt widgets get PythonQt's attribute-style properties; CTK/qMRML classes are the stand-ins
    above. The .ui's signal/slot connections between stand-ins (``mrmlSceneChanged`` to
    ``setMRMLScene``) are made here, since their C++ signatures do not exist in PySide6.
    """

    def __init__(self, parent=None):
        super().__init__(parent)
        self._widgets: dict[str, QtWidgets.QWidget] = {}

    def createWidget(self, className, parent=None, name=""):  # noqa: N802
        ctk = sys.modules["ctk"]
        slicer = sys.modules["slicer"]
        cls = getattr(ctk, className, None) or getattr(slicer, className, None)
        if cls is None and hasattr(QtWidgets, className):
            cls = pythonqt_class(getattr(QtWidgets, className))
        if cls is None:
            return super().createWidget(className, parent, name)
        widget = cls(parent)
        widget.setObjectName(name)
        self._widgets[name] = widget
        return widget

    def load(self, device, parent=None):
        path = device.fileName() if isinstance(device, QtCore.QFile) else None
        widget = super().load(device, parent) if parent is not None else super().load(device)
        if widget is not None and path:
            self._connect_stand_ins(path)
        return widget

    def _connect_stand_ins(self, path: str) -> None:
        import xml.etree.ElementTree as ElementTree

        for connection in ElementTree.parse(path).getroot().iter("connection"):
            sender = self._widgets.get(connection.findtext("sender"))
            receiver = self._widgets.get(connection.findtext("receiver"))
            signal = (connection.findtext("signal") or "").split("(")[0]
            slot = (connection.findtext("slot") or "").split("(")[0]
            if sender is None or receiver is None:
                continue
            if isinstance(sender, (qMRMLWidget, qMRMLNodeComboBox, ctkSliderWidget)) and hasattr(sender, signal):
                getattr(sender, signal).connect(getattr(receiver, slot))


# ------------------------------------------------------------------------------ slicer.app


class _ModuleManager(QtCore.QObject):
    moduleAboutToBeUnloaded = Signal(str)
    connect = _pythonqt_connect
    disconnect = _pythonqt_disconnect


class _Environment:
    def __init__(self, environment: dict[str, str]):
        self._environment = dict(environment)

    def keys(self) -> list[str]:
        return list(self._environment)

    def value(self, key: str) -> str:
        return self._environment.get(key, "")


class _CommandOptions:
    runPythonAndExit = False
    noMainWindow = False


class SlicerApplication(QtCore.QObject):
    """``slicer.app``: what Slicer's Python code and the module ask of qSlicerApplication.

    ``translations`` maps (context, source text) to a translation, as installed .qm files do;
    ``translated`` records every lookup so a test can see which context a text was asked in.
    """

    def __init__(self, application: QtWidgets.QApplication, scene, startup_environment: dict[str, str]):
        super().__init__()
        self._application = application
        self._scene = scene
        self._moduleManager = _ModuleManager()
        self._startupEnvironment = startup_environment
        self._commandOptions = _CommandOptions()
        self.translations: dict[tuple, str] = {}
        self.translated: list[tuple] = []
        self.applicationName = "Slicer"
        self.testing = False

    def translate(self, context: str, text: str) -> str:
        self.translated.append((context, text))
        return self.translations.get((context, text), text)

    def testingEnabled(self) -> bool:  # noqa: N802
        return self.testing

    def processEvents(self, *args) -> None:  # noqa: N802
        self._application.processEvents()

    def setOverrideCursor(self, cursor) -> None:  # noqa: N802
        QtWidgets.QApplication.setOverrideCursor(cursor)

    def restoreOverrideCursor(self) -> None:  # noqa: N802
        QtWidgets.QApplication.restoreOverrideCursor()

    def topLevelWidgets(self) -> list:  # noqa: N802
        return QtWidgets.QApplication.topLevelWidgets()

    def startupEnvironment(self) -> _Environment:  # noqa: N802
        return _Environment(self._startupEnvironment)

    def moduleManager(self) -> _ModuleManager:  # noqa: N802
        return self._moduleManager

    def commandOptions(self) -> _CommandOptions:  # noqa: N802
        return self._commandOptions

    def mrmlScene(self):  # noqa: N802
        return self._scene

    def settings(self):
        return QtCore.QSettings()

    def userSettings(self):  # noqa: N802
        return QtCore.QSettings()

    def layoutManager(self):  # noqa: N802
        return None

    def coreIOManager(self) -> CoreIOManager:  # noqa: N802
        if not hasattr(self, "_coreIOManager"):
            self._coreIOManager = CoreIOManager(self._scene)
        return self._coreIOManager

    def exit(self, status: int = 0) -> None:
        self._application.exit(status)

    def restart(self) -> None:
        """qSlicerApplication::restart ends Slicer and starts it again; here it is recorded."""
        self.restarts = getattr(self, "restarts", 0) + 1


class CoreIOManager:
    """``slicer.app.coreIOManager()`` for volume files (slicer-core's volumes logic reads them)."""

    def __init__(self, scene):
        import slicer

        self._volumesLogic = slicer.vtkSlicerVolumesLogic()
        self._volumesLogic.SetMRMLScene(scene)

    def fileType(self, fileName) -> str:  # noqa: N802
        return "VolumeFile"

    def loadNodes(self, fileType, properties, loadedNodes=None, userMessages=None) -> bool:  # noqa: N802
        if fileType != "VolumeFile":
            return False
        path = str(properties["fileName"])
        name = properties.get("name") or path.replace("\\", "/").rsplit("/", 1)[-1].split(".")[0]
        node = self._volumesLogic.AddArchetypeVolume(path, name)
        if node is None:
            return False
        if loadedNodes is not None:
            loadedNodes.AddItem(node)
        return True


class MarkupsLogic:
    """``slicer.modules.markups.logic()``: records where the slice views were asked to jump."""

    def __init__(self):
        self.jumps: list[tuple] = []

    def JumpSlicesToLocation(self, x, y, z, centered, viewGroup=-1, exclude=None):  # noqa: N802
        self.jumps.append((x, y, z, bool(centered)))


class LoadedModule:
    """``slicer.modules.<name>``: a loaded module as qSlicerAbstractCoreModule shows it."""

    def __init__(self, path: str = "", logic: Callable[[], Any] | None = None):
        self.path = path
        self._logic = logic

    def logic(self):
        return self._logic() if self._logic else None


def qt_module() -> types.ModuleType:
    return _QtModule("qt")
