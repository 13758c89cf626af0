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
   tolerances in :mod:`photonlib.volume.dicom.geometry`). The volume's index axes are
   i = along a row (row cosine), j = down a column (column cosine), k = the slice normal,
   so the grid is right-handed.
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

The steps live in submodules, each importing only those before it: ``headers`` (one file's
header as image records), ``scan`` (steps 1 and 2), ``geometry`` (step 3) and ``pixels``
(steps 4 to 6). This package puts them together as :func:`read_dicom_series` and
:func:`list_dicom_series`.

Messages and notes name files, series UIDs, descriptions, modalities and counts, never
patient identifiers such as the patient's name, ID or dates.
"""

from __future__ import annotations

from pathlib import Path

from photonlib.volume.dicom.pixels import read_images
from photonlib.volume.dicom.scan import (
    DicomSeriesInfo,
    candidate_files,
    choose_series,
    drop_copies,
    group_by_series,
    images_of_file_series,
    name_list,
    scan_files,
    series_infos,
)
from photonlib.volume.errors import UnreadableVolumeError
from photonlib.volume.image import ReadLimits, Volume

__all__ = ["DicomSeriesInfo", "list_dicom_series", "read_dicom_series"]


def list_dicom_series(path: str | Path) -> list[DicomSeriesInfo]:
    """The image series in a folder (searched recursively), ordered by series number.

    ``path`` may also be one DICOM file; then the series of its folder (not subfolders) are
    listed. Returns an empty list when there is no image series.
    """
    path = Path(path)
    if not path.exists():
        raise UnreadableVolumeError(f"{path}: no such file or folder")
    folder, recursive = (path, True) if path.is_dir() else (path.parent, False)
    scan = scan_files(candidate_files(folder, recursive))
    return series_infos(group_by_series(scan.images))


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
        scan = scan_files(candidate_files(path, recursive=True))
        series = group_by_series(scan.images)
        images = choose_series(path, scan, series, series_uid)
        others = len(series) - 1
        if others:
            notes.append(f"{others} other image series in the folder were not read")
    else:
        images = images_of_file_series(path, series_uid)
        scan = None
    images, copies = drop_copies(images)
    if copies:
        notes.append(f"{copies} file(s) were copies of another image (same SOPInstanceUID) and were read once")
    if scan is not None and scan.unparsable:
        notes.append(
            f"{len(scan.unparsable)} file(s) that start like DICOM could not be parsed and were skipped: "
            + name_list(scan.unparsable)
        )
    return read_images(images, limits, notes)
