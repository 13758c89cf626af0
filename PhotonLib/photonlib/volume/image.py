"""The in-memory volume: a voxel array that never travels without its geometry."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import SimpleITK as sitk

from photonlib.geometry import VolumeGeometry
from photonlib.volume.errors import EmptyVolumeError, NonFiniteVolumeError, VolumeTooLargeError


@dataclass(frozen=True)
class ReadLimits:
    """Sizes above which a volume is refused before its pixel data are read.

    The defaults admit any clinical CT or MR (a 1024 x 1024 x 512 volume is the largest)
    and refuse files whose header promises an absurd allocation.
    """

    max_voxels: int = 1024 * 1024 * 512
    max_dimension: int = 4096

    def check(self, size: tuple[int, ...], what: str, components: int = 1) -> None:
        """Raise :class:`VolumeTooLargeError` when ``size`` (any number of axes) is too large."""
        largest = max(size) if size else 0
        if largest > self.max_dimension:
            raise VolumeTooLargeError(
                f"{what} has {largest} voxels along one axis (size {tuple(size)}); "
                f"the limit is {self.max_dimension} per axis"
            )
        voxels = int(np.prod(size, dtype=np.int64)) * int(components)
        if voxels > self.max_voxels:
            raise VolumeTooLargeError(
                f"{what} has {voxels:,} voxels (size {tuple(size)}"
                + (f" x {components} components" if components > 1 else "")
                + f"); the limit is {self.max_voxels:,}"
            )


@dataclass(frozen=True)
class Volume:
    """A 3D scalar image in patient space.

    ``array`` is indexed ``[k, j, i]`` (see :mod:`photonlib.geometry`); its shape always equals
    ``geometry.array_shape``.
    """

    array: np.ndarray
    geometry: VolumeGeometry
    source_format: str
    modality: str | None = None  # "CT", "MR", ... when the file says so (DICOM); else None
    intensity_normalized: bool = False  # True for benchmark arrays already scaled to [0, 1]
    notes: tuple[str, ...] = field(default_factory=tuple)  # facts the reader assumed or found

    def __post_init__(self) -> None:
        if self.array.ndim != 3 or tuple(self.array.shape) != self.geometry.array_shape:
            raise ValueError(
                f"array shape {self.array.shape} does not match geometry size {self.geometry.size} "
                f"(expected KJI shape {self.geometry.array_shape})"
            )

    @property
    def intensity_range(self) -> tuple[float, float]:
        return float(np.min(self.array)), float(np.max(self.array))

    def describe(self) -> dict[str, Any]:
        """Summary for ``photon info``: geometry, intensities and what the reader assumed."""
        low, high = self.intensity_range
        summary = {"format": self.source_format, "modality": self.modality}
        summary.update(self.geometry.describe())
        summary.update(
            {
                "dtype": str(self.array.dtype),
                "intensity_range": [low, high],
                "intensity_normalized": self.intensity_normalized,
                "notes": list(self.notes),
            }
        )
        return summary

    def to_sitk(self) -> sitk.Image:
        """A SimpleITK image with the same voxels and geometry (array copied)."""
        return geometry_to_sitk(np.ascontiguousarray(self.array), self.geometry)


def geometry_from_sitk(image: sitk.Image) -> VolumeGeometry:
    return VolumeGeometry(image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection())


def geometry_to_sitk(array_kji: np.ndarray, geometry: VolumeGeometry) -> sitk.Image:
    """Wrap a KJI array in a SimpleITK image carrying ``geometry``."""
    if tuple(array_kji.shape) != geometry.array_shape:
        raise ValueError(f"array shape {array_kji.shape} does not match geometry {geometry.size}")
    image = sitk.GetImageFromArray(array_kji)
    image.SetSpacing(geometry.spacing)
    image.SetOrigin(geometry.origin_lps)
    image.SetDirection(np.asarray(geometry.direction).flatten().tolist())
    return image


def reference_image(geometry: VolumeGeometry) -> sitk.Image:
    """An empty (1-byte) image that only carries a grid, as a resampling target."""
    image = sitk.Image(list(geometry.size), sitk.sitkUInt8)
    image.SetSpacing(geometry.spacing)
    image.SetOrigin(geometry.origin_lps)
    image.SetDirection(np.asarray(geometry.direction).flatten().tolist())
    return image


def validate_voxels(array: np.ndarray, what: str) -> None:
    """Refuse empty, blank (constant) and non-finite volumes with a message that says where."""
    if array.size == 0:
        raise EmptyVolumeError(f"{what} has no voxels (shape {tuple(array.shape)})")
    if np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.complexfloating):
        finite = np.isfinite(array)
        if not finite.all():
            bad = int(array.size - np.count_nonzero(finite))
            first = tuple(int(v) for v in np.argwhere(~finite)[0][::-1])
            raise NonFiniteVolumeError(
                f"{what} has {bad:,} NaN or infinite voxels (first at index i,j,k={first}); "
                "fix or mask them before asking about this volume"
            )
    low, high = np.min(array), np.max(array)
    if low == high:
        raise EmptyVolumeError(f"{what} is blank: every voxel has the value {float(low):g}")
