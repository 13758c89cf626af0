"""The PhotonSlicer panel's behaviour: what ``PhotonSlicerWidget`` (in PhotonSlicer.py) shows and does.

Runs inside Slicer (``qt``, ``slicer``); the harness of ``Testing/slicer/slicer_harness.py``
opens it on each supported release's own Python package. Everything that can work without Qt
lives in the other modules of this package and is tested under plain Python: the backend
connection's states (:mod:`.connection`), the wording (:mod:`.panel`), the settings
(:mod:`.settings`), the backend set-up (:mod:`.setup`), asking (:mod:`.tasks`, :mod:`.logic`).
"""

from __future__ import annotations

import contextlib
import logging
import os

import qt
import slicer
import vtk
from slicer.i18n import tr as _

from . import connection, display, history, panel, volumes
from .backend import BackendError
from .local_backend import default_python
from .parameters import BackendMode, connectParameterNodeToGui
from .settings import BackendSettings
from .tasks import AskTask

ASK_POLL_MS = 200
BACKEND_POLL_MS = 500


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


class PhotonSlicerPanel:
    """The panel: binds the .ui to the parameter node, runs questions off the main thread, shows results.

    Args:
        widget: the module's ``PhotonSlicerWidget`` (its ``layout``, ``resourcePath`` and ``parent``).
        logic: the module's logic (a ``PhotonAskLogic``).
    """

    def __init__(self, widget, logic) -> None:
        self.widget = widget
        self.logic = logic
        self.ui = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._task = None  # the AskTask being answered
        self.settings = BackendSettings(qt.QSettings())
        self.connection = connection.BackendConnection(setup_check=_setupCheck())
        self._lastHeatmapSettings = None
        self._observedTable = None
        self._observations = []

    # ------------------------------------------------------------------ set-up
    def setup(self) -> None:
        uiWidget = slicer.util.loadUI(self.widget.resourcePath("UI/PhotonSlicer.ui"))
        self.widget.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        # The .ui connects the top widget's mrmlSceneChanged signal to every MRML widget.
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.ui.exampleQuestionsComboBox.clear()
        for item in panel.example_items():
            self.ui.exampleQuestionsComboBox.addItem(item)
        self.ui.backendPythonLineEdit.text = self.settings.python
        self.ui.backendPythonLineEdit.placeholderText = _("e.g. {python}").format(python=default_python())

        self._askTimer = qt.QTimer()
        self._askTimer.setInterval(ASK_POLL_MS)
        self._askTimer.connect("timeout()", self._pollAsk)
        self._backendTimer = qt.QTimer()
        self._backendTimer.setInterval(BACKEND_POLL_MS)
        self._backendTimer.connect("timeout()", self._pollBackend)

        self.widget.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.widget.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.exampleQuestionsComboBox.connect("activated(int)", self.onExampleChosen)
        self.ui.askButton.connect("clicked(bool)", self.onAskButton)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancelButton)
        self.ui.startBackendButton.connect("clicked(bool)", self.onStartBackend)
        self.ui.stopBackendButton.connect("clicked(bool)", self.onStopBackend)
        self.ui.connectButton.connect("clicked(bool)", self.onConnectButton)
        self.ui.showBackendLogButton.connect("clicked(bool)", self.onShowBackendLog)
        self.ui.backendPythonLineEdit.connect("editingFinished()", self._onPythonChosen)
        self.ui.backendTokenLineEdit.connect("textChanged(QString)", self._forgetRemoteBackend)
        self.ui.jumpToMostKeptButton.connect("clicked(bool)", self.onJumpToMostKept)
        self.ui.historyTableView.selectionModel().connect(
            "currentRowChanged(QModelIndex,QModelIndex)", self.onHistoryRowSelected
        )

        self.initializeParameterNode()
        self._checkLocalSetup()

    def cleanup(self) -> None:
        """Slicer closes: stop timers, cancel the question, stop the local backend (it holds the token)."""
        for timer in (getattr(self, "_askTimer", None), getattr(self, "_backendTimer", None)):
            if timer is not None:
                timer.stop()
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self.connection.shutdown(wait=3.0)

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        # Questions keep running while another module is shown; only the GUI binding is released.
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.widget.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)

    def onSceneStartClose(self, caller, event) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
            self._askTimer.stop()
            self._updateButtons()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.widget.parent.isEntered:
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
            self.widget.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
        self._parameterNode = inputParameterNode
        self._lastHeatmapSettings = None
        if self._parameterNode:
            # Widgets carrying the dynamic property "SlicerParameterName" in the .ui are bound.
            self._parameterNodeGuiTag = connectParameterNodeToGui(self._parameterNode, self.ui)
            self.widget.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
            self._onParameterNodeModified()

    def _onParameterNodeModified(self, caller=None, event=None) -> None:
        self.connection.set_mode(connection.LOCAL if self._mode() == BackendMode.LOCAL else connection.REMOTE)
        self._updateBackendSection()
        self._updateHistoryView()
        self._applyHeatmapSettings()
        self._updateButtons()

    # ------------------------------------------------------------------ backend
    def _mode(self):
        return self._parameterNode.backendMode if self._parameterNode else BackendMode.LOCAL

    def _python(self) -> str:
        return self.ui.backendPythonLineEdit.text.strip() or default_python()

    def _updateBackendSection(self) -> None:
        local = self._mode() == BackendMode.LOCAL
        for widget in (self.ui.backendPythonLabel, self.ui.backendPythonLineEdit):
            widget.visible = local
        for widget in (self.ui.backendUrlLabel, self.ui.backendUrlLineEdit, self.ui.backendTokenLabel,
                       self.ui.backendTokenLineEdit, self.ui.connectButton):  # fmt: skip
            widget.visible = not local
        self.ui.startBackendButton.visible = local
        self.ui.stopBackendButton.visible = local
        running = self.connection.local_running
        self.ui.startBackendButton.enabled = local and not running
        self.ui.stopBackendButton.enabled = local and running
        self.ui.backendStatusLabel.text = panel.backend_status_text(
            self.connection.state, self.connection.message, self._task is not None
        )

    def _onPythonChosen(self) -> None:
        self.settings.python = self.ui.backendPythonLineEdit.text
        self._checkLocalSetup()

    def _checkLocalSetup(self) -> None:
        """Check the chosen Python (in a thread): the status says "not set up" and what to do if it cannot run the backend."""
        python = self._python()
        self.connection.check_local_setup(python, self._environmentFor(python))
        self._followConnection()

    @staticmethod
    def _environmentFor(python: str):
        from .local_backend import python_environment

        return python_environment(python, os.environ, slicer.util.startupEnvironment())

    def _forgetRemoteBackend(self, text=None) -> None:
        """A new token or URL: the next question connects afresh (the old client kept the old token)."""
        self.connection.forget_remote()
        self._updateBackendSection()

    def onStartBackend(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("The local Photon backend could not be started."), waitCursor=True):
            self.settings.python = self.ui.backendPythonLineEdit.text
            self.connection.start_local(
                self._python(), startup_env=slicer.util.startupEnvironment(), device=self.settings.device
            )
            self._followConnection()

    def onStopBackend(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self.connection.stop_local()
        self._followConnection()

    def onConnectButton(self) -> None:
        """Remote mode: check URL and token in a thread (a remote host may take long to answer)."""
        with slicer.util.tryWithErrorDisplay(_("Could not connect to the Photon backend.")):
            self.connection.connect_remote(
                self._parameterNode.backendUrl, self.ui.backendTokenLineEdit.text.strip() or None
            )
            self._followConnection()

    def _followConnection(self) -> None:
        self._updateBackendSection()
        if self.connection.needs_polling:
            self._backendTimer.start()

    def _pollBackend(self) -> None:
        """Timer: follow the backend through its states (no network here: checks run in threads)."""
        wasReady = self.connection.state == connection.READY
        status = self.connection.poll()
        if not self.connection.needs_polling:
            self._backendTimer.stop()
        if self._parameterNode:
            self._updateBackendSection()
        if status.state == connection.READY and not wasReady and status.mode == connection.REMOTE:
            self.settings.add_recent_url(status.url)
        if status.failure:
            logging.warning("Photon backend: %s", status.failure)
            title = (
                _("The local Photon backend is not available.")
                if status.mode == connection.LOCAL
                else _("Could not connect to the Photon backend.")
            )
            with showErrors(title):
                raise BackendError(status.failure)

    def _backendForAsk(self):
        """The backend a new question goes to; no network call here (the worker thread makes them)."""
        backend = self.connection.backend_for_ask(
            self._parameterNode.backendUrl, self.ui.backendTokenLineEdit.text.strip() or None
        )
        self.logic.backend = backend
        return backend

    def onShowBackendLog(self) -> None:
        local = self.connection.local
        if self._mode() == BackendMode.REMOTE:
            text = _("The remote backend keeps its log on the computer that runs it (photon serve's output).")
            path = ""
        elif local is None:
            text, path = _("The local backend has not been started in this Slicer session."), ""
        else:
            text, path = local.log_text(), str(local.log_path)
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


def _setupCheck():
    """The check of the local backend's Python before a start (:func:`.setup.setup_problems`), if available."""
    try:
        from .setup import setup_problems
    except ImportError:
        return None
    return setup_problems
