"""PhotonSlicer: ask Photon, a 3D medical vision-language model, about a CT/MR volume.

This file is the thin Slicer-facing layer (module description, parameter node, widget, logic,
self-test). Helper code belongs in the ``PhotonSlicerLib`` package (tested under plain
Python): Slicer loads every ``.py`` directly in this folder as a module. Nothing here imports
torch; the model runs in the separate Photon backend process.
"""

import contextlib
import enum
import logging
import os
import time
import unittest
from typing import Annotated, Union

import qt
import slicer
import vtk
from PhotonSlicerLib import display, history, panel, volumes
from PhotonSlicerLib.backend import DEFAULT_URL, BackendError, ClientBackend
from PhotonSlicerLib.local_backend import ERROR, READY, STARTING, STOPPED, LocalBackendProcess, default_python
from PhotonSlicerLib.logic import PhotonAskLogic
from PhotonSlicerLib.tasks import AskTask, BackgroundCall
from slicer import vtkMRMLColorTableNode, vtkMRMLPETProceduralColorNode, vtkMRMLScalarVolumeNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import WithinRange, parameterNodeWrapper
from slicer.parameterNodeWrapper.guiConnectors import QLineEditToStrConnector, QTextEditPlainTextToStrConnector
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

#: Only the backend's Python path is remembered between sessions (never a token).
PYTHON_SETTING = "PhotonSlicer/BackendPython"
ASK_POLL_MS = 200
BACKEND_POLL_MS = 500

#
# PhotonSlicer
#


class PhotonSlicer(ScriptedLoadableModule):
    """Module description shown in Slicer's module list and help panel."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("Photon")
        # Keep equal to EXTENSION_CATEGORY in the top-level CMakeLists.txt. Slicer translates
        # category names in this context (as its module template does).
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Quantification")]
        self.parent.dependencies = []
        self.parent.contributors = ["PhotonSlicer contributors"]
        self.parent.helpText = _(
            "Ask a question about a CT or MR volume and get an answer from Photon, a 3D medical "
            "vision-language model, with a heatmap of the image regions it kept to answer, overlaid on "
            "the slice views.<br><b>Backend</b>: <i>Local</i> starts the bundled backend with the Python "
            "you choose (it needs PyTorch and PhotonLib; a new access token is made at every start and "
            "never saved); <i>Remote URL</i> uses a backend another computer runs (type its token). "
            "<b>Question</b>: pick the volume, type or choose an example question, press Ask (Cancel "
            "stops it; a partial answer is kept and marked cancelled). <b>Heatmap</b>: show/hide, "
            "opacity, colour map, threshold, jump to the most-kept region. <b>History</b>: every "
            "question about this volume, saved with the scene; select a row to see its heatmap again. "
            "Answers are for research use, not a diagnosis. "
            '<a href="https://github.com/photonslicer/PhotonSlicer/blob/main/docs/slicer.md">Documentation</a>.'
        )
        self.parent.acknowledgementText = _(
            "PhotonSlicer is an open-source extension built by the PhotonSlicer contributors "
            "on top of 3D Slicer's scripted module template. Photon answers are for research "
            "use and are not a medical diagnosis."
        )


#
# PhotonSlicerParameterNode
#


class BackendMode(enum.Enum):
    LOCAL = "local"
    REMOTE = "remote"

    def label(self) -> str:
        """Text in the Backend combo box (parameterNodeWrapper shows enums by this)."""
        return {"local": _("Local (this computer)"), "remote": _("Remote URL")}[self.value]


@parameterNodeWrapper
class PhotonSlicerParameterNode:
    """What the panel shows, saved with the scene. No token: tokens live in memory only.

    inputVolume - the volume to ask about.
    question - the question box.
    maxNewTokens - the longest answer asked for.
    backendMode - local (bundled backend started here) or remote URL.
    backendUrl - the remote backend's address.
    showHeatmap, heatmapOpacity, heatmapThreshold, heatmapColor - how the heatmap is shown.
    """

    inputVolume: vtkMRMLScalarVolumeNode
    question: str = ""
    maxNewTokens: Annotated[int, WithinRange(8, 1024)] = 256
    backendMode: BackendMode = BackendMode.LOCAL
    backendUrl: str = DEFAULT_URL
    showHeatmap: bool = True
    heatmapOpacity: Annotated[float, WithinRange(0.0, 1.0)] = display.DEFAULT_OPACITY
    heatmapThreshold: Annotated[float, WithinRange(0.0, 1.0)] = display.DEFAULT_THRESHOLD
    # typing.Union, not "|": Slicer's node combo box connector recognises only typing.Union.
    heatmapColor: Union[vtkMRMLColorTableNode, vtkMRMLPETProceduralColorNode, None]  # noqa: UP007


#
# Binding the panel to the parameter node
#


class KeepCursorLineEditConnector(QLineEditToStrConnector):
    """Slicer's line edit connector, writing the text only when it differs from the widget's.

    Slicer writes every parameter back to its widget after each change; ``setText`` moves the
    cursor to the end, so on Slicer 5.6/5.8 typing in the middle of the URL jumped to its end.
    """

    def write(self, value: str) -> None:
        if value != self._widget.text:
            super().write(value)


class KeepCursorTextEditConnector(QTextEditPlainTextToStrConnector):
    """Slicer's text edit connector, writing the text only when it differs from the widget's.

    ``setPlainText`` puts the cursor at the start: with every keystroke written back (all
    Slicer releases), "Is there a lesion?" was typed as "?noisel a ereht sI".
    """

    def write(self, value: str) -> None:
        if value != self._widget.toPlainText():
            super().write(value)


def connectParameterNodeToGui(parameterNode, ui) -> int:
    """Bind every widget of ``ui`` with a ``SlicerParameterName`` to ``parameterNode``; returns the tag.

    Like ``parameterNode.connectGui(ui)``, with two differences: text widgets use the
    connectors above, and the tag for ``disconnectGui`` is always returned (``connectGui``
    returns None on Slicer 5.6/5.8, so a binding could never be released and they piled up
    with every ``enter()``).
    """
    mapping = {}
    for widget in vars(ui).values():
        name = widget.property("SlicerParameterName") if hasattr(widget, "property") else None
        if not name:
            continue
        if type(widget) == qt.QTextEdit:  # noqa: E721  (exact type, as Slicer's connectors check it)
            mapping[name] = KeepCursorTextEditConnector(widget)
        elif type(widget) == qt.QLineEdit:  # noqa: E721
            mapping[name] = KeepCursorLineEditConnector(widget)
        else:
            mapping[name] = widget
    return parameterNode.connectParametersToGui(mapping)


@contextlib.contextmanager
def showErrors(message: str):
    """``slicer.util.tryWithErrorDisplay`` for timer callbacks: show the error, do not re-raise it.

    A raised error in a Qt timer callback reaches no one (only the Python console) and skips the
    rest of the callback; the error box is what the user sees.
    """
    try:
        with slicer.util.tryWithErrorDisplay(message):
            yield
    except Exception:
        logging.debug("%s (shown to the user)", message, exc_info=True)


#
# PhotonSlicerWidget
#


class PhotonSlicerWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The panel: binds the .ui to the parameter node, runs questions off the main thread, shows results."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self.ui = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._task = None  # the AskTask being answered
        self._localBackend = None  # LocalBackendProcess once started
        self._backendCheck = None  # BackgroundCall checking a backend (Connect, or local ready)
        self._checkedBackend = None  # the ClientBackend that check is about
        self._localCheckStarted = False  # one check per local launch, even if it fails
        self._backendState = STOPPED
        self._backendMessage = _("Not connected.")
        self._lastHeatmapSettings = None
        self._observedTable = None

    # ------------------------------------------------------------------ set-up
    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/PhotonSlicer.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        # The .ui connects the top widget's mrmlSceneChanged signal to every MRML widget.
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = PhotonSlicerLogic()

        self.ui.exampleQuestionsComboBox.clear()
        for item in panel.example_items():
            self.ui.exampleQuestionsComboBox.addItem(item)
        self.ui.backendPythonLineEdit.text = str(qt.QSettings().value(PYTHON_SETTING, "") or "")
        self.ui.backendPythonLineEdit.placeholderText = _("e.g. {python}").format(python=default_python())

        self._askTimer = qt.QTimer()
        self._askTimer.setInterval(ASK_POLL_MS)
        self._askTimer.connect("timeout()", self._pollAsk)
        self._backendTimer = qt.QTimer()
        self._backendTimer.setInterval(BACKEND_POLL_MS)
        self._backendTimer.connect("timeout()", self._pollBackend)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.exampleQuestionsComboBox.connect("activated(int)", self.onExampleChosen)
        self.ui.askButton.connect("clicked(bool)", self.onAskButton)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancelButton)
        self.ui.startBackendButton.connect("clicked(bool)", self.onStartBackend)
        self.ui.stopBackendButton.connect("clicked(bool)", self.onStopBackend)
        self.ui.connectButton.connect("clicked(bool)", self.onConnectButton)
        self.ui.showBackendLogButton.connect("clicked(bool)", self.onShowBackendLog)
        self.ui.backendPythonLineEdit.connect("editingFinished()", self._savePythonSetting)
        self.ui.backendTokenLineEdit.connect("textChanged(QString)", self._forgetRemoteBackend)
        self.ui.jumpToMostKeptButton.connect("clicked(bool)", self.onJumpToMostKept)
        self.ui.historyTableView.selectionModel().connect(
            "currentRowChanged(QModelIndex,QModelIndex)", self.onHistoryRowSelected
        )

        self.initializeParameterNode()

    def cleanup(self) -> None:
        """Slicer closes: stop timers, cancel the question, stop the local backend (it holds the token)."""
        self.removeObservers()
        for timer in (getattr(self, "_askTimer", None), getattr(self, "_backendTimer", None)):
            if timer is not None:
                timer.stop()
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if self._localBackend is not None:
            self._localBackend.stop(wait=3.0)
            self._localBackend = None

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        # Questions keep running while another module is shown; only the GUI binding is released.
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)

    def onSceneStartClose(self, caller, event) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
            self._askTimer.stop()
            self._updateButtons()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            firstVolumeNode = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if firstVolumeNode:
                self._parameterNode.inputVolume = firstVolumeNode
        if not self._parameterNode.heatmapColor:
            for colorNodeId in display.DEFAULT_COLOR_NODE_IDS:
                colorNode = slicer.mrmlScene.GetNodeByID(colorNodeId)
                if colorNode is not None:
                    self._parameterNode.heatmapColor = colorNode
                    break

    def setParameterNode(self, inputParameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
        self._parameterNode = inputParameterNode
        self._lastHeatmapSettings = None
        if self._parameterNode:
            # Widgets carrying the dynamic property "SlicerParameterName" in the .ui are bound.
            self._parameterNodeGuiTag = connectParameterNodeToGui(self._parameterNode, self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
            self._onParameterNodeModified()

    def _onParameterNodeModified(self, caller=None, event=None) -> None:
        self._updateBackendSection()
        self._updateHistoryView()
        self._applyHeatmapSettings()
        self._updateButtons()

    # ------------------------------------------------------------------ backend
    def _mode(self):
        return self._parameterNode.backendMode if self._parameterNode else BackendMode.LOCAL

    def _updateBackendSection(self) -> None:
        local = self._mode() == BackendMode.LOCAL
        for widget in (self.ui.backendPythonLabel, self.ui.backendPythonLineEdit):
            widget.visible = local
        for widget in (self.ui.backendUrlLabel, self.ui.backendUrlLineEdit, self.ui.backendTokenLabel,
                       self.ui.backendTokenLineEdit, self.ui.connectButton):  # fmt: skip
            widget.visible = not local
        self.ui.startBackendButton.visible = local
        self.ui.stopBackendButton.visible = local
        running = self._localBackend is not None and self._localBackend.running
        self.ui.startBackendButton.enabled = local and not running
        self.ui.stopBackendButton.enabled = local and running
        self.ui.backendStatusLabel.text = panel.backend_status_text(
            self._backendState, self._backendMessage, self._task is not None
        )

    def _setBackendStatus(self, state: str, message: str) -> None:
        self._backendState, self._backendMessage = state, message
        if self._parameterNode:
            self._updateBackendSection()

    def _savePythonSetting(self) -> None:
        qt.QSettings().setValue(PYTHON_SETTING, self.ui.backendPythonLineEdit.text.strip())

    def _forgetRemoteBackend(self, text=None) -> None:
        """A new token or URL: the next question connects afresh (the old client kept the old token)."""
        if self._mode() == BackendMode.REMOTE:
            self.logic.backend = None

    def onStartBackend(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("The local Photon backend could not be started."), waitCursor=True):
            self._savePythonSetting()
            python = self.ui.backendPythonLineEdit.text.strip() or default_python()
            # PythonSlicer runs in Slicer's environment; any other Python gets the environment
            # Slicer was started from, without Slicer's own Python settings.
            slicerPython = os.path.basename(python).lower().startswith("pythonslicer")
            baseEnv = os.environ if slicerPython else slicer.util.startupEnvironment()
            self._localBackend = LocalBackendProcess(python, base_env=baseEnv)
            self.logic.backend = None
            self._localBackend.start()
            self._localCheckStarted = False
            self._setBackendStatus(STARTING, _("Starting the backend ..."))
            self._backendTimer.start()

    def onStopBackend(self) -> None:
        if self._localBackend is None:
            return
        if self._task is not None:
            self._task.cancel()
        status = self._localBackend.stop()  # returns at once; the timer sees it end (or kills it)
        self.logic.backend = None
        self._setBackendStatus(status.state, _("Stopping ..."))
        self._backendTimer.start()

    def _pollBackend(self) -> None:
        """Timer: follow the local backend through starting, ready, stopped or error (no network here)."""
        if self._localBackend is None:
            self._backendTimer.stop()
            return
        previous = self._backendState
        status = self._localBackend.poll()
        if status.state == READY and not self._localCheckStarted:
            # Ready: connect with this launch's token; the check (a network call) runs in a thread.
            self._localCheckStarted = True
            backend = ClientBackend(status.url, self._localBackend.token)
            self._backendCheck = BackgroundCall(backend.check, url=status.url)
            self._checkedBackend = backend
        if self._backendCheck is not None and self._backendCheck.finished:
            self._finishBackendCheck()
            return
        if status.state in (STOPPED, ERROR):
            self._backendTimer.stop()
            self.logic.backend = None
        if status.state != READY or self._backendCheck is not None:
            self._setBackendStatus(status.state, status.message)
        if status.state == ERROR and previous != ERROR:
            with showErrors(_("The local Photon backend stopped.")):
                raise BackendError(status.message)

    def onConnectButton(self) -> None:
        """Remote mode: check URL and token in a thread (a remote host may take long to answer)."""
        url = self._parameterNode.backendUrl.strip()
        token = self.ui.backendTokenLineEdit.text.strip() or None
        backend = ClientBackend(url, token)
        self.logic.backend = None
        self._checkedBackend = backend
        self._backendCheck = BackgroundCall(backend.check, url=url)
        self._setBackendStatus(STARTING, _("Connecting to {url} ...").format(url=url))
        self._backendTimer.start()

    def _finishBackendCheck(self) -> None:
        check, self._backendCheck = self._backendCheck, None
        if self._localBackend is None or not self._localBackend.running:
            self._backendTimer.stop()
        try:
            info = check.result()
        except BackendError as error:
            self._setBackendStatus(ERROR, str(error))
            logging.warning("Photon backend check failed: %s", error.detail or error)
            with showErrors(_("Could not connect to the Photon backend.")):
                raise
            return
        self.logic.backend = self._checkedBackend
        self._setBackendStatus(
            READY, _("Ready: {server} at {url}.").format(server=panel.server_text(info), url=self._checkedBackend.url)
        )

    def _backendForAsk(self):
        """The backend a new question goes to; no network call here (the worker thread makes them)."""
        if self._mode() == BackendMode.LOCAL:
            if self._localBackend is None or not self._localBackend.running or self._localBackend.url is None:
                raise BackendError(
                    _(
                        "The local Photon backend is not running. Press Start in the Backend section "
                        "(or choose Remote URL)."
                    )  # fmt: skip
                )
            if self.logic.backend is None or self.logic.backend.url != self._localBackend.url:
                self.logic.backend = ClientBackend(self._localBackend.url, self._localBackend.token)
        else:
            url = self._parameterNode.backendUrl.strip()
            if self.logic.backend is None or self.logic.backend.url != url.rstrip("/"):
                self.logic.backend = ClientBackend(url, self.ui.backendTokenLineEdit.text.strip() or None)
        return self.logic.backend

    def onShowBackendLog(self) -> None:
        if self._mode() == BackendMode.REMOTE:
            text = _("The remote backend keeps its log on the computer that runs it (photon serve's output).")
            path = ""
        elif self._localBackend is None:
            text, path = _("The local backend has not been started in this Slicer session."), ""
        else:
            text, path = self._localBackend.log_text(), str(self._localBackend.log_path)
        dialog = qt.QDialog(slicer.util.mainWindow())
        dialog.setWindowTitle(_("Photon backend log"))
        dialog.resize(900, 600)
        layout = qt.QVBoxLayout(dialog)
        if path:
            pathLabel = qt.QLabel(_("Log file: {path}").format(path=path))
            pathLabel.setTextInteractionFlags(qt.Qt.TextSelectableByMouse)
            layout.addWidget(pathLabel)
        textBox = qt.QPlainTextEdit()
        textBox.readOnly = True
        textBox.setPlainText(text)
        textBox.moveCursor(qt.QTextCursor.End)
        layout.addWidget(textBox)
        buttons = qt.QDialogButtonBox(qt.QDialogButtonBox.Close)
        buttons.connect("rejected()", dialog.reject)
        layout.addWidget(buttons)
        dialog.exec_()

    # ------------------------------------------------------------------ asking
    def onExampleChosen(self, index: int) -> None:
        question = panel.question_of_item(self.ui.exampleQuestionsComboBox.itemText(index))
        if question and self._parameterNode:
            self._parameterNode.question = question
        self.ui.exampleQuestionsComboBox.setCurrentIndex(0)

    def _updateButtons(self) -> None:
        asking = self._task is not None
        ready = bool(self._parameterNode and self._parameterNode.inputVolume and self._parameterNode.question.strip())
        self.ui.askButton.enabled = ready and not asking
        self.ui.askButton.toolTip = (
            _("Send the volume and the question to the backend.")
            if ready
            else _("Select a volume and type a question.")
        )
        self.ui.cancelButton.enabled = asking
        heatmap = self._currentHeatmap()
        self.ui.jumpToMostKeptButton.enabled = heatmap is not None

    def onAskButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Photon could not be asked."), waitCursor=True):
            volume = self._parameterNode.inputVolume
            question = self._parameterNode.question.strip()
            self._backendForAsk()
            # Reads the voxels here (main thread); upload, answer and heatmap download run in a thread.
            self._task = AskTask(self.logic, volume, question, max_new_tokens=self._parameterNode.maxNewTokens).start()
            self.ui.answerTextEdit.setPlainText("")
            self.ui.tokensKeptLabel.text = "-"
            self.ui.timingsLabel.text = "-"
            self.ui.askProgressBar.setRange(0, 0)  # busy until the first token
            self.ui.askStatusLabel.text = panel.progress_text(0, self._parameterNode.maxNewTokens, False)
            self._askTimer.start()
            self._updateButtons()
            self._updateBackendSection()

    def onCancelButton(self) -> None:
        if self._task is not None:
            self._task.cancel()  # returns at once; the poll below sees the task end
            self.ui.cancelButton.enabled = False
            self.ui.askStatusLabel.text = panel.progress_text(0, 0, True)

    def _pollAsk(self) -> None:
        """Timer: progress while answering; on the main thread, add the heatmap and history row at the end."""
        task = self._task
        if task is None:
            self._askTimer.stop()
            return
        progress = task.poll()
        maximum = task.max_new_tokens or 0
        if not progress.finished:
            if progress.tokens_generated and maximum:
                self.ui.askProgressBar.setRange(0, maximum)
                self.ui.askProgressBar.value = min(progress.tokens_generated, maximum)
            if progress.partial_answer:
                self.ui.answerTextEdit.setPlainText(progress.partial_answer)
            self.ui.askStatusLabel.text = panel.progress_text(
                progress.tokens_generated, maximum, progress.cancel_requested
            )
            return
        self._askTimer.stop()
        self._task = None
        self.ui.askProgressBar.setRange(0, max(maximum, 1))
        self.ui.askProgressBar.value = 0
        self._updateButtons()
        self._updateBackendSection()
        if progress.state == "cancelled":
            self.ui.askStatusLabel.text = progress.error
            return
        self.ui.askStatusLabel.text = ""
        with showErrors(_("Photon could not answer.")):
            answer = task.finish()
            self._showAnswer(answer.answer, answer.stopped, answer.tokens_kept, answer.tokens_total, answer.timings)
            self._lastHeatmapSettings = None
            self._updateHistoryView(selectRow=answer.history_row)
            self._applyHeatmapSettings()
            self._updateButtons()
            self.ui.askStatusLabel.text = _("Cancelled: the partial answer is kept.") if answer.stopped else ""

    def _showAnswer(self, text, stopped, tokensKept, tokensTotal, timings) -> None:
        self.ui.answerTextEdit.setPlainText(panel.answer_text(text, stopped))
        self.ui.tokensKeptLabel.text = panel.tokens_text(tokensKept, tokensTotal)
        self.ui.timingsLabel.text = panel.timings_text(timings or {})

    # ------------------------------------------------------------------ heatmap
    def _currentHeatmap(self):
        volume = self._parameterNode.inputVolume if self._parameterNode else None
        return volume.GetNodeReference(volumes.HEATMAP_REFERENCE_ROLE) if volume else None

    def _applyHeatmapSettings(self) -> None:
        """Show/hide, opacity, colour and threshold of the selected volume's current heatmap."""
        heatmap = self._currentHeatmap()
        if heatmap is None or self._parameterNode is None:
            return
        parameters = self._parameterNode
        colorNode = parameters.heatmapColor
        settings = (heatmap.GetID(), parameters.showHeatmap, parameters.heatmapOpacity, parameters.heatmapThreshold,
                    colorNode.GetID() if colorNode else None)  # fmt: skip
        if settings == self._lastHeatmapSettings:
            return  # e.g. typing in the question box
        self._lastHeatmapSettings = settings
        display.style_heatmap(heatmap, settings[4], parameters.heatmapThreshold)
        if parameters.showHeatmap:
            display.show_heatmap(parameters.inputVolume, heatmap, parameters.heatmapOpacity)
        else:
            display.hide_heatmap(slicer.mrmlScene, heatmap)

    def onJumpToMostKept(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Could not jump to the heatmap's maximum.")):
            heatmap = self._currentHeatmap()
            if heatmap is None:
                raise BackendError(_("Ask a question first: this volume has no heatmap yet."))
            x, y, z = volumes.most_kept_position_world(heatmap)
            slicer.modules.markups.logic().JumpSlicesToLocation(x, y, z, True)

    # ------------------------------------------------------------------ history
    def _updateHistoryView(self, selectRow=None) -> None:
        volume = self._parameterNode.inputVolume if self._parameterNode else None
        table = history.history_table(volume, create=False) if volume else None
        if table is not self._observedTable:
            self._observedTable = table
            self.ui.historyTableView.setMRMLTableNode(table)
            if table is not None:
                self.ui.historyTableView.setColumnHidden(history.COLUMN_NAMES.index("heatmap node id"), True)
        if selectRow is not None and table is not None:
            self.ui.historyTableView.selectionModel().blockSignals(True)
            self.ui.historyTableView.selectRow(selectRow)
            self.ui.historyTableView.selectionModel().blockSignals(False)

    def onHistoryRowSelected(self, current, previous=None) -> None:
        volume = self._parameterNode.inputVolume if self._parameterNode else None
        table = history.history_table(volume, create=False) if volume else None
        if current is None or not current.isValid():
            return
        # The view sorts through a proxy model: map back to the table's own row.
        proxy = self.ui.historyTableView.sortFilterProxyModel()
        row = proxy.mapToSource(current).row() if proxy is not None else current.row()
        if table is None or not 0 <= row < table.GetTable().GetNumberOfRows():
            return
        entry = history.entries(table)[row]
        self._showAnswer(entry.answer, entry.cancelled, entry.tokens_kept, entry.tokens_total, {})
        heatmap = self.logic.show_history_row(volume, row, self._parameterNode.heatmapOpacity)
        self._lastHeatmapSettings = None
        if heatmap is None:
            self.ui.askStatusLabel.text = _("The heatmap of this question was deleted from the scene.")
        else:
            self._parameterNode.showHeatmap = True
            self._applyHeatmapSettings()
        self._updateButtons()


#
# PhotonSlicerLogic
#


class PhotonSlicerLogic(ScriptedLoadableModuleLogic, PhotonAskLogic):
    """Work that runs without the GUI; the body lives in ``PhotonSlicerLib.logic`` (tested under plain Python).

    From Slicer's Python console::

        logic = slicer.util.getModuleLogic("PhotonSlicer")  # or PhotonSlicerLogic()
        logic.connect("http://127.0.0.1:8765", token)
        answer = logic.ask(getNode("CTChest"), "Is there a pleural effusion?")
        print(answer.answer, answer.tokens_kept, answer.tokens_total, answer.heatmap_node.GetID())
    """

    def __init__(self, **options) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        PhotonAskLogic.__init__(self, **options)

    def getParameterNode(self):
        return PhotonSlicerParameterNode(super().getParameterNode())


#
# PhotonSlicerTest
#


class PhotonSlicerTest(ScriptedLoadableModuleTest):
    """Self-test run by Slicer's "Reload and Test" and by ctest (slicer_add_python_unittest).

    It needs a backend: set PHOTONSLICER_TEST_URL (and PHOTONSLICER_TEST_TOKEN) to reach a
    running one, or PHOTONSLICER_TEST_PYTHON to the Python that has PhotonLib's backend
    dependencies (default: PythonSlicer) to start the bundled one. See docs/slicer.md.
    """

    #: Short answers keep the test quick on a CPU (the answer's content is not checked).
    MAX_NEW_TOKENS = 8

    def setUp(self):
        """Start every test from an empty scene."""
        slicer.mrmlScene.Clear()

    def runTest(self):
        """Run all tests of this module (Slicer's "Reload and Test" calls this, without unittest's runner)."""
        for test in (self.test_PhotonSlicerLogicInstantiates, self.test_PhotonSlicerAskGivesHeatmapOnTheVolumeGrid):
            self.setUp()
            try:
                test()
            except unittest.SkipTest as skipped:
                # No runner here to record a skip: report it, so it does not read as a failure.
                logging.warning("%s skipped: %s", test.__name__, skipped)
                self.delayDisplay(f"{test.__name__} skipped: {skipped}")

    def test_PhotonSlicerLogicInstantiates(self):
        """The logic and the parameter node work without the GUI; no token field exists to be saved."""
        logic = PhotonSlicerLogic()
        self.assertIsInstance(logic, ScriptedLoadableModuleLogic)
        self.assertIsInstance(logic, PhotonAskLogic)
        parameters = logic.getParameterNode()
        self.assertEqual(parameters.backendMode, BackendMode.LOCAL)
        self.assertFalse([name for name in parameters.allParameters if name.lower().endswith("token")])
        self.assertTrue(len(panel.example_items()) > len(panel.EXAMPLE_QUESTIONS))

    def test_PhotonSlicerAskGivesHeatmapOnTheVolumeGrid(self):
        """Load a volume, reach a backend, ask, and check the heatmap lies on the volume's exact grid."""
        self.delayDisplay("Loading the bundled example CT")
        examplePath = os.path.join(os.path.dirname(volumes.__file__), "..", "..", "PhotonLib", "photonlib",
                                   "examples", "phantom_ct.nrrd")  # fmt: skip
        if os.path.isfile(examplePath):
            volumeNode = slicer.util.loadVolume(os.path.normpath(examplePath))
        else:  # not shipped in this build: Slicer's sample data (downloads once)
            import SampleData

            volumeNode = SampleData.downloadSample("CTChest")
        self.assertIsNotNone(volumeNode)

        localBackend = None
        url = os.environ.get("PHOTONSLICER_TEST_URL")
        token = os.environ.get("PHOTONSLICER_TEST_TOKEN")
        try:
            if not url:
                self.delayDisplay("Starting the bundled backend")
                python = os.environ.get("PHOTONSLICER_TEST_PYTHON") or default_python()
                env = os.environ if os.path.basename(python).lower().startswith("pythonslicer") else None
                localBackend = LocalBackendProcess(python, base_env=env or slicer.util.startupEnvironment())
                localBackend.start()
                deadline = time.monotonic() + 600
                while (status := localBackend.poll()).state == STARTING and time.monotonic() < deadline:
                    slicer.app.processEvents()
                    time.sleep(0.2)
                if status.state != READY:
                    self.skipTest(f"no backend to test against ({status.message}); see docs/slicer.md")
                url, token = status.url, localBackend.token

            logic = PhotonSlicerLogic()
            logic.connect(url, token)
            self.delayDisplay("Asking")
            task = AskTask(logic, volumeNode, "Is there a lesion in the liver?", max_new_tokens=self.MAX_NEW_TOKENS)
            task.start()
            deadline = time.monotonic() + 600
            while not task.poll().finished:  # the GUI stays responsive while the worker waits
                self.assertLess(time.monotonic(), deadline, "no answer within 10 minutes")
                slicer.app.processEvents()
                time.sleep(0.05)
            answer = task.finish()

            heatmap = answer.heatmap_node
            self.assertTrue(heatmap.IsA("vtkMRMLScalarVolumeNode"))
            self.assertEqual(heatmap.GetImageData().GetDimensions(), volumeNode.GetImageData().GetDimensions())
            inputMatrix, heatmapMatrix = vtk.vtkMatrix4x4(), vtk.vtkMatrix4x4()
            volumeNode.GetIJKToRASMatrix(inputMatrix)
            heatmap.GetIJKToRASMatrix(heatmapMatrix)
            for row in range(4):
                for column in range(4):
                    self.assertEqual(heatmapMatrix.GetElement(row, column), inputMatrix.GetElement(row, column))
            self.assertTrue(0 < answer.tokens_kept <= answer.tokens_total)
            for composite in display.slice_composite_nodes(slicer.mrmlScene):  # every slice view shows it
                self.assertEqual(composite.GetForegroundVolumeID(), heatmap.GetID())
            entries = history.entries(logic.history_table(volumeNode))
            self.assertEqual([entry.question for entry in entries], ["Is there a lesion in the liver?"])

            # The token is in no node of the scene as it would be saved.
            if token:
                slicer.mrmlScene.SetSaveToXMLString(1)
                slicer.mrmlScene.Commit()
                self.assertNotIn(token, slicer.mrmlScene.GetSceneXMLString())
            self.delayDisplay("Test passed")
        finally:
            if localBackend is not None:
                localBackend.stop(wait=10)
