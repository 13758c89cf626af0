"""Decoding the pixels of one DICOM series into a :class:`~photonlib.volume.image.Volume`.

The slice order and geometry come from :mod:`photonlib.volume.dicom.geometry`, and the size is
checked before any pixel is read. SimpleITK (GDCM) then decodes the pixels, because it handles
the compressed transfer syntaxes and applies ``RescaleSlope``/``RescaleIntercept``; it is given
the files in the sorted order, and an enhanced (multi-frame) file's frames are reordered after
reading. The geometry returned is the headers' own: SimpleITK's is only compared with it, and
a disagreement goes into the volume's notes (:mod:`photonlib.volume.dicom` says when the two
differ). When decoding fails, the files are tried one by one so the message names the file.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from photonlib.geometry import VolumeGeometry
from photonlib.volume.dicom.geometry import stack_geometry
from photonlib.volume.dicom.headers import DicomImage
from photonlib.volume.dicom.scan import name_list, series_label
from photonlib.volume.errors import InconsistentDicomSeriesError, UnreadableVolumeError
from photonlib.volume.image import ReadLimits, Volume, geometry_from_sitk, validate_voxels
from photonlib.volume.library_messages import itk_error_reason

#: How closely SimpleITK's geometry must agree with the headers' before a note is written;
#: ITK's series reader computes the slice step in single precision.
SITK_AGREEMENT_MM = 1e-3
SITK_AGREEMENT_DIRECTION = 1e-4


def read_images(images: list[DicomImage], limits: ReadLimits, notes: list[str]) -> Volume:
    """Check the images form one grid, check its size against ``limits``, then read the pixels.

    ``notes`` (what the caller noticed so far) are kept, after a summary, in the volume's notes.
    """
    label = series_label(images)
    files = sorted({image.path for image in images})
    multi_frame = any(image.frame_index is not None for image in images)
    if multi_frame and len(files) > 1:
        raise InconsistentDicomSeriesError(
            f"{label} is stored in {len(files)} files of which some hold several frames ({name_list(files)}); "
            "read one multi-frame file at a time by passing its path"
        )
    sorted_images, geometry = stack_geometry(images, label)
    limits.check(geometry.size, label)

    rescales = {image.rescale for image in sorted_images}
    if multi_frame:
        if len(rescales) > 1:
            raise InconsistentDicomSeriesError(
                f"{label}: the frames of {files[0].name} have {len(rescales)} different rescale slopes/intercepts, "
                "which the pixel reader cannot apply frame by frame; convert the file to single-frame slices"
            )
        image = _read_sitk([files[0]], label, float_output=False, reader=_read_single_file)
        _require_described_size(image, geometry, label)
        frame_order = [im.frame_index for im in sorted_images]
        array = sitk.GetArrayFromImage(image)
        if frame_order != sorted(frame_order):
            array = array[frame_order]
            notes.append("the frames were stored out of order and were put in order along the slice normal")
        else:
            _note_sitk_disagreement(image, geometry, notes)
    else:
        # ITK's series reader takes the pixel type from the first slice; when slices are scaled
        # differently the others would be cut to it, so ask for floats.
        varying_rescale = len(rescales) > 1
        if varying_rescale:
            notes.append(f"slices have {len(rescales)} different rescale slopes/intercepts: read as float32")
        image = _read_sitk([im.path for im in sorted_images], label, float_output=varying_rescale,
                           reader=_read_series)
        _require_described_size(image, geometry, label)
        array = sitk.GetArrayFromImage(image)
        _note_sitk_disagreement(image, geometry, notes)

    validate_voxels(array, label)
    first = sorted_images[0]
    summary = f"{label}: {len(sorted_images)} slices sorted along the slice normal by ImagePositionPatient"
    return Volume(
        array=array,
        geometry=geometry,
        source_format="dicom",
        modality=first.modality,
        notes=(summary, *notes),
    )


def _require_described_size(image: sitk.Image, geometry: VolumeGeometry, label: str) -> None:
    """The pixels must be the grid the headers describe (one greyscale value per voxel)."""
    if tuple(image.GetSize()) != geometry.size or image.GetNumberOfComponentsPerPixel() != 1:
        raise UnreadableVolumeError(
            f"{label}: the pixel reader returned {image.GetNumberOfComponentsPerPixel()} component(s) of size "
            f"{image.GetSize()}, but the headers describe one component of size {geometry.size}"
        )


def _read_series(files: Sequence[Path], float_output: bool) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetImageIO("GDCMImageIO")
    reader.SetFileNames([str(path) for path in files])  # our order: sorted along the normal
    if float_output:
        reader.SetOutputPixelType(sitk.sitkFloat32)
    return reader.Execute()


def _read_single_file(files: Sequence[Path], float_output: bool) -> sitk.Image:
    reader = sitk.ImageFileReader()
    reader.SetImageIO("GDCMImageIO")
    reader.SetFileName(str(files[0]))
    if float_output:
        reader.SetOutputPixelType(sitk.sitkFloat32)
    return reader.Execute()


def _read_sitk(
    files: Sequence[Path], label: str, *, float_output: bool, reader: Callable[[Sequence[Path], bool], sitk.Image]
) -> sitk.Image:
    """Read pixels; when that fails, find the file at fault so the message can name it."""
    # ITK warns on stderr about slice spacing it considers non-uniform; the headers were
    # already checked with explicit tolerances, so the warning would only confuse users.
    warnings_were_shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        return reader(files, float_output)
    except RuntimeError as error:
        reason = itk_error_reason(error)
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(warnings_were_shown)
    if len(files) > 1:
        # ITK's series reader does not say which file failed: try them one by one.
        for path in files:
            try:
                _read_single_file([path], float_output)
            except RuntimeError as error:
                raise UnreadableVolumeError(
                    f"{path.name}: the pixel data of this slice of {label} cannot be read; the file may be "
                    f"truncated or corrupt ({itk_error_reason(error)})"
                ) from None
    what = files[0].name if len(files) == 1 else f"its {len(files)} files"
    raise UnreadableVolumeError(
        f"{label}: the pixel data of {what} cannot be read; the file may be truncated, corrupt or use an "
        f"unsupported compression ({reason})"
    )


def _note_sitk_disagreement(image: sitk.Image, header_geometry: VolumeGeometry, notes: list[str]) -> None:
    """Note where SimpleITK's geometry differs from the headers' (the headers' is used)."""
    if image.GetDimension() != 3:
        return
    itk_geometry = geometry_from_sitk(image) if _is_orthonormal(image) else None
    if itk_geometry is not None and itk_geometry.isclose(
        header_geometry, atol_mm=SITK_AGREEMENT_MM, atol_direction=SITK_AGREEMENT_DIRECTION
    ):
        return
    differences = []
    if not np.allclose(image.GetSpacing(), header_geometry.spacing, atol=SITK_AGREEMENT_MM, rtol=0):
        differences.append(f"spacing {_rounded(image.GetSpacing())} vs {_rounded(header_geometry.spacing)}")
    if not np.allclose(image.GetOrigin(), header_geometry.origin_lps, atol=SITK_AGREEMENT_MM, rtol=0):
        differences.append(f"origin {_rounded(image.GetOrigin())} vs {_rounded(header_geometry.origin_lps)}")
    itk_direction = np.reshape(image.GetDirection(), (3, 3))
    if not np.allclose(itk_direction, header_geometry.direction, atol=SITK_AGREEMENT_DIRECTION):
        differences.append("direction")
    notes.append(
        "SimpleITK (GDCM) derived a different geometry (" + "; ".join(differences or ["size"]) + "); the geometry "
        "computed from ImagePositionPatient, ImageOrientationPatient and PixelSpacing was used"
    )


def _is_orthonormal(image: sitk.Image) -> bool:
    direction = np.reshape(image.GetDirection(), (3, 3))
    return bool(np.allclose(direction.T @ direction, np.eye(3), atol=1e-4))


def _rounded(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"
