"""The checks that make a stack of DICOM images one regular 3D grid, and that grid's geometry.

The images are sorted along the slice normal (row cosine x column cosine of
``ImageOrientationPatient``) by projecting ``ImagePositionPatient`` on it. A series is refused
when it cannot be one regular grid: missing Image Plane attributes, mixed sizes, pixel spacings
or orientations, colour images, a single slice, duplicated positions, missing slices, gantry tilt
or uneven spacing, each with the tolerances below and a message that names an example file. The
volume's index axes are i = along a row (row cosine), j = down a column (column cosine),
k = the slice normal, so the grid is right-handed. Only headers are used; no pixel is read.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from photonlib.geometry import VolumeGeometry
from photonlib.volume.dicom.headers import DicomImage
from photonlib.volume.errors import (
    InconsistentDicomSeriesError,
    MultiComponentVolumeError,
    NotThreeDimensionalError,
)

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


def stack_geometry(images: list[DicomImage], label: str) -> tuple[list[DicomImage], VolumeGeometry]:
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


def _require_complete_geometry(images: Sequence[DicomImage], label: str) -> None:
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
    images: Sequence[DicomImage],
    label: str,
    what: str,
    value_of: Callable[[DicomImage], Any],
    same: Callable[[Any, Any], bool],
    show: Callable[[Any], str],
) -> None:
    """Refuse a series whose images disagree on ``what``, listing the groups and an example file."""
    groups: list[tuple[Any, list[DicomImage]]] = []
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


def _orthonormal_axes(image: DicomImage, label: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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


def _refuse_duplicates(images: Sequence[DicomImage], distances: np.ndarray, steps: np.ndarray, label: str) -> None:
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


def _refuse_gaps(images: Sequence[DicomImage], distances: np.ndarray, steps: np.ndarray, label: str) -> None:
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
    images: Sequence[DicomImage], positions: np.ndarray, normal: np.ndarray, step: float, tolerance: float, label: str
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
    images: Sequence[DicomImage], distances: np.ndarray, steps: np.ndarray, step: float, tolerance: float, label: str
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
