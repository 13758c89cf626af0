"""Mapping model output (a value per token or per model voxel) back onto the original volume.

A token covers a block of model voxels: with patch 14^3 and a 2 x 2 spatial merge, token
``(t, h, w)`` of a 10 x 10 x 10 grid covers model voxels ``[14t, 14t+14) x [28h, 28h+28) x
[28w, 28w+28)``. The token grid is therefore itself a voxel grid, whose voxel centres are the
block centres: same direction as the model grid, spacing multiplied by the block size. Mapping
back is one resampling of that grid onto the source volume's grid, so the result lands on the
right voxels for any orientation, spacing, oblique direction, crop or pad.

``interpolation="nearest"`` (the default) gives every source voxel the value of the token whose
block contains it: exact, blocky. ``"linear"`` smooths between token centres for display.
Source voxels outside the model's field of view (cropped away) get ``fill_value``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import SimpleITK as sitk

from photonlib.errors import ConfigurationError
from photonlib.geometry import VolumeGeometry
from photonlib.volume.image import geometry_to_sitk, reference_image
from photonlib.volume.preprocess import PreparedVolume
from photonlib.volume.writer import write_volume

Interpolation = Literal["nearest", "linear"]


def block_grid_geometry(model_geometry: VolumeGeometry, grid_shape_dhw: tuple[int, int, int]) -> VolumeGeometry:
    """Geometry of a coarse grid whose voxels are equal blocks of the model grid.

    ``grid_shape_dhw`` is the token grid shape ``(t, h, w)`` (or the model grid itself); each of
    its sizes must divide the model grid's size along that axis.
    """
    model_dhw = model_geometry.array_shape
    grid_shape_dhw = tuple(int(n) for n in grid_shape_dhw)
    if len(grid_shape_dhw) != 3 or any(n < 1 for n in grid_shape_dhw):
        raise ValueError(f"a token grid needs three positive sizes (t, h, w), got {grid_shape_dhw}")
    if any(m % n for m, n in zip(model_dhw, grid_shape_dhw)):
        raise ValueError(
            f"token grid {grid_shape_dhw} does not divide the model grid {model_dhw} into equal blocks"
        )
    block_ijk = np.array([m // n for m, n in zip(model_dhw, grid_shape_dhw)][::-1], dtype=float)
    first_centre = model_geometry.index_to_lps((block_ijk - 1) / 2)
    spacing = np.array(model_geometry.spacing) * block_ijk
    return VolumeGeometry(grid_shape_dhw[::-1], tuple(spacing), tuple(first_centre), model_geometry.direction)


def map_to_source(
    values_dhw: np.ndarray,
    prepared: PreparedVolume,
    *,
    interpolation: Interpolation = "nearest",
    fill_value: float = 0.0,
) -> np.ndarray:
    """Resample per-token (or per-model-voxel) values onto the source volume's grid.

    Returns a float32 array in the source volume's KJI order (shape
    ``prepared.source_geometry.array_shape``).
    """
    values = np.asarray(values_dhw, dtype=np.float32)
    if values.ndim != 3:
        raise ValueError(f"values must be a 3D (t, h, w) grid, got shape {values.shape}")
    if not np.all(np.isfinite(values)):
        raise ValueError("values contain NaN or infinite entries")
    grid = block_grid_geometry(prepared.geometry, values.shape)
    if interpolation == "nearest":
        interpolator = sitk.sitkNearestNeighbor
    elif interpolation == "linear":
        interpolator = sitk.sitkLinear
    else:
        raise ConfigurationError(f"interpolation must be 'nearest' or 'linear', got {interpolation!r}")
    resampled = sitk.Resample(
        geometry_to_sitk(np.ascontiguousarray(values), grid),
        reference_image(prepared.source_geometry),
        sitk.Transform(),
        interpolator,
        float(fill_value),
        sitk.sitkFloat32,
    )
    return sitk.GetArrayFromImage(resampled)


def write_heatmap(
    path: str | Path,
    values_dhw: np.ndarray,
    prepared: PreparedVolume,
    *,
    interpolation: Interpolation = "nearest",
    fill_value: float = 0.0,
) -> Path:
    """Map values back (see :func:`map_to_source`) and write them with the source geometry."""
    array = map_to_source(values_dhw, prepared, interpolation=interpolation, fill_value=fill_value)
    return write_volume(path, array, prepared.source_geometry)
