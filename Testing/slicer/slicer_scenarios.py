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
    widget = session.open_panel()
    session.type_text(widget.ui.questionTextEdit, QUESTION)
    assert widget.ui.questionTextEdit.toPlainText() == QUESTION, widget.ui.questionTextEdit.toPlainText()
    assert widget._parameterNode.question == QUESTION, widget._parameterNode.question
    # An example question chosen from the list replaces the text (parameter node -> widget still works).
    widget.onExampleChosen(1)
    session.application.processEvents()
    assert widget.ui.questionTextEdit.toPlainText() == widget._parameterNode.question != QUESTION


def scenario_url_cursor_stays_where_the_user_types(session):
    """Typing in the middle of the remote URL inserts there; the cursor does not jump to the end."""
    widget = session.open_panel()
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
    widget = session.open_panel()
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
    widget = session.open_panel()
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
    widget = session.open_panel()
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
    widget = session.open_panel()
    from PhotonSlicerLib.backend import BackendError

    widget._task = _FinishedTask(BackendError("The Photon backend is busy."))
    widget._askTimer.start()
    widget._pollAsk()  # raises out of the timer before the fix
    assert not widget._askTimer.isActive()
    assert any("The Photon backend is busy." in message["text"] for message in session.messages), session.messages


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


SCENARIOS = sorted(name for name in dict(globals()) if name.startswith("scenario_"))
