"""A DICOM series (a folder, or one file of it) as one 3D volume with exact geometry.

How a series becomes a volume:

1. **Headers only.** pydicom reads every file's header (``stop_before_pixels=True``); files
   that are not DICOM (README, hidden files, DICOMDIR, images of other formats) are skipped.
   Files with ``Rows`` and ``Columns`` are images; they are grouped by ``SeriesInstanceUID``.
2. **Choose the series.** One series is read at a time: the only one, the one named by
   ``series_uid``, or the one the given file belongs to.
3. **Geometry from the headers.** Slices are sorted along the slice normal (row cosine x
   column cosine of ``ImageOrientationPatient``) by projecting ``ImagePositionPatient`` on it.
   The series is refused when it cannot be one regular grid: duplicated positions, missing
   slices, uneven spacing, gantry tilt, mixed sizes, spacings or orientations (see the
   tolerances below). The volume's index axes are i = along a row (row cosine), j = down
   a column (column cosine), k = the slice normal, so the grid is right-handed.
4. **Size check**, with :class:`~photonlib.volume.image.ReadLimits`, before any pixel is read.
5. **Pixels through SimpleITK (GDCM)**, in our sorted order: GDCM decodes compressed
   transfer syntaxes and applies ``RescaleSlope``/``RescaleIntercept``. An enhanced
   (multi-frame) CT or MR file is read whole and its frames are put in sorted order.
6. **The header geometry is the one returned.** SimpleITK's geometry is compared with it and
   any disagreement is reported in the volume's notes. SimpleITK takes origin and direction
   from the first file and the slice step from the first and last positions (in single
   precision), so for a series that passed the checks above the two agree to about 1e-4 mm.
   They differ where GDCM cannot work the geometry out itself: frames of a multi-frame file
   stored out of order (GDCM then falls back to 1 mm spacing on every axis), or files whose
   Image Plane attributes GDCM does not use for their SOP class.

Messages and notes name files, series UIDs, descriptions, modalities and counts, never
patient identifiers such as the patient's name, ID or dates.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue

from photonlib.geometry import VolumeGeometry
from photonlib.volume.errors import (
    AmbiguousDicomSeriesError,
    DicomSeriesError,
    InconsistentDicomSeriesError,
    MultiComponentVolumeError,
    NoDicomSeriesError,
    NotThreeDimensionalError,
    UnreadableVolumeError,
)
from photonlib.volume.image import ReadLimits, Volume, geometry_from_sitk, validate_voxels
from photonlib.volume.library_messages import itk_error_reason

__all__ = ["DicomSeriesInfo", "list_dicom_series", "read_dicom_series"]

# ----------------------------------------------------------------------------- tolerances
#: A slice may sit this far (in mm, in 3D) from where an evenly spaced, untilted grid puts it:
#: the larger of 0.01 mm and 1% of the slice step. 0.01 mm absorbs positions that scanners
#: round to a few decimals; 1% of the step (0.03 mm for 3 mm slices) is far below a voxel, so
#: the grid stays exact to well under a voxel, while real gantry tilts (degrees) and spacing
#: changes (tenths of a millimetre and more) are caught.
POSITION_TOLERANCE_MM = 0.01
POSITION_TOLERANCE_FRACTION_OF_STEP = 0.01
#: A step this many times the median step means slices are missing (not merely uneven).
MISSING_SLICE_GAP_FACTOR = 1.5
#: Slices whose direction cosines differ by more than this do not share one orientation
#: (1e-4 rad tilts a 250 mm field of view by 0.025 mm at its edge).
COSINE_TOLERANCE = 1e-4
#: Slices whose PixelSpacing values differ by more than this (mm) do not share one grid.
PIXEL_SPACING_TOLERANCE_MM = 1e-3
#: Row and column cosines this far from perpendicular (|cos|, about 0.06 degrees) are refused;
#: smaller errors come from decimal rounding and are removed by orthonormalising.
ORTHOGONALITY_TOLERANCE = 1e-3
#: How closely SimpleITK's geometry must agree with the headers' before a note is written;
#: ITK's series reader computes the slice step in single precision.
SITK_AGREEMENT_MM = 1e-3
SITK_AGREEMENT_DIRECTION = 1e-4

# Files that are never images: the DICOMDIR index of a CD/DVD export.
_NEVER_IMAGES = {"DICOMDIR"}
# Old (ACR-NEMA style) files have no 'DICM' preamble; only files named like DICOM files and
# small enough to be one slice are tried without it, so a large unrelated file is never parsed.
_PREAMBLE_LESS_SUFFIXES = {"", ".dcm", ".dicom", ".ima"}
_PREAMBLE_LESS_MAX_BYTES = 64 * 1024 * 1024
# Attributes that tell apart images of one series taken at the same place
# (several acquisitions, echoes or time points), named when positions are duplicated.
_STACK_KEYWORDS = ("AcquisitionNumber", "EchoNumbers", "TemporalPositionIdentifier", "TriggerTime", "ImageType")
_FRAME_STACK_KEYWORDS = ("StackID", "TemporalPositionIndex", "FrameAcquisitionNumber", "DimensionIndexValues")
CHOOSE_SERIES_HINT = "choose one with series_uid=UID (CLI: --series UID)"


@dataclass(frozen=True)
class DicomSeriesInfo:
    """One image series found in a folder: what a user needs to recognise and choose it."""

    series_uid: str
    modality: str | None
    description: str
    series_number: int | None
    slice_count: int  # 2D images: single-frame files plus the frames of multi-frame files
    file_count: int
    folder: Path  # the folder holding all of its files

    def summary(self) -> str:
        """One line such as ``1.2.3 (series 4, CT, 'Abdomen 1mm', 120 slices)``."""
        parts = [f"series {self.series_number}"] if self.series_number is not None else []
        parts.append(self.modality or "no modality")
        parts.append(f"'{self.description}'" if self.description else "no description")
        parts.append(f"{self.slice_count} slice" + ("" if self.slice_count == 1 else "s"))
        return f"{self.series_uid or '(no SeriesInstanceUID)'} ({', '.join(parts)})"


@dataclass(frozen=True)
class _DicomImage:
    """One 2D image: a single-frame file, or one frame of a multi-frame file."""

    path: Path
    frame_index: int | None  # None for a single-frame file
    sop_instance_uid: str
    series_uid: str
    modality: str | None
    description: str
    series_number: int | None
    instance_number: int | None
    rows: int
    columns: int
    samples_per_pixel: int
    pixel_spacing: tuple[float, float] | None  # DICOM order: (between rows, between columns)
    orientation: tuple[float, ...] | None  # row cosine (3) then column cosine (3)
    position: tuple[float, float, float] | None  # centre of the first pixel, LPS mm
    rescale: tuple[float, float]  # (slope, intercept)
    stack_labels: tuple[tuple[str, str], ...]  # (keyword, value) of _STACK_KEYWORDS present

    @property
    def name(self) -> str:
        """The file name, with the frame number for a frame of a multi-frame file."""
        return self.path.name if self.frame_index is None else f"{self.path.name} frame {self.frame_index + 1}"


@dataclass
class _FolderScan:
    images: list[_DicomImage]
    dicom_file_count: int  # files pydicom parsed, images or not
    files_looked_at: int
    unparsable: list[Path]  # files with a DICOM preamble that pydicom could not parse


# ============================================================================ public API
def list_dicom_series(path: str | Path) -> list[DicomSeriesInfo]:
    """The image series in a folder (searched recursively), ordered by series number.

    ``path`` may also be one DICOM file; then the series of its folder (not subfolders) are
    listed. Returns an empty list when there is no image series.
    """
    path = Path(path)
    if not path.exists():
        raise UnreadableVolumeError(f"{path}: no such file or folder")
    folder, recursive = (path, True) if path.is_dir() else (path.parent, False)
    scan = _scan_files(_candidate_files(folder, recursive))
    infos = [_series_info(images) for images in _group_by_series(scan.images).values()]
    return sorted(infos, key=lambda info: (info.series_number is None, info.series_number or 0, info.series_uid))


def read_dicom_series(path: Path, *, series_uid: str | None = None, limits: ReadLimits = ReadLimits()) -> Volume:
    """Read one DICOM image series as a 3D volume with the geometry its headers define.

    Args:
        path: a folder (searched recursively; non-DICOM files are skipped) or one DICOM file,
            whose series is then read from the files of its folder. A multi-frame file
            (enhanced CT/MR) is read on its own.
        series_uid: the ``SeriesInstanceUID`` to read when the folder holds several series.
        limits: size limits, checked before any pixel data is read.

    Raises:
        NoDicomSeriesError: no image series in the folder.
        AmbiguousDicomSeriesError: several series and no (or an unknown) ``series_uid``.
        InconsistentDicomSeriesError: the slices do not form one regular grid.
        NotThreeDimensionalError: the series has a single slice.
        UnreadableVolumeError: a file's pixel data cannot be decoded.
        VolumeTooLargeError: the series is larger than ``limits``.
    """
    path = Path(path)
    if not path.exists():
        raise UnreadableVolumeError(f"{path}: no such file or folder")
    notes: list[str] = []
    if path.is_dir():
        scan = _scan_files(_candidate_files(path, recursive=True))
        series = _group_by_series(scan.images)
        images = _choose_series(path, scan, series, series_uid)
        others = len(series) - 1
        if others:
            notes.append(f"{others} other image series in the folder were not read")
    else:
        images = _images_of_file_series(path, series_uid)
        scan = None
    images, copies = _drop_copies(images)
    if copies:
        notes.append(f"{copies} file(s) were copies of another image (same SOPInstanceUID) and were read once")
    if scan is not None and scan.unparsable:
        notes.append(
            f"{len(scan.unparsable)} file(s) that start like DICOM could not be parsed and were skipped: "
            + _name_list(scan.unparsable)
        )
    return _read_images(images, limits, notes)


# ============================================================================ scanning
def _candidate_files(folder: Path, recursive: bool) -> list[Path]:
    """Files that may be DICOM, in a stable order; hidden files and folders are left out."""
    if not recursive:
        return sorted(p for p in folder.iterdir() if p.is_file() and _may_be_dicom(p.name))
    files = []
    for root, folders, names in os.walk(folder):  # does not follow links, so no cycles
        folders[:] = sorted(name for name in folders if not name.startswith("."))
        files.extend(Path(root) / name for name in sorted(names) if _may_be_dicom(name))
    return files


def _may_be_dicom(name: str) -> bool:
    return not name.startswith(".") and name.upper() not in _NEVER_IMAGES


def _scan_files(files: Sequence[Path]) -> _FolderScan:
    scan = _FolderScan(images=[], dicom_file_count=0, files_looked_at=len(files), unparsable=[])
    for path in files:
        dataset = _read_header(path, scan.unparsable)
        if dataset is None:
            continue
        scan.dicom_file_count += 1
        scan.images.extend(_images_in(dataset, path))
    return scan


def _read_header(path: Path, unparsable: list[Path]) -> Dataset | None:
    """The header of a DICOM file (no pixel data), or None when the file is not DICOM."""
    # pydicom warns about every malformed value; the values this module uses are validated here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return pydicom.dcmread(path, stop_before_pixels=True, defer_size="1 MB")
        except InvalidDicomError:
            return _read_header_without_preamble(path)
        except Exception:  # noqa: BLE001 - pydicom raises many types on a corrupt header
            unparsable.append(path)
            return None


def _read_header_without_preamble(path: Path) -> Dataset | None:
    """Old files without the 'DICM' preamble, accepted only when they name their series and image."""
    try:
        if path.suffix.lower() not in _PREAMBLE_LESS_SUFFIXES or path.stat().st_size > _PREAMBLE_LESS_MAX_BYTES:
            return None
        dataset = pydicom.dcmread(path, stop_before_pixels=True, defer_size="1 MB", force=True)
        if "SOPInstanceUID" in dataset and "SeriesInstanceUID" in dataset:
            return dataset
    except Exception:  # noqa: BLE001 - any file may be tried here; a parse failure means "not DICOM"
        pass
    return None


def _images_in(dataset: Dataset, path: Path) -> list[_DicomImage]:
    """The 2D images a header describes: none (not an image), one, or one per frame."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rows, columns = _integer(dataset, "Rows"), _integer(dataset, "Columns")
        if not rows or not columns:
            return []  # reports, structure sets, presentation states: no pixels
        common = dict(
            path=path,
            sop_instance_uid=_text(dataset, "SOPInstanceUID"),
            series_uid=_text(dataset, "SeriesInstanceUID"),
            modality=_text(dataset, "Modality") or None,
            description=_text(dataset, "SeriesDescription"),
            series_number=_integer(dataset, "SeriesNumber"),
            instance_number=_integer(dataset, "InstanceNumber"),
            rows=rows,
            columns=columns,
            samples_per_pixel=_integer(dataset, "SamplesPerPixel") or 1,
        )
        frame_count = _integer(dataset, "NumberOfFrames") or 1
        if frame_count == 1 and "PerFrameFunctionalGroupsSequence" not in dataset:
            return [
                _DicomImage(
                    frame_index=None,
                    pixel_spacing=_numbers(dataset, "PixelSpacing", 2),
                    orientation=_numbers(dataset, "ImageOrientationPatient", 6),
                    position=_numbers(dataset, "ImagePositionPatient", 3),
                    rescale=_rescale(dataset),
                    stack_labels=_labels(dataset, _STACK_KEYWORDS),
                    **common,
                )
            ]
        return [_frame_image(dataset, frame, common) for frame in range(frame_count)]


def _frame_image(dataset: Dataset, frame: int, common: dict[str, Any]) -> _DicomImage:
    """One frame of a multi-frame file; enhanced CT/MR keep its geometry in functional groups."""
    per_frame = _item(dataset, "PerFrameFunctionalGroupsSequence", frame)
    shared = _item(dataset, "SharedFunctionalGroupsSequence", 0)

    def functional_group(sequence: str) -> Dataset | None:
        # A functional group is given per frame or shared by all frames.
        own = _item(per_frame, sequence, 0)
        return own if own is not None else _item(shared, sequence, 0)

    measures = functional_group("PixelMeasuresSequence")
    orientation = functional_group("PlaneOrientationSequence")
    position = functional_group("PlanePositionSequence")
    transformation = functional_group("PixelValueTransformationSequence")
    content = functional_group("FrameContentSequence")
    return _DicomImage(
        frame_index=frame,
        pixel_spacing=_numbers(measures, "PixelSpacing", 2),
        orientation=_numbers(orientation, "ImageOrientationPatient", 6),
        position=_numbers(position, "ImagePositionPatient", 3),
        rescale=_rescale(transformation if transformation is not None else dataset),
        stack_labels=_labels(content, _FRAME_STACK_KEYWORDS),
        **common,
    )


# Header values may be missing or malformed in any file; these helpers return None (or a
# default) instead of raising, so a bad value becomes a clear refusal later, naming the file.
def _value(dataset: Dataset | None, keyword: str) -> Any:
    if dataset is None:
        return None
    try:
        return dataset.get(keyword)
    except Exception:  # noqa: BLE001 - pydicom raises various types on malformed values
        return None


def _text(dataset: Dataset | None, keyword: str) -> str:
    value = _value(dataset, keyword)
    return "" if value is None else str(value).strip()


def _integer(dataset: Dataset | None, keyword: str) -> int | None:
    value = _value(dataset, keyword)
    try:
        return None if value is None or value == "" else int(value)
    except (TypeError, ValueError):
        return None


def _numbers(dataset: Dataset | None, keyword: str, count: int) -> tuple[float, ...] | None:
    value = _value(dataset, keyword)
    try:
        numbers = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return numbers if len(numbers) == count and np.all(np.isfinite(numbers)) else None


def _rescale(dataset: Dataset | None) -> tuple[float, float]:
    slope = _numbers_or_scalar(dataset, "RescaleSlope")
    intercept = _numbers_or_scalar(dataset, "RescaleIntercept")
    return (1.0 if slope is None else slope, 0.0 if intercept is None else intercept)


def _numbers_or_scalar(dataset: Dataset | None, keyword: str) -> float | None:
    value = _value(dataset, keyword)
    try:
        return None if value is None or value == "" else float(value)
    except (TypeError, ValueError):
        return None


def _labels(dataset: Dataset | None, keywords: Sequence[str]) -> tuple[tuple[str, str], ...]:
    labels = []
    for keyword in keywords:
        value = _value(dataset, keyword)
        if value is not None and value != "":
            text = "\\".join(str(v) for v in value) if isinstance(value, (list, tuple, MultiValue)) else str(value)
            labels.append((keyword, text))
    return tuple(labels)


def _item(dataset: Dataset | None, keyword: str, index: int) -> Dataset | None:
    sequence = _value(dataset, keyword)
    try:
        return sequence[index] if sequence is not None and len(sequence) > index else None
    except (TypeError, IndexError):
        return None


# ============================================================================ choosing a series
def _group_by_series(images: Iterable[_DicomImage]) -> dict[str, list[_DicomImage]]:
    series: dict[str, list[_DicomImage]] = {}
    for image in images:
        series.setdefault(image.series_uid, []).append(image)
    return series


def _series_info(images: Sequence[_DicomImage]) -> DicomSeriesInfo:
    first = images[0]
    files = sorted({image.path for image in images})
    return DicomSeriesInfo(
        series_uid=first.series_uid,
        modality=first.modality,
        description=first.description,
        series_number=first.series_number,
        slice_count=len(images),
        file_count=len(files),
        folder=Path(os.path.commonpath([str(p.parent) for p in files])),
    )


def _choose_series(
    folder: Path, scan: _FolderScan, series: dict[str, list[_DicomImage]], series_uid: str | None
) -> list[_DicomImage]:
    if not series:
        raise NoDicomSeriesError(_no_series_message(folder, scan))
    infos = sorted(
        (_series_info(images) for images in series.values()),
        key=lambda info: (info.series_number is None, info.series_number or 0, info.series_uid),
    )
    listing = "; ".join(info.summary() for info in infos)
    if series_uid is not None:
        if series_uid.strip() in series:
            return series[series_uid.strip()]
        raise AmbiguousDicomSeriesError(
            f"no DICOM image series with UID {series_uid} in {folder}; the series there are: {listing}; "
            f"{CHOOSE_SERIES_HINT}"
        )
    if len(series) > 1:
        raise AmbiguousDicomSeriesError(
            f"{folder} holds {len(series)} DICOM image series; {CHOOSE_SERIES_HINT}: {listing}"
        )
    return next(iter(series.values()))


def _no_series_message(folder: Path, scan: _FolderScan) -> str:
    message = f"no DICOM image series in {folder}"
    if scan.dicom_file_count:
        message += (
            f": {scan.dicom_file_count} DICOM file(s) were found but none holds an image with pixel data "
            "(reports, structure sets or presentation states, for example)"
        )
    elif scan.files_looked_at:
        message += f": none of its {scan.files_looked_at} file(s) is a DICOM file"
    else:
        message += ": the folder holds no files"
    if scan.unparsable:
        unparsable = _name_list(scan.unparsable)
        message += f"; {len(scan.unparsable)} file(s) start like DICOM but could not be parsed: {unparsable}"
    return message + "; Photon reads a folder holding one CT or MR series (or pass the series' folder itself)"


def _images_of_file_series(path: Path, series_uid: str | None) -> list[_DicomImage]:
    """The images of the series that ``path`` belongs to: its own frames, or its folder's slices."""
    unparsable: list[Path] = []
    dataset = _read_header(path, unparsable)
    if dataset is None:
        raise UnreadableVolumeError(f"{path.name}: not a readable DICOM file (its header cannot be parsed)")
    own_images = _images_in(dataset, path)
    if not own_images:
        raise NoDicomSeriesError(
            f"{path.name} is a DICOM file without an image (a report or structure set, for example); "
            "pass a file or folder of a CT or MR series"
        )
    own_series = own_images[0].series_uid
    if series_uid is not None and series_uid.strip() != own_series:
        raise DicomSeriesError(
            f"{path.name} belongs to series {own_series}, not to the requested series {series_uid}; "
            "pass the folder to choose a series by its UID"
        )
    if own_images[0].frame_index is not None:
        return own_images  # a multi-frame file is a whole stack by itself
    siblings = _scan_files(_candidate_files(path.parent, recursive=False)).images
    series = [image for image in siblings if image.series_uid == own_series and image.frame_index is None]
    return series or own_images


def _drop_copies(images: list[_DicomImage]) -> tuple[list[_DicomImage], int]:
    """Keep one file per SOPInstanceUID: copies of a file (e.g. 'IM1' and 'IM1 (1)') are one image."""
    kept: dict[tuple[str, int | None], _DicomImage] = {}
    anonymous = []
    for image in images:
        if not image.sop_instance_uid:
            anonymous.append(image)
            continue
        kept.setdefault((image.sop_instance_uid, image.frame_index), image)
    unique = list(kept.values()) + anonymous
    return unique, len(images) - len(unique)


# ============================================================================ geometry
def _label(images: Sequence[_DicomImage]) -> str:
    first = images[0]
    description = f" '{first.description}'" if first.description else ""
    return f"DICOM series{description} ({first.modality or 'no modality'}, UID {first.series_uid or 'missing'})"


def _stack_geometry(images: list[_DicomImage], label: str) -> tuple[list[_DicomImage], VolumeGeometry]:
    """Sort the images along the slice normal, check they form one regular grid, return it."""
    _require_complete_geometry(images, label)
    _require_same(images, label, "size (columns x rows)", lambda im: (im.columns, im.rows),
                  lambda a, b: a == b, lambda v: f"{v[0]} x {v[1]}")
    _require_same(images, label, "PixelSpacing", lambda im: im.pixel_spacing,
                  lambda a, b: np.allclose(a, b, atol=PIXEL_SPACING_TOLERANCE_MM, rtol=0),
                  lambda v: " x ".join(f"{x:g}" for x in v) + " mm")
    _require_same(images, label, "ImageOrientationPatient", lambda im: im.orientation,
                  lambda a, b: np.allclose(a, b, atol=COSINE_TOLERANCE, rtol=0),
                  lambda v: "(" + ", ".join(f"{x:.4f}" for x in v) + ")")
    if any(image.samples_per_pixel != 1 for image in images):
        raise MultiComponentVolumeError(
            f"{label}: {images[0].samples_per_pixel} samples per pixel (a colour image); "
            "Photon needs a greyscale CT or MR series"
        )
    first = images[0]
    if len(images) == 1:
        raise NotThreeDimensionalError(
            f"{label} has a single slice ({first.name}, {first.columns} x {first.rows} pixels), so it is a 2D image; "
            "Photon needs a 3D volume: a series of several slices, or a multi-frame file"
        )

    row_cosine, column_cosine, normal = _orthonormal_axes(first, label)
    distances = [float(np.dot(normal, image.position)) for image in images]
    order = sorted(
        range(len(images)),
        key=lambda n: (distances[n], images[n].instance_number or 0, str(images[n].path), images[n].frame_index or 0),
    )
    images = [images[n] for n in order]
    distances = np.array([distances[n] for n in order])
    positions = np.array([image.position for image in images])

    steps = np.diff(distances)
    _refuse_duplicates(images, distances, steps, label)
    _refuse_gaps(images, distances, steps, label)
    step = (distances[-1] - distances[0]) / (len(images) - 1)
    tolerance = max(POSITION_TOLERANCE_MM, POSITION_TOLERANCE_FRACTION_OF_STEP * step)
    _refuse_tilt(images, positions, normal, step, tolerance, label)
    _refuse_uneven_spacing(images, distances, steps, step, tolerance, label)

    spacing_between_rows, spacing_between_columns = first.pixel_spacing
    geometry = VolumeGeometry(
        size=(first.columns, first.rows, len(images)),
        spacing=(spacing_between_columns, spacing_between_rows, step),  # i runs along a row
        origin_lps=tuple(positions[0]),
        direction_lps=np.column_stack([row_cosine, column_cosine, normal]),
    )
    return images, geometry


def _require_complete_geometry(images: Sequence[_DicomImage], label: str) -> None:
    incomplete = [image for image in images if None in (image.position, image.orientation, image.pixel_spacing)]
    if not incomplete:
        return
    example = incomplete[0]
    lacking = [
        keyword
        for keyword, value in (
            ("ImagePositionPatient", example.position),
            ("ImageOrientationPatient", example.orientation),
            ("PixelSpacing", example.pixel_spacing),
        )
        if value is None
    ]
    raise InconsistentDicomSeriesError(
        f"{label}: {len(incomplete)} of {len(images)} images have no valid {', '.join(lacking)} "
        f"(e.g. {example.name}), so where their voxels lie in the patient cannot be known; "
        "Photon needs CT or MR slices with the Image Plane attributes (or an enhanced multi-frame file)"
    )


def _require_same(
    images: Sequence[_DicomImage],
    label: str,
    what: str,
    value_of: Callable[[_DicomImage], Any],
    same: Callable[[Any, Any], bool],
    show: Callable[[Any], str],
) -> None:
    """Refuse a series whose images disagree on ``what``, listing the groups and an example file."""
    groups: list[tuple[Any, list[_DicomImage]]] = []
    for image in images:
        value = value_of(image)
        for group_value, members in groups:
            if same(group_value, value):
                members.append(image)
                break
        else:
            groups.append((value, [image]))
    if len(groups) == 1:
        return
    groups.sort(key=lambda group: -len(group[1]))
    described = ", ".join(
        f"{show(value)} in {len(members)} image(s) (e.g. {members[0].name})" for value, members in groups[:4]
    )
    more = f" and {len(groups) - 4} more" if len(groups) > 4 else ""
    raise InconsistentDicomSeriesError(
        f"{label}: the images do not share one {what}: {described}{more}; a volume needs one slice grid, "
        "so the series probably mixes several stacks (e.g. a localizer); export each stack as its own series"
    )


def _orthonormal_axes(image: _DicomImage, label: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row cosine, column cosine and slice normal, made exactly orthonormal."""
    row_cosine = np.array(image.orientation[:3])
    column_cosine = np.array(image.orientation[3:])
    lengths = np.linalg.norm(row_cosine), np.linalg.norm(column_cosine)
    cosine_between = abs(np.dot(row_cosine, column_cosine)) / max(lengths[0] * lengths[1], 1e-12)
    if min(lengths) < 0.5 or cosine_between > ORTHOGONALITY_TOLERANCE:
        raise InconsistentDicomSeriesError(
            f"{label}: ImageOrientationPatient {tuple(image.orientation)} of {image.name} is not two perpendicular "
            "unit vectors, so the slice orientation cannot be known"
        )
    # Decimal strings leave cosines slightly off unit length and perpendicularity (1e-6 or so);
    # Gram-Schmidt removes that, as the grid must be exactly orthonormal.
    row_cosine = row_cosine / lengths[0]
    column_cosine = column_cosine - np.dot(column_cosine, row_cosine) * row_cosine
    column_cosine = column_cosine / np.linalg.norm(column_cosine)
    return row_cosine, column_cosine, np.cross(row_cosine, column_cosine)


def _refuse_duplicates(images: Sequence[_DicomImage], distances: np.ndarray, steps: np.ndarray, label: str) -> None:
    duplicated = np.flatnonzero(steps <= POSITION_TOLERANCE_MM)
    if duplicated.size == 0:
        return
    first, second = images[duplicated[0]], images[duplicated[0] + 1]
    distinct_positions = len(images) - duplicated.size
    differing = [
        f"{keyword} {value} vs {dict(second.stack_labels).get(keyword, 'none')}"
        for keyword, value in first.stack_labels
        if dict(second.stack_labels).get(keyword) != value
    ]
    why = f" (they differ in {', '.join(differing)})" if differing else ""
    raise InconsistentDicomSeriesError(
        f"{label}: {duplicated.size} slice(s) share their position with another, e.g. {first.name} and {second.name} "
        f"at {distances[duplicated[0]]:.3f} mm along the slice normal{why}; the series holds {len(images)} images at "
        f"{distinct_positions} positions, so it mixes several acquisitions, echoes or time points; "
        "export one stack per series, or remove the extra images"
    )


def _refuse_gaps(images: Sequence[_DicomImage], distances: np.ndarray, steps: np.ndarray, label: str) -> None:
    usual_step = float(np.median(steps))
    gaps = np.flatnonzero(steps > MISSING_SLICE_GAP_FACTOR * usual_step)
    if gaps.size == 0:
        return
    missing_per_gap = [max(1, int(round(steps[g] / usual_step)) - 1) for g in gaps]
    first_gap = gaps[0]
    more = ""
    if gaps.size > 1:
        more = f"; {gaps.size - 1} more gap(s), about {sum(missing_per_gap)} missing slices in all"
    raise InconsistentDicomSeriesError(
        f"{label}: slices are missing: a gap of {steps[first_gap]:.3f} mm between {images[first_gap].name} "
        f"at {distances[first_gap]:.3f} mm and {images[first_gap + 1].name} at {distances[first_gap + 1]:.3f} mm "
        f"along the slice normal, where the usual step is {usual_step:.3f} mm: about {missing_per_gap[0]} slice(s) "
        f"seem missing after slice {first_gap + 1} of {len(images)}{more}; "
        "add the missing files or export the series again"
    )


def _refuse_tilt(
    images: Sequence[_DicomImage], positions: np.ndarray, normal: np.ndarray, step: float, tolerance: float, label: str
) -> None:
    """Slice origins must lie on one line along the normal; an in-plane drift is a gantry tilt."""
    offsets = positions - positions[0]
    in_plane = offsets - np.outer(offsets @ normal, normal)
    drift = np.linalg.norm(in_plane, axis=1)
    worst = int(np.argmax(drift))
    if drift[worst] <= tolerance:
        return
    # The drift grows with the distance from the first slice; its ratio to that distance is tan(tilt).
    tilt_degrees = np.degrees(np.arctan2(drift[-1], offsets[-1] @ normal))
    raise InconsistentDicomSeriesError(
        f"{label}: the slices are not stacked along their normal: {images[worst].name} (slice {worst + 1} of "
        f"{len(images)}) is shifted {drift[worst]:.3f} mm within the slice plane (tolerance {tolerance:.3f} mm), "
        f"as by a gantry tilt of about {tilt_degrees:.1f} degrees; a tilted stack is not a rectangular grid, "
        "so resample it first (e.g. Slicer's DICOM import with acquisition geometry regularization)"
    )


def _refuse_uneven_spacing(
    images: Sequence[_DicomImage], distances: np.ndarray, steps: np.ndarray, step: float, tolerance: float, label: str
) -> None:
    """Each slice must sit where an even step puts it, within ``tolerance``."""
    deviation = (distances - distances[0]) - step * np.arange(len(images))
    worst = int(np.argmax(np.abs(deviation)))
    if abs(deviation[worst]) <= tolerance:
        return
    raise InconsistentDicomSeriesError(
        f"{label}: the slice spacing is uneven: steps range from {steps.min():.3f} to {steps.max():.3f} mm, and "
        f"{images[worst].name} (slice {worst + 1} of {len(images)}) lies {abs(deviation[worst]):.3f} mm from where an "
        f"even step of {step:.3f} mm puts it (tolerance {tolerance:.3f} mm); resample the series to even spacing "
        "or export it again"
    )


# ============================================================================ pixels
def _read_images(images: list[_DicomImage], limits: ReadLimits, notes: list[str]) -> Volume:
    label = _label(images)
    files = sorted({image.path for image in images})
    multi_frame = any(image.frame_index is not None for image in images)
    if multi_frame and len(files) > 1:
        raise InconsistentDicomSeriesError(
            f"{label} is stored in {len(files)} files of which some hold several frames ({_name_list(files)}); "
            "read one multi-frame file at a time by passing its path"
        )
    sorted_images, geometry = _stack_geometry(images, label)
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


def _name_list(paths: Sequence[Path], limit: int = 3) -> str:
    names = ", ".join(path.name for path in paths[:limit])
    return names + (f" and {len(paths) - limit} more" if len(paths) > limit else "")
