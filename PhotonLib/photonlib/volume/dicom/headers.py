"""What one DICOM file's header says about its images, read without touching pixel data.

A header becomes zero (not an image), one (a single-frame file) or several (one per frame of an
enhanced multi-frame file) :class:`DicomImage` records: the identity, size, plane geometry and
rescale that the series checks need. Header values may be missing or malformed in any file, so
every value is read defensively: a bad value becomes ``None`` here and a refusal that names the
file later, never an exception from deep inside pydicom.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue

# Old (ACR-NEMA style) files have no 'DICM' preamble; only files named like DICOM files and
# small enough to be one slice are tried without it, so a large unrelated file is never parsed.
# These names say "maybe a DICOM slice", which is not the same question as the volume file
# suffixes of photonlib.volume.formats, so they are kept here.
_PREAMBLE_LESS_SUFFIXES = {"", ".dcm", ".dicom", ".ima"}
_PREAMBLE_LESS_MAX_BYTES = 64 * 1024 * 1024
# Attributes that tell apart images of one series taken at the same place
# (several acquisitions, echoes or time points), named when positions are duplicated.
_STACK_KEYWORDS = ("AcquisitionNumber", "EchoNumbers", "TemporalPositionIdentifier", "TriggerTime", "ImageType")
_FRAME_STACK_KEYWORDS = ("StackID", "TemporalPositionIndex", "FrameAcquisitionNumber", "DimensionIndexValues")


@dataclass(frozen=True)
class DicomImage:
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


def read_header(path: Path, unparsable: list[Path]) -> Dataset | None:
    """The header of a DICOM file (no pixel data), or None when the file is not DICOM.

    A file that starts like DICOM but cannot be parsed is added to ``unparsable``, so the caller
    can say why it was skipped.
    """
    # pydicom warns about every malformed value; the values the reader uses are validated here.
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


def images_in(dataset: Dataset, path: Path) -> list[DicomImage]:
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
                DicomImage(
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


def _frame_image(dataset: Dataset, frame: int, common: dict[str, Any]) -> DicomImage:
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
    return DicomImage(
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

