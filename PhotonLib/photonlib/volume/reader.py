"""One reader for every volume PhotonLib accepts.

``read_volume(path)`` takes NIfTI (.nii, .nii.gz), NRRD (.nrrd, .nhdr), MetaImage (.mha, .mhd),
a DICOM series (a folder, or one file of the series) and benchmark ``.npy`` arrays, and returns
a :class:`~photonlib.volume.image.Volume` with exact geometry, or raises a specific
:class:`~photonlib.volume.errors.VolumeError`.
"""

from __future__ import annotations

import gzip
import zipfile
import zlib
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from photonlib.geometry import VolumeGeometry
from photonlib.volume.dicom import read_dicom_series
from photonlib.volume.errors import (
    MultiComponentVolumeError,
    NotThreeDimensionalError,
    UnreadableVolumeError,
    UnsupportedFormatError,
)
from photonlib.volume.formats import ACCEPTED_INPUTS, IMAGE_FILE_FORMATS, NPY_SUFFIX, volume_file_suffix
from photonlib.volume.image import ReadLimits, Volume, geometry_from_sitk, validate_voxels
from photonlib.volume.library_messages import itk_error_reason, one_line

NPY_NOTE = (
    "benchmark .npy array: no geometry is stored, so identity direction, 1 mm spacing and "
    "origin 0 are assumed (array axes D, H, W = k, j, i)"
)


def format_of(path: Path) -> str | None:
    """Format name for a path, from its suffix; ``"dicom"`` for folders and DICOM files."""
    if path.is_dir():
        return "dicom"
    suffix = volume_file_suffix(path.name)
    if suffix == NPY_SUFFIX:
        return "npy"
    if suffix is not None:
        return IMAGE_FILE_FORMATS[suffix]
    if path.name.lower().endswith(".dcm") or _has_dicom_preamble(path):
        return "dicom"
    return None


def _has_dicom_preamble(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def read_volume(
    path: str | Path,
    *,
    series_uid: str | None = None,
    component: int | None = None,
    timepoint: int | None = None,
    limits: ReadLimits = ReadLimits(),
) -> Volume:
    """Read a 3D medical image from disk with its exact geometry.

    Args:
        path: an image file, a DICOM folder or file, or a ``.npy`` array.
        series_uid: which DICOM series to read when a folder holds several.
        component: which component to keep for multi-component images (e.g. RGB, tensors)
            and multi-channel ``.npy`` arrays.
        timepoint: which volume to keep from a 4D image (time series, DWI).
        limits: size limits, checked before pixel data are read.
    """
    path = Path(path)
    if not path.exists():
        raise UnreadableVolumeError(f"{path}: no such file or folder")
    fmt = format_of(path)
    if fmt is None:
        raise UnsupportedFormatError(f"{path.name}: not a volume format PhotonLib reads; accepted: {ACCEPTED_INPUTS}")
    if fmt == "dicom":
        return read_dicom_series(path, series_uid=series_uid, limits=limits)
    if fmt == "npy":
        return _read_npy(path, component=component, limits=limits)
    return _read_image_file(path, fmt, component=component, timepoint=timepoint, limits=limits)


def _read_image_file(
    path: Path, fmt: str, *, component: int | None, timepoint: int | None, limits: ReadLimits
) -> Volume:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as error:
        raise UnreadableVolumeError(f"{path.name}: not a readable {fmt} file ({itk_error_reason(error)})") from None

    size = tuple(reader.GetSize())
    components = reader.GetNumberOfComponents()
    limits.check(size, path.name, components)
    _check_dimensions(path.name, size, components, component, timepoint)
    if fmt == "nifti":
        _check_nifti_length(path, size, components, reader.GetPixelID())

    try:
        image = reader.Execute()
    except RuntimeError as error:
        raise UnreadableVolumeError(
            f"{path.name}: the header is valid but the voxel data could not be read; "
            f"the file may be truncated or corrupt ({itk_error_reason(error)})"
        ) from None

    if image.GetDimension() == 4:
        index = 0 if timepoint is None else timepoint  # size 1 along t when no choice was needed
        extract_size = list(image.GetSize()[:3]) + [0]
        image = sitk.Extract(image, extract_size, [0, 0, 0, index])
    if image.GetNumberOfComponentsPerPixel() > 1:
        image = sitk.VectorIndexSelectionCast(image, component or 0)

    array = sitk.GetArrayFromImage(image)
    validate_voxels(array, path.name)
    return Volume(array=array, geometry=geometry_from_sitk(image), source_format=fmt)


def _check_dimensions(
    name: str, size: tuple[int, ...], components: int, component: int | None, timepoint: int | None
) -> None:
    """Refuse 2D images and make 4D / multi-component images name the part to read."""
    if len(size) < 3:
        raise NotThreeDimensionalError(f"{name}: a {len(size)}D image of size {size}; Photon needs a 3D volume")
    if len(size) > 4:
        raise MultiComponentVolumeError(f"{name}: a {len(size)}D image of size {size}; only 3D volumes are accepted")
    if any(n < 2 for n in size[:3]):
        raise NotThreeDimensionalError(
            f"{name}: size {size[:3]} has a single voxel along an axis, so it is a 2D image; "
            "Photon needs a 3D volume"
        )
    if len(size) == 4 and size[3] > 1:
        if timepoint is None:
            raise MultiComponentVolumeError(
                f"{name}: a 4D image with {size[3]} volumes (size {size}); choose one with "
                f"timepoint=0..{size[3] - 1} (CLI: --timepoint N)"
            )
        if not 0 <= timepoint < size[3]:
            raise MultiComponentVolumeError(f"{name}: timepoint {timepoint} is out of range 0..{size[3] - 1}")
    if components > 1:
        if component is None:
            raise MultiComponentVolumeError(
                f"{name}: {components} components per voxel (e.g. colour or vector data); choose one "
                f"with component=0..{components - 1} (CLI: --component N)"
            )
        if not 0 <= component < components:
            raise MultiComponentVolumeError(f"{name}: component {component} is out of range 0..{components - 1}")


def _check_nifti_length(path: Path, size: tuple[int, ...], components: int, pixel_id: int) -> None:
    """Refuse a truncated NIfTI: ITK's NIfTI reader fills missing voxel data with zeros silently."""
    bytes_per_value = sitk.GetArrayViewFromImage(sitk.Image([1, 1], pixel_id)).itemsize
    expected = int(np.prod(size, dtype=np.int64)) * components * bytes_per_value
    if path.name.lower().endswith(".gz"):
        actual = 0
        try:  # stream through the whole file: a cut gzip stream only shows at its end
            with gzip.open(path, "rb") as stream:
                while chunk := stream.read(1 << 22):
                    actual += len(chunk)
        except (EOFError, OSError, zlib.error) as error:
            raise UnreadableVolumeError(
                f"{path.name}: the compressed data are cut short or corrupt; the file is truncated ({one_line(error, 120)})"
            ) from None
    else:
        actual = path.stat().st_size
    if actual < expected:  # the header (348+ bytes) comes on top, so this is a lower bound
        raise UnreadableVolumeError(
            f"{path.name}: the header promises {expected:,} bytes of voxel data but the file holds "
            f"{actual:,} bytes; the file is truncated"
        )


def _read_npy(path: Path, *, component: int | None, limits: ReadLimits) -> Volume:
    """Benchmark arrays (3D-RAD, M3D): (D, H, W), (1, D, H, W) or (C, D, H, W)."""
    try:
        # mmap reads the header only, so the size check happens before any pixel data is read;
        # allow_pickle=False refuses object arrays, which could run code on load.
        data = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
        raise UnreadableVolumeError(
            f"{path.name}: not a readable .npy array; it may be truncated or hold Python objects ({one_line(error, 160)})"
        ) from None
    shape = tuple(int(n) for n in data.shape)
    if not (np.issubdtype(data.dtype, np.number) or data.dtype == np.bool_):
        raise UnreadableVolumeError(f"{path.name}: a .npy array of dtype {data.dtype}; a numeric array is needed")
    if data.ndim == 4:
        limits.check(shape[1:], path.name, shape[0])
        _check_dimensions(path.name, shape[1:], shape[0], component if shape[0] > 1 else 0, None)
        data = data[component or 0]
    elif data.ndim == 3:
        limits.check(shape, path.name)
        _check_dimensions(path.name, shape, 1, None, None)
    else:
        raise NotThreeDimensionalError(
            f"{path.name}: a .npy array of shape {shape}; accepted shapes are (D, H, W) and (C, D, H, W)"
        )
    array = np.array(data)  # leave the memory map
    validate_voxels(array, path.name)
    low, high = float(array.min()), float(array.max())
    normalized = low >= -1e-6 and high <= 1 + 1e-6
    notes = [NPY_NOTE]
    if not normalized:
        notes.append(f"values span [{low:g}, {high:g}], not [0, 1]: treated as raw intensities")
    size = tuple(reversed(array.shape))
    return Volume(
        array=array,
        geometry=VolumeGeometry.identity(size),
        source_format="npy",
        intensity_normalized=normalized,
        notes=tuple(notes),
    )
