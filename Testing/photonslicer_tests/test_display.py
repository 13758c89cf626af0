"""Heatmap display on MRML nodes (slicer-core): colour table, range, threshold, slice-view layers."""

from __future__ import annotations

import numpy as np
import pytest
import slicer
from PhotonSlicerLib import display


@pytest.fixture
def scene_with_views():
    """A scene with Slicer's default colour tables and three slice views (Red, Yellow, Green)."""
    scene = slicer.mrmlScene = slicer.vtkMRMLScene()
    color_logic = slicer.vtkMRMLColorLogic()
    color_logic.SetMRMLScene(scene)
    color_logic.AddDefaultColorNodes()
    for _ in range(3):
        scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode")
    yield scene
    color_logic.SetMRMLScene(None)
    scene.Clear(1)


def nodes(scene):
    volume = slicer.util.addVolumeFromArray(np.zeros((4, 5, 6), np.int16), name="ct")
    heatmap = slicer.util.addVolumeFromArray(np.linspace(0, 1, 120, dtype=np.float32).reshape(4, 5, 6), name="heat")
    return volume, heatmap


def test_style_uses_a_built_in_colour_table_fixed_range_and_threshold(scene_with_views):
    _, heatmap = nodes(scene_with_views)
    display.style_heatmap(heatmap, threshold=0.2)
    node = heatmap.GetDisplayNode()
    assert node.GetColorNodeID() == display.DEFAULT_COLOR_NODE_IDS[0]
    assert not node.GetAutoWindowLevel()
    assert (node.GetWindowLevelMin(), node.GetWindowLevelMax()) == pytest.approx((0.0, 1.0))
    assert node.GetApplyThreshold() and node.GetLowerThreshold() == pytest.approx(0.2)
    display.set_threshold(heatmap, 0.0)
    assert not node.GetApplyThreshold()
    display.style_heatmap(heatmap, color_node_id="vtkMRMLColorTableNodeIron")
    assert node.GetColorNodeID() == "vtkMRMLColorTableNodeIron"


def test_heatmap_is_the_foreground_of_every_slice_view_and_can_be_hidden(scene_with_views):
    volume, heatmap = nodes(scene_with_views)
    display.show_heatmap(volume, heatmap, opacity=0.4)
    composites = display.slice_composite_nodes(scene_with_views)
    assert len(composites) == 3
    for composite in composites:
        assert composite.GetBackgroundVolumeID() == volume.GetID()
        assert composite.GetForegroundVolumeID() == heatmap.GetID()
        assert composite.GetForegroundOpacity() == pytest.approx(0.4)
    display.set_opacity(scene_with_views, heatmap, 0.8)
    assert all(c.GetForegroundOpacity() == pytest.approx(0.8) for c in composites)
    display.hide_heatmap(scene_with_views, heatmap)
    assert all(c.GetForegroundVolumeID() is None for c in composites)
    assert all(c.GetBackgroundVolumeID() == volume.GetID() for c in composites)
