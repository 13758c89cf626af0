"""Volume nodes <-> (KJI array, VolumeGeometry), and the heatmap volume on the input's exact grid.

Runs under plain Python with ``slicer-core`` (no Qt, no ``slicer.app``). Geometry always comes
from the node's IJKToRAS matrix, so oblique, anisotropic and flipped volumes keep their
orientation; the heatmap node gets that very matrix (not one rebuilt from the server's
answer) and the input's parent transform, so it overlays the input voxel for voxel.
"""

from __future__ import annotations

import numpy as np
import slicer
import vtk

from .backend import VolumeGeometry

#: Node reference from an input volume to its most recent heatmap.
HEATMAP_REFERENCE_ROLE = "PhotonHeatmap"
#: Attribute marking nodes made by this module (and which input they belong to).
SOURCE_VOLUME_ATTRIBUTE = "Photon.SourceVolumeID"


def ijk_to_ras_matrix(volume_node) -> np.ndarray:
    """The node's IJKToRAS as a 4x4 NumPy array."""
    matrix = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(matrix)
    return np.array([[matrix.GetElement(row, column) for column in range(4)] for row in range(4)])


def volume_array_and_geometry(volume_node) -> tuple[np.ndarray, VolumeGeometry]:
    """Voxels (KJI, as ``slicer.util.arrayFromVolume``) and the geometry to send to the backend.

    Raises ValueError for what the backend cannot take (no image data, not 3D, vector voxels).
    """
    if volume_node is None or volume_node.GetImageData() is None:
        raise ValueError("Select a volume that has image data.")
    if not volume_node.IsA("vtkMRMLScalarVolumeNode") or volume_node.GetImageData().GetNumberOfScalarComponents() != 1:
        raise ValueError("Photon needs a single-channel (grayscale) CT or MR volume, not a colour or vector volume.")
    array = np.array(slicer.util.arrayFromVolume(volume_node))  # a copy: the node may change meanwhile
    if array.ndim != 3 or min(array.shape) < 1:
        raise ValueError(f"Photon needs a 3D volume, this one has shape {array.shape}.")
    size = tuple(int(n) for n in array.shape[::-1])  # (I, J, K)
    return array, VolumeGeometry.from_ijk_to_ras(ijk_to_ras_matrix(volume_node), size)


def add_heatmap_volume(heatmap_kji: np.ndarray, source_volume_node, name: str | None = None):
    """Create the heatmap scalar volume with EXACTLY the source's IJKToRAS and parent transform.

    The array must have the source's shape (the backend resamples the heatmap to the uploaded
    grid); a different shape means the answer belongs to another volume, so it is refused.
    """
    source_shape = slicer.util.arrayFromVolume(source_volume_node).shape
    heatmap_kji = np.asarray(heatmap_kji, dtype=np.float32)
    if heatmap_kji.shape != source_shape:
        raise ValueError(f"The heatmap grid {heatmap_kji.shape} does not match the volume {source_shape}.")
    name = name or f"{source_volume_node.GetName()} Photon heatmap"
    scene = source_volume_node.GetScene()
    name = scene.GenerateUniqueName(name) if scene is not None else name
    heatmap_node = slicer.util.addVolumeFromArray(
        heatmap_kji, ijkToRAS=ijk_to_ras_matrix(source_volume_node), name=name
    )
    heatmap_node.SetAttribute(SOURCE_VOLUME_ATTRIBUTE, source_volume_node.GetID())
    if source_volume_node.GetTransformNodeID():
        heatmap_node.SetAndObserveTransformNodeID(source_volume_node.GetTransformNodeID())
    source_volume_node.SetNodeReferenceID(HEATMAP_REFERENCE_ROLE, heatmap_node.GetID())
    return heatmap_node


def heatmap_matches_volume(heatmap_geometry: VolumeGeometry, volume_geometry: VolumeGeometry) -> bool:
    """True when the backend's heatmap lies on the grid that was sent (a cheap sanity check)."""
    return heatmap_geometry.isclose(volume_geometry, atol_mm=1e-3, atol_direction=1e-5)


def most_kept_position_ras(heatmap_node) -> tuple[float, float, float]:
    """RAS position (before any parent transform) of the voxel with the highest keep probability."""
    array = slicer.util.arrayFromVolume(heatmap_node)
    k, j, i = np.unravel_index(int(np.argmax(array)), array.shape)
    return tuple(float(v) for v in (ijk_to_ras_matrix(heatmap_node) @ np.array([i, j, k, 1.0]))[:3])


def most_kept_position_world(heatmap_node) -> tuple[float, float, float]:
    """World RAS position of the most-kept voxel (after the heatmap's parent transforms): where to jump."""
    position = most_kept_position_ras(heatmap_node)
    parent = heatmap_node.GetParentTransformNode()
    if parent is None:
        return position
    to_world = vtk.vtkGeneralTransform()
    parent.GetTransformToWorld(to_world)
    return tuple(float(v) for v in to_world.TransformPoint(position))
