"""Writing volumes (and heatmaps) to NRRD, NIfTI or MetaImage with their exact geometry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from photonlib.geometry import VolumeGeometry
from photonlib.volume.errors import UnsupportedFormatError
from photonlib.volume.formats import IMAGE_FILE_FORMATS, volume_file_suffix
from photonlib.volume.image import geometry_to_sitk


def write_volume(path: str | Path, array_kji: np.ndarray, geometry: VolumeGeometry, *, compress: bool = True) -> Path:
    """Write a KJI array with ``geometry`` to ``path``; the suffix picks the format.

    NRRD and MetaImage store the LPS geometry as is; NIfTI stores it as RAS qform/sform,
    which SimpleITK converts exactly for orthonormal directions.
    """
    path = Path(path)
    suffix = volume_file_suffix(path.name) if not path.is_dir() else None
    if suffix not in IMAGE_FILE_FORMATS:
        accepted = ", ".join(sorted(IMAGE_FILE_FORMATS))
        raise UnsupportedFormatError(f"{path.name}: cannot write this format; use one of {accepted}")
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(geometry_to_sitk(np.ascontiguousarray(array_kji), geometry), str(path), compress)
    return path
