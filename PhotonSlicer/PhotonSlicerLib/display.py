"""Showing a heatmap over its volume in the slice views: colour table, range, threshold, opacity.

Works on MRML nodes only (display nodes and the slice composite nodes of the views), so it
runs under plain Python with ``slicer-core``; in Slicer every slice view follows its
composite node.
"""

from __future__ import annotations

#: Colour tables tried in order (all built into Slicer): hot colours read as "looked here".
DEFAULT_COLOR_NODE_IDS = ("vtkMRMLPETProceduralColorNodePET-Heat", "vtkMRMLColorTableNodeIron")
DEFAULT_OPACITY = 0.5
DEFAULT_THRESHOLD = 0.1


def style_heatmap(heatmap_node, color_node_id: str | None = None, threshold: float = DEFAULT_THRESHOLD) -> None:
    """Fixed 0..1 range (keep probabilities), a colour table, and voxels below ``threshold`` hidden."""
    if heatmap_node.GetDisplayNode() is None:
        heatmap_node.CreateDefaultDisplayNodes()
    display = heatmap_node.GetDisplayNode()
    scene = heatmap_node.GetScene()
    candidates = (color_node_id,) if color_node_id else DEFAULT_COLOR_NODE_IDS
    for candidate in candidates:
        if scene is not None and scene.GetNodeByID(candidate) is not None:
            display.SetAndObserveColorNodeID(candidate)
            break
    display.AutoWindowLevelOff()
    display.SetWindowLevelMinMax(0.0, 1.0)
    set_threshold(heatmap_node, threshold)


def set_threshold(heatmap_node, threshold: float) -> None:
    """Hide voxels kept with a probability below ``threshold`` (0 shows all)."""
    display = heatmap_node.GetDisplayNode()
    display.SetApplyThreshold(threshold > 0)
    display.SetLowerThreshold(float(threshold))
    display.SetUpperThreshold(1.0)


def slice_composite_nodes(scene) -> list:
    nodes = scene.GetNodesByClass("vtkMRMLSliceCompositeNode")
    return [nodes.GetItemAsObject(index) for index in range(nodes.GetNumberOfItems())]


def show_heatmap(volume_node, heatmap_node, opacity: float = DEFAULT_OPACITY) -> None:
    """Volume as background and heatmap as foreground, at ``opacity``, in every slice view."""
    for composite in slice_composite_nodes(volume_node.GetScene()):
        composite.SetBackgroundVolumeID(volume_node.GetID())
        composite.SetForegroundVolumeID(heatmap_node.GetID())
        composite.SetForegroundOpacity(float(opacity))


def set_opacity(scene, heatmap_node, opacity: float) -> None:
    for composite in slice_composite_nodes(scene):
        if composite.GetForegroundVolumeID() == heatmap_node.GetID():
            composite.SetForegroundOpacity(float(opacity))


def hide_heatmap(scene, heatmap_node=None) -> None:
    """Remove the heatmap (or any heatmap, when None) from the foreground of every slice view."""
    for composite in slice_composite_nodes(scene):
        if heatmap_node is None or composite.GetForegroundVolumeID() == heatmap_node.GetID():
            composite.SetForegroundVolumeID(None)
