"""PhotonSlicer: ask Photon, a 3D medical vision-language model, about a CT/MR volume.

The thin Slicer-facing file: what Slicer looks for at the top level of a scripted module (the
module, its widget, logic and test classes). What they do lives in the ``PhotonSlicerLib``
package (Slicer loads every ``.py`` directly in this folder as a module): the panel in
``PhotonSlicerLib.widget``, the parameter node in ``.parameters``, the logic in ``.logic``, the
backend connection's states in ``.connection``, the self-test in ``.self_test``. Nothing here
imports torch; the model runs in the separate Photon backend process.
"""

import logging
import unittest

import slicer
from PhotonSlicerLib import settings_panel
from PhotonSlicerLib.logic import PhotonAskLogic
from PhotonSlicerLib.parameters import PhotonSlicerParameterNode
from PhotonSlicerLib.self_test import PhotonSlicerSelfTests
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

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
            "you choose (it needs PyTorch and PhotonLib: <i>Set up backend</i> installs them after a confirmation; "
            "a new access token is made at every start and never saved); <i>Remote URL</i> uses a backend another computer runs (type its token). "
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
        # Edit > Application Settings > Photon (backend Python, device, recent remote URLs).
        settings_panel.register_when_slicer_has_started()


#
# PhotonSlicerWidget
#


class PhotonSlicerWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The module panel; its behaviour is ``PhotonSlicerLib.widget.PhotonSlicerPanel``."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.panel = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        from PhotonSlicerLib.widget import PhotonSlicerPanel

        self.panel = PhotonSlicerPanel(self, PhotonSlicerLogic())
        self.panel.setup()

    def cleanup(self) -> None:
        self.removeObservers()
        if self.panel is not None:
            self.panel.cleanup()

    def enter(self) -> None:
        self.panel.enter()

    def exit(self) -> None:
        self.panel.exit()


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


class PhotonSlicerTest(PhotonSlicerSelfTests, ScriptedLoadableModuleTest):
    """Self-test run by Slicer's "Reload and Test" and by ctest (slicer_add_python_unittest).

    The tests are ``PhotonSlicerLib.self_test.PhotonSlicerSelfTests`` (see there for the backend
    they need); a test without a backend to test against is skipped, not failed.
    """

    logicClass = PhotonSlicerLogic

    def setUp(self):
        """Start every test from an empty scene."""
        slicer.mrmlScene.Clear()

    def runTest(self):
        """Run all tests of this module (Slicer's "Reload and Test" calls this, without unittest's runner)."""
        for name in self.TEST_NAMES:
            self.setUp()
            try:
                getattr(self, name)()
            except unittest.SkipTest as skipped:
                # No runner here to record a skip: report it, so it does not read as a failure.
                logging.warning("%s skipped: %s", name, skipped)
                self.delayDisplay(f"{name} skipped: {skipped}")
