"""What a user does with the PhotonSlicer panel, run by slicer_harness.py inside each Slicer release.

Each ``scenario_*`` function gets a fresh :class:`slicer_harness.SlicerSession` (its own
subprocess): Slicer's real Python package of one release, the real PhotonSlicer.py and .ui.
test_in_slicer.py runs every scenario on every release. A scenario fails by raising.
"""

from __future__ import annotations

import os
import unittest

QUESTION = "Is there a lesion?"


def _signal_receivers(widget, signature: str) -> int:
    from PySide6.QtCore import SIGNAL

    return widget.receivers(SIGNAL(signature))


# ------------------------------------------------------------------------------ typing (breakage 1)


def scenario_typed_question_is_kept_as_typed(session):
    """Typing into the question box bound by Slicer's GUI connectors leaves exactly what was typed."""
    widget = session.open_panel().panel
    session.type_text(widget.ui.questionTextEdit, QUESTION)
    assert widget.ui.questionTextEdit.toPlainText() == QUESTION, widget.ui.questionTextEdit.toPlainText()
    assert widget._parameterNode.question == QUESTION, widget._parameterNode.question
    # An example question chosen from the list replaces the text (parameter node -> widget still works).
    widget.onExampleChosen(1)
    session.application.processEvents()
    assert widget.ui.questionTextEdit.toPlainText() == widget._parameterNode.question != QUESTION


def scenario_url_cursor_stays_where_the_user_types(session):
    """Typing in the middle of the remote URL inserts there; the cursor does not jump to the end."""
    widget = session.open_panel().panel
    widget.ui.backendModeComboBox.currentIndex = 1  # Remote URL
    session.application.processEvents()
    lineEdit = widget.ui.backendUrlLineEdit
    assert lineEdit.text == "http://127.0.0.1:8765", lineEdit.text
    lineEdit.setFocus()
    lineEdit.cursorPosition = len("http://127.0.0.1:")
    session.type_text(lineEdit, "12")
    assert lineEdit.text == "http://127.0.0.1:128765", lineEdit.text
    assert lineEdit.cursorPosition == len("http://127.0.0.1:12"), lineEdit.cursorPosition
    assert widget._parameterNode.backendUrl == "http://127.0.0.1:128765"


# ------------------------------------------------------------------------------ history (breakage 2)


def scenario_history_table_is_made_with_this_releases_table_api(session):
    """The history table (and its row in the panel) is made with vtkMRMLTableNode calls this release has."""
    widget = session.open_panel().panel
    from PhotonSlicerLib import history

    volume = session.add_volume("CT")
    widget._parameterNode.inputVolume = volume
    table = history.history_table(volume)
    row = history.add_entry(table, QUESTION, "Yes.", 25, 512, "photon-demo")
    assert row == 0 and [entry.question for entry in history.entries(table)] == [QUESTION]
    uses_titles = getattr(table, "GetUseColumnTitleAsColumnHeader", None) or table.GetUseColumnNameAsColumnHeader
    assert uses_titles(), "the column names must be the table view's header"
    widget._updateHistoryView(selectRow=row)
    model = widget.ui.historyTableView.model()
    assert model.rowCount() == 1 and model.headerData(1, session.qt.Qt.Horizontal) == "question"


# ------------------------------------------------------------------------------ colour maps (breakage 4)


def scenario_colour_map_list_offers_slicers_colour_tables(session):
    """Slicer's colour nodes are hidden from editors; the colour map selector still lists them, PET-Heat chosen."""
    widget = session.open_panel().panel
    selector = widget.ui.heatmapColorSelector
    names = [node.GetName() for node in selector.nodes()]
    assert "PET-Heat" in names and "Iron" in names and "Grey" in names, names
    assert selector.currentNode() is not None and selector.currentNode().GetName() == "PET-Heat"
    assert widget._parameterNode.heatmapColor.GetName() == "PET-Heat"
    iron = session.scene.GetNodeByID("vtkMRMLColorTableNodeIron")
    selector.setCurrentNode(iron)
    assert widget._parameterNode.heatmapColor is iron


# ------------------------------------------------------------------------------ smaller (breakage 7)


def scenario_bindings_do_not_pile_up_over_enter_and_exit(session):
    """Each enter() binds the panel once; exit() releases it (Slicer 5.6/5.8's connectGui returns no tag)."""
    widget = session.open_panel().panel
    spinBox = widget.ui.maxNewTokensSpinBox
    bound = _signal_receivers(spinBox, "valueChanged(int)")
    for _ in range(3):
        session.exit()
        session.enter()
    assert _signal_receivers(spinBox, "valueChanged(int)") == bound, "bindings piled up over enter()/exit()"
    session.exit()
    before = widget.logic.getParameterNode().maxNewTokens
    spinBox.value = before + 32
    assert widget.logic.getParameterNode().maxNewTokens == before, "exit() left the panel bound"
    session.enter()
    assert spinBox.value == before  # enter() shows the parameter node again


class _FinishedTask:
    max_new_tokens = 8

    def __init__(self, error):
        self._error = error

    def poll(self):
        from PhotonSlicerLib.tasks import TaskProgress

        return TaskProgress(state="error", partial_answer="", tokens_generated=0, error=str(self._error))

    def finish(self):
        raise self._error


def scenario_errors_in_timer_callbacks_are_shown_not_raised(session):
    """A failure found by a timer callback is shown in a message box; the callback itself returns."""
    widget = session.open_panel().panel
    from PhotonSlicerLib.backend import BackendError

    widget._task = _FinishedTask(BackendError("The Photon backend is busy."))
    widget._askTimer.start()
    widget._pollAsk()  # raises out of the timer before the fix
    assert not widget._askTimer.isActive()
    assert any("The Photon backend is busy." in message["text"] for message in session.messages), session.messages


class _WaitingTask:
    """A question the backend has not taken yet: its queue is full, the client waits (Retry-After)."""

    max_new_tokens = 8

    def poll(self):
        from PhotonSlicerLib.tasks import TaskProgress

        return TaskProgress(state="running", partial_answer="", tokens_generated=0, waiting_s=7.2, wait_limit_s=120)


def scenario_waiting_for_a_busy_backend_is_on_by_default_and_shown(session):
    """Questions wait for a busy backend (120 s unless the settings say otherwise); the status line says so."""
    session.load_module()
    from PhotonSlicerLib import settings

    session.qt.QSettings().remove(settings.BUSY_WAIT_KEY)  # as never set (the release's scenarios share QSettings)
    widget = session.open_panel().panel
    assert widget.settings.busy_wait_s == 120
    assert widget.connection.client_factory("http://127.0.0.1:1", None).busy_wait_s == 120
    widget._task = _WaitingTask()
    widget._pollAsk()
    text = widget.ui.askStatusLabel.text
    assert text == "Waiting for the server (busy with other questions): 7 of at most 120 s", text
    widget._task = None
    widget.settings.busy_wait_s = 0  # Edit > Application Settings > Photon: do not wait
    try:
        widget.ui.backendModeComboBox.currentIndex = 1  # Remote URL
        session.application.processEvents()
        assert widget._backendForAsk().busy_wait_s == 0  # the next question's client follows the setting
    finally:
        session.qt.QSettings().remove(settings.BUSY_WAIT_KEY)


def scenario_category_is_translated_as_slicer_translates_categories(session):
    """The category goes through Slicer's own translation context for categories (as the template does it)."""
    session.slicer.app.translations[("qSlicerAbstractCoreModule", "Quantification")] = "Quantifizierung"
    session.load_module()
    assert session.moduleParent.categories == ["Quantifizierung"], session.moduleParent.categories


def scenario_skipped_self_test_is_not_a_failure(session):
    """Reload and Test with no backend to test against reports the skip; it does not fail."""
    os.environ["PHOTONSLICER_TEST_PYTHON"] = "/bin/false"  # a backend that cannot start
    session.load_module()
    slicer = session.slicer
    with slicer.util.tryWithErrorDisplay("Reload and Test failed."):  # as ScriptedLoadableModuleWidget.onReloadAndTest
        slicer.selfTests["PhotonSlicer"](msec=10)
    assert not [message for message in session.messages if "failed" in message["text"]], session.messages


def scenario_self_test_skip_reaches_unittest(session):
    """Under ctest (slicer.testing.runUnitTest: unittest's runner), the same test is reported as skipped."""
    os.environ["PHOTONSLICER_TEST_PYTHON"] = "/bin/false"
    session.load_module()
    suite = unittest.TestLoader().loadTestsFromName("PhotonSlicer.PhotonSlicerTest")
    result = unittest.TestResult()
    suite.run(result)
    assert not result.failures and not result.errors, result.failures + result.errors
    assert [test.id().rsplit(".", 1)[-1] for test, _ in result.skipped] == [
        "test_PhotonSlicerAskGivesHeatmapOnTheVolumeGrid"
    ], result.skipped


# ------------------------------------------------------------------------------ settings page


class _SettingsDialog:
    """``slicer.app.settingsDialog()``: records the pages added (the real one is compiled CTK)."""

    def __init__(self):
        self.pages = {}

    def addPanel(self, title, page):  # noqa: N802
        self.pages[title] = page


def scenario_settings_page_edits_the_backend_settings(session):
    """Edit > Application Settings > Photon: Python, device, busy wait and recent URLs, stored with QSettings (no token)."""
    import slicer_stand_ins
    from PySide6 import QtWidgets

    session.ctk.ctkSettingsPanel = slicer_stand_ins.pythonqt_class(type("ctkSettingsPanel", (QtWidgets.QWidget,), {}))
    dialog = _SettingsDialog()
    session.slicer.app.settingsDialog = lambda: dialog
    session.load_module()  # the module adds its page when Slicer has started
    from PhotonSlicerLib import settings, settings_panel

    session.qt.QSettings().remove(settings.BUSY_WAIT_KEY)  # as never set (the release's scenarios share QSettings)
    page = settings_panel.register()
    assert dialog.pages == {"Photon": page} and settings_panel.register() is page  # added once
    devices = [page.deviceComboBox.itemData(index) for index in range(page.deviceComboBox.count)]
    assert devices == ["auto", "cuda", "cpu"]
    busyWait = page.busyWaitSpinBox
    assert (busyWait.value, busyWait.minimum, busyWait.maximum) == (120, 0, 3600)  # on by default
    assert busyWait.specialValueText == "do not wait"
    busyWait.value = 300
    page.deviceComboBox.setCurrentIndex(2)
    session.type_text(page.pythonLineEdit, "/env/bin/python")
    page.pythonLineEdit.editingFinished.emit()
    stored = settings.BackendSettings(session.qt.QSettings())
    assert (stored.device, stored.python, stored.busy_wait_s) == ("cpu", "/env/bin/python", 300)
    assert not [key for key in session.qt.QSettings().allKeys() if "token" in key.lower()]

    widget = session.open_panel().panel  # the panel reads the same settings
    assert widget.ui.backendPythonLineEdit.text == "/env/bin/python"
    assert widget.settings.device == "cpu" and widget.settings.busy_wait_s == 300
    session.qt.QSettings().remove(settings.BUSY_WAIT_KEY)


def scenario_module_file_is_thin_and_the_panel_lives_in_the_lib(session):
    """PhotonSlicer.py holds Slicer's four classes; the panel is PhotonSlicerLib.widget's, with the connection's states."""
    widget = session.open_panel()
    from PhotonSlicerLib import connection
    from PhotonSlicerLib import widget as panel_module

    assert isinstance(widget.panel, panel_module.PhotonSlicerPanel)
    assert widget.panel.connection.state in connection.STATES
    classes = sorted(name for name, value in vars(session.pythonModule).items()
                     if isinstance(value, type) and value.__module__ == "PhotonSlicer")  # fmt: skip
    assert classes == ["PhotonSlicer", "PhotonSlicerLogic", "PhotonSlicerTest", "PhotonSlicerWidget"], classes


def scenario_remote_connect_refused_is_shown_and_the_state_is_error(session):
    """Connect to a URL nothing listens on: the status says error in words and a box says why."""
    import socket
    import time

    widget = session.open_panel().panel
    with socket.socket() as probe:  # a free port: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    widget.ui.backendModeComboBox.currentIndex = 1
    session.application.processEvents()
    widget._parameterNode.backendUrl = f"http://127.0.0.1:{port}"
    widget.onConnectButton()
    assert widget.connection.state == "starting"
    deadline = time.monotonic() + 20
    while widget.connection.needs_polling and time.monotonic() < deadline:
        widget._pollBackend()
        time.sleep(0.05)
    assert widget.connection.state == "error", widget.connection.message
    assert widget.ui.backendStatusLabel.text.startswith("Error: The Photon backend is not running")
    assert any("not running" in message["text"] for message in session.messages), session.messages


# ------------------------------------------------------------------------------ Set up backend


def _harmless_plan(python, *commands, installed=None, problems=()):
    """An install plan whose commands are small ``python -c`` programs (nothing is installed)."""
    from PhotonSlicerLib.setup import InstallPlan, PlannedPackage

    packages = [PlannedPackage("torch", "2.13.0", "install"), PlannedPackage("transformers", "5.23.0", "install"),
                PlannedPackage("numpy", "2.2.6", "keep", "2.2.6")]  # fmt: skip
    return InstallPlan(python, "cpu", [list(command) for command in commands], packages, "numpy==2.2.6\n",
                       ["numpy", "requests"], list(problems), dict(installed or {}),
                       "nvidia-smi found no NVIDIA GPU")  # fmt: skip


def _python_command(code, *arguments):
    import sys

    return [sys.executable, "-c", code, *arguments]


def _until(session, condition, timeout=30.0, seen=None):
    """Let Slicer's event loop run (the panel's timers fire) until ``condition()``; ``seen`` gathers the status lines."""
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        session.application.processEvents()
        if seen is not None:
            seen.append(session.slicer.modules.PhotonSlicerWidget.panel.ui.backendStatusLabel.text)
        time.sleep(0.02)


def _press(session, button):
    from PySide6.QtCore import Qt
    from PySide6.QtTest import QTest

    assert button.visible and button.enabled, f"{button.objectName()} cannot be pressed"
    QTest.mouseClick(button, Qt.LeftButton)
    session.application.processEvents()


def scenario_set_up_backend_confirms_the_plan_runs_it_with_progress_and_checks_again(session):
    """Set up backend: the plan's summary to confirm, its commands run with progress, then the version check again."""
    import sys

    widget = session.open_panel().panel
    ui = widget.ui
    plan = _harmless_plan(
        sys.executable,
        _python_command("import time; print('Collecting torch==2.13.0', flush=True); time.sleep(1.5)"),
        _python_command(
            "import sys, time; print('pins:', open(sys.argv[1]).read().strip()); time.sleep(1.5)", "{constraints}"
        ),
    )
    asked = []
    widget.planMaker = lambda python, environment, device: asked.append((python, device)) or plan
    checks = []
    widget.connection.setup_check = lambda python, environment: checks.append(python) or []
    assert not ui.setupProgressBar.visible and not ui.cancelSetupButton.visible
    _press(session, ui.setupBackendButton)
    assert not ui.setupBackendButton.enabled and not ui.startBackendButton.enabled  # one set-up at a time
    seen = []
    _until(session, lambda: widget._setupRunner is not None, seen=seen)
    assert asked == [(widget._python(), "auto")], asked  # the chosen Python and the Device setting
    confirmation = session.messages[-1]
    # (slicer.util.messageBox pads the title of a box with details, to make it wider)
    assert confirmation["windowTitle"].strip() == "Set up the Photon backend", confirmation
    for line in ("Install into " + sys.executable + " (PyTorch: CPU build):", "  torch 2.13.0", "  transformers 5.23.0",
                 "  numpy 2.2.6 (already installed, kept)", "PyTorch CPU build: nvidia-smi found no NVIDIA GPU.",
                 "Packages Slicer ships are never replaced (2 kept at their versions)."):  # fmt: skip
        assert line in confirmation["text"].splitlines(), (line, confirmation["text"])
    assert "photon-constraints.txt" in confirmation["detailedText"], confirmation["detailedText"]
    _until(session, lambda: "Command 1 of 2" in ui.backendStatusLabel.text)
    assert ui.setupProgressBar.visible and ui.cancelSetupButton.visible and ui.cancelSetupButton.enabled
    assert (ui.setupProgressBar.value, ui.setupProgressBar.maximum) == (0, 2)
    _until(session, lambda: widget._setupRunner is None and not widget._setupCheckPending, seen=seen)
    assert any(text.startswith("Setting up: Command 2 of 2: ") for text in seen), sorted(set(seen))
    assert checks and checks[-1] == widget._python()  # the version check ran again
    assert ui.backendStatusLabel.text == f"Set up: {widget._python()} has everything the backend needs. Press Start."
    assert not ui.setupProgressBar.visible and not ui.cancelSetupButton.visible
    assert ui.setupBackendButton.enabled and ui.startBackendButton.enabled
    assert session.slicer.app.__dict__.get("restarts") is None  # an external Python: no restart
    assert [message["windowTitle"].strip() for message in session.messages] == ["Set up the Photon backend"]
    log = "\n".join(text for _path, text in widget._logSections())  # what Log shows
    assert "Collecting torch==2.13.0" in log and "pins: numpy==2.2.6" in log, log
    ui.backendModeComboBox.currentIndex = 1  # Remote URL: nothing to set up here
    session.application.processEvents()
    assert not ui.setupBackendButton.visible


def scenario_set_up_backend_failure_ends_in_a_clear_status_and_box_with_the_log(session):
    """A pip command that fails: the status and a box say which and why, the output is in the box's details."""
    import sys

    widget = session.open_panel().panel
    failing = _python_command(
        "import sys; print('ERROR: Could not find a version that satisfies the requirement torch==2.13.0'); sys.exit(1)"
    )
    never = _python_command("print('must not run')")
    widget.planMaker = lambda python, environment, device: _harmless_plan(sys.executable, failing, never)
    _press(session, widget.ui.setupBackendButton)
    _until(session, lambda: widget._setupPlanning is None and widget._setupRunner is None
           and len(session.messages) >= 2)  # fmt: skip
    confirmation, error = session.messages
    assert error["windowTitle"].strip() == "The Photon backend could not be set up", error
    assert error["text"].startswith("Command 1 of 2 (python") and "exit code 1" in error["text"], error["text"]
    assert "Could not find a version that satisfies the requirement" in error["detailedText"]
    assert "must not run" not in error["detailedText"]
    status = widget.ui.backendStatusLabel.text
    assert status.startswith("Error: Command 1 of 2") and "what was installed before is kept" in status, status
    assert widget.ui.setupBackendButton.enabled and not widget.ui.setupProgressBar.visible


def scenario_set_up_backend_cancel_ends_the_running_command(session):
    """Cancel set-up while a command runs: it ends within seconds, no further command runs."""
    import sys
    import time

    widget = session.open_panel().panel
    sleeper = _python_command("import time; print('Downloading torch', flush=True); time.sleep(60)")
    never = _python_command("print('must not run')")
    widget.planMaker = lambda python, environment, device: _harmless_plan(sys.executable, sleeper, never)
    _press(session, widget.ui.setupBackendButton)
    _until(session, lambda: "Command 1 of 2" in widget.ui.backendStatusLabel.text)
    runner = widget._setupRunner
    started = time.monotonic()
    _press(session, widget.ui.cancelSetupButton)
    _until(session, lambda: widget._setupRunner is None, timeout=20)
    assert time.monotonic() - started < 10
    assert widget.ui.backendStatusLabel.text.startswith("Set-up cancelled"), widget.ui.backendStatusLabel.text
    assert "must not run" not in runner.log_text() and "Downloading torch" in runner.log_text()
    assert len(session.messages) == 1  # the confirmation only: a cancel the user asked for needs no box
    assert widget.ui.setupBackendButton.enabled


def scenario_set_up_backend_declined_or_impossible_runs_nothing(session):
    """Cancel in the confirmation runs nothing; a plan with problems (Python 3.9) is refused with the reason."""
    import sys
    import tempfile
    from pathlib import Path

    import slicer_stand_ins

    widget = session.open_panel().panel
    marker = Path(tempfile.mkdtemp()) / "ran"
    writes = _python_command("import sys; open(sys.argv[1], 'w').write('ran')", str(marker))
    widget.planMaker = lambda python, environment, device: _harmless_plan(sys.executable, writes)
    slicer_stand_ins.ctkMessageBox.answers.append(session.qt.QMessageBox.Cancel)
    _press(session, widget.ui.setupBackendButton)
    _until(session, lambda: widget._setupPlanning is None and session.messages)
    session.application.processEvents()
    assert widget._setupRunner is None and not marker.exists()
    assert not widget.ui.backendStatusLabel.text.startswith("Setting up"), widget.ui.backendStatusLabel.text
    problem = "Python 3.9.10 (/opt/Slicer-5.6/bin/PythonSlicer) cannot run the backend: PhotonLib needs Python 3.10"
    widget.planMaker = lambda python, environment, device: _harmless_plan(sys.executable, writes, problems=[problem])
    _press(session, widget.ui.setupBackendButton)
    _until(session, lambda: len(session.messages) == 2)
    assert session.messages[-1]["text"] == problem and not marker.exists()
    assert widget.ui.backendStatusLabel.text == "Error: " + problem


def scenario_set_up_backend_into_slicers_python_asks_to_restart(session):
    """Installed into Slicer's own Python and a package Slicer imported changed: a restart prompt, then restart()."""
    widget = session.open_panel().panel
    from PhotonSlicerLib.plan_runner import PlanRunner
    from PhotonSlicerLib.setup import PythonReport

    slicer_python = "/opt/Slicer-5.10.0/bin/PythonSlicer"
    plan = _harmless_plan(slicer_python, _python_command("print('installing')"), installed={"numpy": "2.2.6"})
    widget.planMaker = lambda python, environment, device: plan
    after = PythonReport(slicer_python, (3, 12, 10), {"numpy": "2.4.6", "torch": "2.13.0"})
    widget.runnerFactory = lambda plan, environment, probe: PlanRunner(plan, environment, probe=lambda: after)
    _press(session, widget.ui.setupBackendButton)
    _until(session, lambda: getattr(session.slicer.app, "restarts", 0) == 1)
    restart = session.messages[-1]
    assert restart["windowTitle"].strip() == "Restart Slicer" and "(numpy, torch)" in restart["text"], restart


SCENARIOS = sorted(name for name in dict(globals()) if name.startswith("scenario_"))
