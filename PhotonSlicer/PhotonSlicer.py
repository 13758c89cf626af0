"""PhotonSlicer: ask Photon, a 3D medical vision-language model, about a CT/MR volume.

This file is the thin Slicer-facing layer (module description, widget, logic, self-test).
Helper code belongs in the ``PhotonSlicerLib`` package: Slicer loads every ``.py`` directly
in this folder as a module. Nothing here imports torch; the model runs in the separate
Photon backend.
"""

import slicer
from PhotonSlicerLib.logic import PhotonAskLogic
from slicer.i18n import tr as _
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)

#
# PhotonSlicer
#


class PhotonSlicer(ScriptedLoadableModule):
    """Module description shown in Slicer's module list and help panel."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("Photon")
        # Keep equal to EXTENSION_CATEGORY in the top-level CMakeLists.txt.
        self.parent.categories = [_("Quantification")]
        self.parent.dependencies = []
        self.parent.contributors = ["PhotonSlicer contributors"]
        self.parent.helpText = _(
            "Ask questions about a CT or MR volume and get an answer from Photon, a 3D medical "
            "vision-language model, together with a heatmap of the regions it used. "
            "In this version the panel is laid out but its buttons are not wired yet; ask from "
            "Slicer's Python console with PhotonSlicerLogic().ask(volumeNode, question) against a "
            "running Photon backend (photon serve). "
            '<a href="https://github.com/photonslicer/PhotonSlicer">Project home page</a>.'
        )
        self.parent.acknowledgementText = _(
            "PhotonSlicer is an open-source extension built by the PhotonSlicer contributors "
            "on top of 3D Slicer's scripted module template. Photon answers are for research "
            "use and are not a medical diagnosis."
        )


#
# PhotonSlicerWidget
#


class PhotonSlicerWidget(ScriptedLoadableModuleWidget):
    """Module panel: loads the Designer layout and hands it the MRML scene."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        self.logic = None
        self.ui = None

    def setup(self) -> None:
        """Build the panel from Resources/UI/PhotonSlicer.ui."""
        ScriptedLoadableModuleWidget.setup(self)

        uiWidget = slicer.util.loadUI(self.resourcePath("UI/PhotonSlicer.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)

        # The .ui connects the top widget's mrmlSceneChanged signal to every node selector,
        # so setting the scene here reaches them all.
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = PhotonSlicerLogic()

        self.layout.addStretch(1)


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


#
# PhotonSlicerTest
#


class PhotonSlicerTest(ScriptedLoadableModuleTest):
    """Self-test run by Slicer's "Reload and Test" and by ctest (slicer_add_python_unittest)."""

    def setUp(self):
        """Start every test from an empty scene."""
        slicer.mrmlScene.Clear()

    def runTest(self):
        """Run all tests of this module."""
        self.setUp()
        self.test_PhotonSlicerLogicInstantiates()

    def test_PhotonSlicerLogicInstantiates(self):
        """The logic can be created without the GUI."""
        self.delayDisplay("Starting the test")
        logic = PhotonSlicerLogic()
        self.assertIsInstance(logic, ScriptedLoadableModuleLogic)
        self.assertIsInstance(logic, PhotonAskLogic)
        self.delayDisplay("Test passed")
