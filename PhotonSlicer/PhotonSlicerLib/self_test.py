"""The module's self-test (``PhotonSlicerTest`` in PhotonSlicer.py): Reload and Test, ctest.

It needs a backend: set PHOTONSLICER_TEST_URL (and PHOTONSLICER_TEST_TOKEN) to reach a running
one, or PHOTONSLICER_TEST_PYTHON to the Python that has PhotonLib's backend dependencies
(default: PythonSlicer) to start the bundled one. Without one the asking test is skipped with
the reason. See docs/slicer.md.
"""

from __future__ import annotations

import os
import time

import slicer
import vtk
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleLogic

from . import display, history, panel
from .backend import BUNDLED_PHOTONLIB_DIR
from .local_backend import READY, STARTING, LocalBackendProcess, default_python
from .logic import PhotonAskLogic
from .parameters import BackendMode
from .tasks import AskTask


class PhotonSlicerSelfTests:
    """The ``test_*`` methods of ``PhotonSlicerTest`` (a ``ScriptedLoadableModuleTest``).

    ``logicClass`` is the module's logic class (set by PhotonSlicer.py).
    """

    logicClass = None
    #: Short answers keep the test quick on a CPU (the answer's content is not checked).
    MAX_NEW_TOKENS = 8
    TEST_NAMES = ("test_PhotonSlicerLogicInstantiates", "test_PhotonSlicerAskGivesHeatmapOnTheVolumeGrid")

    def test_PhotonSlicerLogicInstantiates(self):
        """The logic and the parameter node work without the GUI; no token field exists to be saved."""
        logic = self.logicClass()
        self.assertIsInstance(logic, ScriptedLoadableModuleLogic)
        self.assertIsInstance(logic, PhotonAskLogic)
        parameters = logic.getParameterNode()
        self.assertEqual(parameters.backendMode, BackendMode.LOCAL)
        self.assertFalse([name for name in parameters.allParameters if name.lower().endswith("token")])
        self.assertTrue(len(panel.example_items()) > len(panel.EXAMPLE_QUESTIONS))

    def test_PhotonSlicerAskGivesHeatmapOnTheVolumeGrid(self):
        """Load a volume, reach a backend, ask, and check the heatmap lies on the volume's exact grid."""
        self.delayDisplay("Loading the bundled example CT")
        examplePath = os.path.join(str(BUNDLED_PHOTONLIB_DIR), "photonlib", "examples", "phantom_ct.nrrd")
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
                localBackend = LocalBackendProcess(python, startup_env=slicer.util.startupEnvironment())
                localBackend.start()
                deadline = time.monotonic() + 600
                while (status := localBackend.poll()).state == STARTING and time.monotonic() < deadline:
                    slicer.app.processEvents()
                    time.sleep(0.2)
                if status.state != READY:
                    self.skipTest(f"no backend to test against ({status.message}); see docs/slicer.md")
                url, token = status.url, localBackend.token

            logic = self.logicClass()
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
