"""A PNG for people who would rather look than read: three slices with the heatmap on top.

The three panels cut the volume through the voxel where the keep probability is highest, along
its own index axes (k: "axial" for an axial scan, j, i), each resampled to square pixels so
anatomy keeps its proportions. Grey: the image in its display window; warm colours: keep
probability where the token was kept (transparent where it was dropped).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from photonlib.geometry import VolumeGeometry


def _square_pixels(plane: np.ndarray, row_spacing: float, column_spacing: float, order: int) -> np.ndarray:
    """Resample a 2D plane (rows, columns) so both pixel sides equal the finer spacing."""
    image = sitk.GetImageFromArray(plane.astype(np.float32))
    image.SetSpacing((column_spacing, row_spacing))
    target = min(row_spacing, column_spacing)
    size = [max(1, round(plane.shape[1] * column_spacing / target)), max(1, round(plane.shape[0] * row_spacing / target))]
    interpolator = sitk.sitkLinear if order else sitk.sitkNearestNeighbor
    resampled = sitk.Resample(image, size, sitk.Transform(), interpolator, (0.0, 0.0), (target, target), (1, 0, 0, 1), 0.0)
    return sitk.GetArrayFromImage(resampled)


def _heat_colours(values: np.ndarray) -> np.ndarray:
    """Keep probability in [0, 1] -> RGB from dark red through orange to yellow."""
    v = np.clip(values, 0, 1)[..., None]
    dark, bright = np.array([0.55, 0.0, 0.0]), np.array([1.0, 0.95, 0.2])
    return dark + (bright - dark) * v


def overlay_panels(
    image_kji: np.ndarray,
    heatmap_kji: np.ndarray,
    geometry: VolumeGeometry,
    window: tuple[float, float],
    opacity: float = 0.45,
) -> np.ndarray:
    """The three-panel RGB picture (uint8, rows x columns x 3)."""
    if image_kji.shape != heatmap_kji.shape:
        raise ValueError(f"image {image_kji.shape} and heatmap {heatmap_kji.shape} differ in shape")
    k, j, i = np.unravel_index(int(np.argmax(heatmap_kji)), heatmap_kji.shape)
    si, sj, sk = geometry.spacing
    planes = [
        (image_kji[k], heatmap_kji[k], sj, si),  # rows j, columns i
        (image_kji[:, j, :], heatmap_kji[:, j, :], sk, si),  # rows k, columns i
        (image_kji[:, :, i], heatmap_kji[:, :, i], sk, sj),  # rows k, columns j
    ]
    low, high = window
    panels = []
    for image, heat, row_spacing, column_spacing in planes:
        grey = np.clip((_square_pixels(image, row_spacing, column_spacing, 1) - low) / (high - low), 0, 1)
        heat = _square_pixels(heat, row_spacing, column_spacing, 0)
        rgb = np.repeat(grey[..., None], 3, axis=-1)
        alpha = (opacity * (heat > 0.5))[..., None]  # dropped tokens (p <= 0.5) stay clear
        rgb = rgb * (1 - alpha) + _heat_colours(heat) * alpha
        panels.append(rgb)
    height = max(panel.shape[0] for panel in panels)
    padded = [np.pad(panel, ((0, height - panel.shape[0]), (0, 4), (0, 0))) for panel in panels]
    picture = (np.concatenate(padded, axis=1) * 255).round().astype(np.uint8)
    scale = max(1, 900 // picture.shape[1])  # small volumes: enlarge so a person can see them
    return picture.repeat(scale, axis=0).repeat(scale, axis=1)


def write_overlay_png(
    path: str | Path,
    image_kji: np.ndarray,
    heatmap_kji: np.ndarray,
    geometry: VolumeGeometry,
    window: tuple[float, float],
) -> Path:
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"{path.name}: the picture is written as PNG; use a .png name")
    picture = overlay_panels(image_kji, heatmap_kji, geometry, window)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(sitk.GetImageFromArray(picture, isVector=True), str(path))
    return path
