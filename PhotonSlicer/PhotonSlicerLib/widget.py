"""The PhotonSlicer panel's behaviour: what ``PhotonSlicerWidget`` (in PhotonSlicer.py) shows and does.

Runs inside Slicer (``qt``, ``slicer``); the harness of ``Testing/photonslicer_tests/slicer_harness.py``
opens it on each supported release's own Python package. Everything that can work without Qt
lives in the other modules of this package and is tested under plain Python: the backend
connection's states (:mod:`.connection`), the wording (:mod:`.panel`), the settings
(:mod:`.settings`), the backend set-up (:mod:`.setup`: what to install; :mod:`.plan_runner`: running
it), asking (:mod:`.tasks`, :mod:`.logic`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
from pathlib import Path

import qt
import slicer
import vtk
from slicer.i18n import tr as _

from . import connection, display, history, panel, plan_runner, setup, volumes
from .backend import BackendError, ClientBackend
from .background import BackgroundCall
from .local_backend import default_python
from .parameters import BackendMode, connectParameterNodeToGui
from .settings import BackendSettings
from .tasks import AskTask

ASK_POLL_MS = 200
BACKEND_POLL_MS = 500
SETUP_POLL_MS = 500
#: How much of the set-up log the error box shows (the whole log is in its file and behind Log).
SETUP_LOG_IN_BOX_CHARS = 20_000


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
        self.connection = connection.BackendConnection(setup_check=_setupCheck(), client_factory=self._clientBackend)
        self._lastHeatmapSettings = None
        self._observedTable = None
        self._observations = []
        # Set up backend: the plan is worked out in a thread (planMaker), confirmed, then run by
        # runnerFactory's PlanRunner; tests replace both.
        self.planMaker = setup.plan_for_python
        self.runnerFactory = plan_runner.PlanRunner
        self._setupPlanning = None  # the BackgroundCall working out the plan
        self._setupRunner = None  # the PlanRunner running it
        self._setupLogRunner = None  # the last set-up's runner, whose log Log shows
        self._setupEnvironment = None
        self._setupStatus = None  # the status line while and after a set-up (None: the connection's)
        self._setupCheckPending = False  # the version check after a set-up is under way
        self._restartNeeded = False  # the last set-up changed a package Slicer imported (declined restart)

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
        self._setupTimer = qt.QTimer()
        self._setupTimer.setInterval(SETUP_POLL_MS)
        self._setupTimer.connect("timeout()", self._pollSetup)
        self.ui.setupProgressBar.visible = False
        self.ui.cancelSetupButton.visible = False

        self.widget.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.widget.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.exampleQuestionsComboBox.connect("activated(int)", self.onExampleChosen)
        self.ui.askButton.connect("clicked(bool)", self.onAskButton)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancelButton)
        self.ui.startBackendButton.connect("clicked(bool)", self.onStartBackend)
        self.ui.stopBackendButton.connect("clicked(bool)", self.onStopBackend)
        self.ui.connectButton.connect("clicked(bool)", self.onConnectButton)
        self.ui.showBackendLogButton.connect("clicked(bool)", self.onShowBackendLog)
        self.ui.setupBackendButton.connect("clicked(bool)", self.onSetupBackend)
        self.ui.cancelSetupButton.connect("clicked(bool)", self.onCancelSetup)
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
        for timer in (getattr(self, "_askTimer", None), getattr(self, "_backendTimer", None),
                      getattr(self, "_setupTimer", None)):  # fmt: skip
            if timer is not None:
                timer.stop()
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if self._setupRunner is not None:  # pip runs in a process group of its own: end it with Slicer
            self._setupRunner.cancel()
            self._setupRunner = None
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
        self.ui.setupBackendButton.visible = local
        running = self.connection.local_running
        settingUp = self._settingUp
        self.ui.startBackendButton.enabled = local and not running and not settingUp
        self.ui.stopBackendButton.enabled = local and running
        self.ui.setupBackendButton.enabled = local and not running and not settingUp
        if local and self._setupStatus:
            self.ui.backendStatusLabel.text = self._setupStatus
        else:
            self.ui.backendStatusLabel.text = panel.backend_status_text(
                self.connection.state, self.connection.message, self._task is not None
            )

    def _onPythonChosen(self) -> None:
        self.settings.python = self.ui.backendPythonLineEdit.text
        if not self._settingUp:
            self._setupStatus = None
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
            self._setupStatus = None
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
        if self._setupCheckPending and not self.connection.checking_setup:
            self._finishSetupCheck()
        if status.failure:
            logging.warning("Photon backend: %s", status.failure)
            title = (
                _("The local Photon backend is not available.")
                if status.mode == connection.LOCAL
                else _("Could not connect to the Photon backend.")
            )
            with showErrors(title):
                raise BackendError(status.failure)

    def _clientBackend(self, url, token):
        """A backend client that waits for a busy backend as long as the settings say."""
        return ClientBackend(url, token, busy_wait_s=self.settings.busy_wait_s)

    def _backendForAsk(self):
        """The backend a new question goes to; no network call here (the worker thread makes them)."""
        backend = self.connection.backend_for_ask(
            self._parameterNode.backendUrl, self.ui.backendTokenLineEdit.text.strip() or None
        )
        backend.busy_wait_s = self.settings.busy_wait_s  # changed in the settings since it connected
        self.logic.backend = backend
        return backend

    def _logSections(self):
        """What Log shows: ``[(file path or "", text)]``, the last set-up's pip output first."""
        sections = []
        local = self.connection.local
        if self._mode() == BackendMode.REMOTE:
            return [("", _("The remote backend keeps its log on the computer that runs it (photon serve's output)."))]
        runner = self._setupLogRunner
        if runner is not None:
            sections.append((str(runner.log_path), _("Set up backend (pip):") + "\n" + runner.log_text()))
        if local is not None:
            sections.append((str(local.log_path), _("Local backend (photon serve):") + "\n" + local.log_text()))
        elif runner is None:
            sections.append(("", _("The local backend has not been started in this Slicer session.")))
        return sections

    def onShowBackendLog(self) -> None:
        sections = self._logSections()
        text = "\n\n".join(sectionText for _path, sectionText in sections)
        paths = [path for path, _sectionText in sections if path]
        dialog = qt.QDialog(slicer.util.mainWindow())
        dialog.setWindowTitle(_("Photon backend log"))
        dialog.resize(900, 600)
        layout = qt.QVBoxLayout(dialog)
        for path in paths:
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

    # ------------------------------------------------------------------ set up backend
    @property
    def _settingUp(self) -> bool:
        return self._setupPlanning is not None or self._setupRunner is not None

    def onSetupBackend(self) -> None:
        """Work out what the chosen Python needs (in a thread); the timer then asks for confirmation and runs it."""
        with slicer.util.tryWithErrorDisplay(_("The backend could not be set up.")):
            if self._settingUp:
                return
            if self.connection.local_running:
                raise BackendError(
                    _("Stop the local backend first: pip must not replace packages the running backend has loaded.")
                )
            self.settings.python = self.ui.backendPythonLineEdit.text
            python = self._python()
            self._setupEnvironment = self._environmentFor(python)
            self._setupPlanning = BackgroundCall(
                self.planMaker, python, self._setupEnvironment, device=self.settings.device
            )
            self._setupStatus = _("Setting up: looking for a GPU (nvidia-smi) and at what {python} has ...").format(
                python=python
            )
            self._setupTimer.start()
            self._updateBackendSection()

    def onCancelSetup(self) -> None:
        if self._setupRunner is not None:
            self._setupRunner.cancel()  # returns at once; the poll sees the command end
            self.ui.cancelSetupButton.enabled = False
            self._setupStatus = _("Setting up: cancelling ...")
            self._updateBackendSection()

    def _pollSetup(self) -> None:
        """Timer: the plan worked out (confirm it), then the commands' progress, then the version check."""
        if self._setupPlanning is not None:
            if not self._setupPlanning.finished:
                return
            planning, self._setupPlanning = self._setupPlanning, None
            self._setupTimer.stop()  # the confirmation waits for the user
            try:
                plan = planning.result()
            except Exception as error:
                self._endSetupWithError(_("What to install could not be worked out: {error}").format(error=error))
                return
            self._confirmAndRun(plan)
            return
        runner = self._setupRunner
        if runner is None:
            self._setupTimer.stop()
            return
        progress = runner.poll()
        self.ui.setupProgressBar.setRange(0, max(progress.command_count, 1))
        done = progress.command_count if progress.state == plan_runner.FINISHED else max(progress.command_index - 1, 0)
        self.ui.setupProgressBar.value = done
        if not progress.finished:
            if not runner.cancel_requested:
                self._setupStatus = _("Setting up: {message}").format(message=progress.message)
            self._updateBackendSection()
            return
        self._setupTimer.stop()
        self._setupRunner = None
        self.ui.setupProgressBar.visible = False
        self.ui.cancelSetupButton.visible = False
        if progress.state == plan_runner.FAILED:
            self._endSetupWithError(progress.message, runner.log_text(SETUP_LOG_IN_BOX_CHARS))
            return
        if progress.state == plan_runner.CANCELLED:
            self._setupStatus = progress.message
            self._updateBackendSection()
            return
        # Slicer's own Python, and a package Slicer has imported changed: it must restart to use it.
        self._restartNeeded = runner.restart_needed(list(sys.modules))
        if self._restartNeeded and slicer.util.confirmOkCancelDisplay(
            _("Slicer must restart to use the packages just installed into its own Python ({packages}). "
              "Restart Slicer now?").format(packages=", ".join(progress.changed)),
            windowTitle=_("Restart Slicer"),
        ):  # fmt: skip
            slicer.util.restart()
            return
        self._setupStatus = _("{message} Checking the backend's Python again ...").format(message=progress.message)
        self._checkSetupAgain()

    def _confirmAndRun(self, plan) -> None:
        """Show the plan (every package, the PyTorch build, Slicer's packages kept); on OK, run it."""
        if plan.problems:
            self._endSetupWithError(" ".join(plan.problems))
            return
        if not plan.commands:
            self._setupStatus = _("Nothing to install: {python} has every package the backend needs.").format(
                python=plan.python
            )
            self._checkSetupAgain()
            return
        constraints = Path("photon-constraints.txt")
        commands = "\n".join(subprocess.list2cmdline(command)
                             for command in setup.commands_with_constraints(plan, constraints))  # fmt: skip
        pins = _(" and Slicer's own packages at their versions") if plan.protected else ""
        heading = _("The pip commands ({constraints}: PhotonLib's lock{pins}):").format(
            constraints=constraints, pins=pins
        )
        details = heading + "\n" + commands
        confirmed = slicer.util.confirmOkCancelDisplay(
            plan.summary() + "\n\n" + _("Install now? The download can take minutes (PyTorch is large); "
                                         "Slicer stays usable meanwhile and Cancel set-up stops it."),
            windowTitle=_("Set up the Photon backend"),
            detailedText=details,
        )  # fmt: skip
        if not confirmed:
            self._setupStatus = None
            self._updateBackendSection()
            return
        python, environment = plan.python, self._setupEnvironment
        try:
            runner = self.runnerFactory(plan, environment, probe=lambda: setup.probe_python(python, environment))
            self._setupRunner = self._setupLogRunner = runner.start()
        except Exception as error:
            self._setupRunner = None
            self._endSetupWithError(_("The set-up could not be started: {error}").format(error=error))
            return
        self.ui.setupProgressBar.setRange(0, len(plan.commands))
        self.ui.setupProgressBar.value = 0
        self.ui.setupProgressBar.visible = True
        self.ui.cancelSetupButton.enabled = True
        self.ui.cancelSetupButton.visible = True
        self._setupStatus = _("Setting up: starting pip ...")
        self._setupTimer.start()
        self._updateBackendSection()

    def _endSetupWithError(self, message: str, log: str = "") -> None:
        """A clear status and a box; nothing is retried (the log keeps pip's output)."""
        self._setupStatus = _("Error: ") + message
        self._updateBackendSection()
        slicer.util.errorDisplay(
            message, windowTitle=_("The Photon backend could not be set up"), **({"detailedText": log} if log else {})
        )

    def _checkSetupAgain(self) -> None:
        """Re-run the version check; :meth:`_finishSetupCheck` reports it."""
        self._setupCheckPending = True
        self._checkLocalSetup()
        if not self.connection.checking_setup:  # no check to wait for (e.g. no setup check configured)
            self._finishSetupCheck()

    def _finishSetupCheck(self) -> None:
        self._setupCheckPending = False
        if self.connection.state == connection.NOT_SET_UP:
            self._setupStatus = None  # the check's message says what is still missing
        elif self._restartNeeded:
            self._setupStatus = _("Set up. Restart Slicer to use the packages installed into its own Python.")
        else:
            self._setupStatus = _("Set up: {python} has everything the backend needs. Press Start.").format(
                python=self._python()
            )
        self._updateBackendSection()

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
                progress.tokens_generated, maximum, progress.cancel_requested, progress.waiting_s, progress.wait_limit_s
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
