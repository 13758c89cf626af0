"""Finding the DICOM files under a path, grouping their images by series and choosing one series.

Every candidate file's header is read (see :mod:`photonlib.volume.dicom.headers`); files that
are not DICOM are skipped, images are grouped by ``SeriesInstanceUID``, and one series is chosen:
the only one, the one named by ``series_uid``, or the one a given file belongs to. Copies of one
image (same ``SOPInstanceUID``) count once. Nothing here looks at slice geometry or pixels.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from photonlib.volume.dicom.headers import DicomImage, images_in, read_header
from photonlib.volume.errors import (
    AmbiguousDicomSeriesError,
    DicomSeriesError,
    NoDicomSeriesError,
    UnreadableVolumeError,
)

# Files that are never images: the DICOMDIR index of a CD/DVD export.
_NEVER_IMAGES = {"DICOMDIR"}
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


@dataclass
class FolderScan:
    """What scanning a folder found: the images, and counts that explain an empty result."""

    images: list[DicomImage]
    dicom_file_count: int  # files pydicom parsed, images or not
    files_looked_at: int
    unparsable: list[Path]  # files with a DICOM preamble that pydicom could not parse


def candidate_files(folder: Path, recursive: bool) -> list[Path]:
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


def scan_files(files: Sequence[Path]) -> FolderScan:
    """Read the header of every file and collect the images they describe."""
    scan = FolderScan(images=[], dicom_file_count=0, files_looked_at=len(files), unparsable=[])
    for path in files:
        dataset = read_header(path, scan.unparsable)
        if dataset is None:
            continue
        scan.dicom_file_count += 1
        scan.images.extend(images_in(dataset, path))
    return scan


def group_by_series(images: Iterable[DicomImage]) -> dict[str, list[DicomImage]]:
    """The images by ``SeriesInstanceUID``, in the order they were found."""
    series: dict[str, list[DicomImage]] = {}
    for image in images:
        series.setdefault(image.series_uid, []).append(image)
    return series


def _series_info(images: Sequence[DicomImage]) -> DicomSeriesInfo:
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


def series_infos(series: dict[str, list[DicomImage]]) -> list[DicomSeriesInfo]:
    """One :class:`DicomSeriesInfo` per series, ordered by series number (unnumbered last), then UID."""
    infos = [_series_info(images) for images in series.values()]
    return sorted(infos, key=lambda info: (info.series_number is None, info.series_number or 0, info.series_uid))


def choose_series(
    folder: Path, scan: FolderScan, series: dict[str, list[DicomImage]], series_uid: str | None
) -> list[DicomImage]:
    """The images of the series to read from a folder, or a refusal that lists the series there."""
    if not series:
        raise NoDicomSeriesError(_no_series_message(folder, scan))
    listing = "; ".join(info.summary() for info in series_infos(series))
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


def _no_series_message(folder: Path, scan: FolderScan) -> str:
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
        unparsable = name_list(scan.unparsable)
        message += f"; {len(scan.unparsable)} file(s) start like DICOM but could not be parsed: {unparsable}"
    return message + "; Photon reads a folder holding one CT or MR series (or pass the series' folder itself)"


def images_of_file_series(path: Path, series_uid: str | None) -> list[DicomImage]:
    """The images of the series that ``path`` belongs to: its own frames, or its folder's slices."""
    unparsable: list[Path] = []
    dataset = read_header(path, unparsable)
    if dataset is None:
        raise UnreadableVolumeError(f"{path.name}: not a readable DICOM file (its header cannot be parsed)")
    own_images = images_in(dataset, path)
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
    siblings = scan_files(candidate_files(path.parent, recursive=False)).images
    series = [image for image in siblings if image.series_uid == own_series and image.frame_index is None]
    return series or own_images


def drop_copies(images: list[DicomImage]) -> tuple[list[DicomImage], int]:
    """Keep one file per SOPInstanceUID: copies of a file (e.g. 'IM1' and 'IM1 (1)') are one image."""
    kept: dict[tuple[str, int | None], DicomImage] = {}
    anonymous = []
    for image in images:
        if not image.sop_instance_uid:
            anonymous.append(image)
            continue
        kept.setdefault((image.sop_instance_uid, image.frame_index), image)
    unique = list(kept.values()) + anonymous
    return unique, len(images) - len(unique)


def series_label(images: Sequence[DicomImage]) -> str:
    """How messages name a series: description, modality and UID, never patient identifiers."""
    first = images[0]
    description = f" '{first.description}'" if first.description else ""
    return f"DICOM series{description} ({first.modality or 'no modality'}, UID {first.series_uid or 'missing'})"


def name_list(paths: Sequence[Path], limit: int = 3) -> str:
    """The first ``limit`` file names and how many more, for messages about many files."""
    names = ", ".join(path.name for path in paths[:limit])
    return names + (f" and {len(paths) - limit} more" if len(paths) > limit else "")
