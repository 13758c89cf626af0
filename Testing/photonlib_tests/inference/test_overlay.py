"""The ``photon ask --png`` picture: patient orientation, slices through the kept region, caption, PNG."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import SimpleITK as sitk

from photonlib.errors import MissingExtraError
from photonlib.geometry import VolumeGeometry
from photonlib.inference.overlay import (
    Caption,
    caption_lines,
    display_window,
    find_focus,
    plan_views,
    require_matplotlib,
    sample_plane,
    write_overlay_png,
)

from support.volumes import rotation, voxel_positions_lps

RADIOLOGICAL_LETTERS = {  # edge -> letter: axial from the feet, coronal from the front, sagittal from the left
    "axial": {"left": "R", "right": "L", "top": "A", "bottom": "P"},
    "coronal": {"left": "R", "right": "L", "top": "S", "bottom": "I"},
    "sagittal": {"left": "A", "right": "P", "top": "S", "bottom": "I"},
}
# A marker 40 mm from the centre toward each of these patient directions (LPS unit vectors).
MARKERS = {"L": (1.0, 0.0, 0.0), "A": (0.0, -1.0, 0.0), "S": (0.0, 0.0, 1.0)}
MARKER_VALUES = {"L": 300.0, "A": 600.0, "S": 900.0}


def centred_geometry(size, spacing, direction) -> VolumeGeometry:
    """A grid of the given direction whose field of view is centred on LPS (10, -20, 30)."""
    direction = np.asarray(direction, dtype=float)
    offset = direction @ (np.diag(spacing) @ ((np.array(size) - 1) / 2))
    return VolumeGeometry(size, spacing, tuple(np.array([10.0, -20.0, 30.0]) - offset), direction)


ORIENTATIONS = {
    "LPS, anisotropic": centred_geometry((60, 60, 24), (2.0, 2.0, 5.0), np.eye(3)),
    "LPI (slices stored feet last)": centred_geometry((60, 60, 24), (2.0, 2.0, 5.0), np.diag([1.0, 1.0, -1.0])),
    # i toward Superior, j toward Right, k toward Anterior: permuted and flipped axes.
    "SRA (permuted, flipped)": centred_geometry((30, 60, 50), (4.0, 2.0, 2.4), [[0, -1, 0], [0, 0, -1], [1, 0, 0]]),
    "oblique": centred_geometry((56, 56, 40), (2.2, 2.2, 3.0), rotation(3)),
}


def marker_volume(geometry: VolumeGeometry) -> np.ndarray:
    """Air with a 9 mm sphere 40 mm toward patient left, anterior and superior of the centre."""
    positions = voxel_positions_lps(geometry)
    array = np.full(geometry.array_shape, -1000.0, dtype=np.float32)
    for letter, direction in MARKERS.items():
        centre = geometry.center_lps + 40.0 * np.array(direction)
        array[np.linalg.norm(positions - centre, axis=-1) <= 9.0] = MARKER_VALUES[letter]
    return array


@pytest.mark.parametrize("name", list(ORIENTATIONS))
def test_letters_and_marker_sides_follow_the_patient_for_any_stored_orientation(name):
    geometry = ORIENTATIONS[name]
    volume = marker_volume(geometry)
    views = plan_views(geometry, geometry.center_lps)
    assert [view.name for view in views] == ["axial", "coronal", "sagittal"]
    seen = 0
    for view in views:
        assert view.letters == RADIOLOGICAL_LETTERS[view.name], (name, view.name)
        plane = sample_plane(volume, geometry, view, linear=False, fill=-1000.0)
        assert plane.shape == view.shape
        centre_row, centre_column = view.lps_to_pixel(geometry.center_lps)
        edge_of = {letter: edge for edge, letter in view.letters.items()}
        for letter, direction in MARKERS.items():
            if abs(np.dot(direction, np.cross(view.column_lps, view.row_lps))) > 0.5:
                continue  # the marker lies off this plane
            rows, columns = np.nonzero(plane == MARKER_VALUES[letter])
            assert rows.size, (name, view.name, letter)
            d_row, d_column = rows.mean() - centre_row, columns.mean() - centre_column
            expected = {"left": (0, -1), "right": (0, 1), "top": (-1, 0), "bottom": (1, 0)}[edge_of[letter]]
            # Toward the edge that carries the marker's letter, 40 mm away (square pixels in mm).
            assert np.hypot(d_row, d_column) * view.pixel_mm == pytest.approx(40.0, abs=2.5), (name, view.name, letter)
            assert np.dot((d_row, d_column), expected) > 0.9 * np.hypot(d_row, d_column), (name, view.name, letter)
            seen += 1
    assert seen == 6  # each marker on the two panels whose plane contains it


def test_anisotropic_voxels_keep_their_proportions():
    """A sphere in 0.8 x 0.8 x 5 mm voxels is as tall as it is wide on the coronal and sagittal panels."""
    geometry = centred_geometry((150, 150, 24), (0.8, 0.8, 5.0), np.diag([1.0, 1.0, -1.0]))
    distance = np.linalg.norm(voxel_positions_lps(geometry) - geometry.center_lps, axis=-1)
    volume = np.where(distance <= 25.0, 100.0, -1000.0).astype(np.float32)
    for view in plan_views(geometry, geometry.center_lps):
        assert view.pixel_mm == pytest.approx(0.8)
        rows, columns = np.nonzero(sample_plane(volume, geometry, view, linear=False, fill=-1000.0) > 0)
        height_mm = (rows.max() - rows.min() + 1) * view.pixel_mm
        width_mm = (columns.max() - columns.min() + 1) * view.pixel_mm
        assert height_mm == pytest.approx(50.0, abs=5.5) and width_mm == pytest.approx(50.0, abs=2.5), view.name


def test_slices_pass_through_the_largest_kept_region():
    geometry = ORIENTATIONS["oblique"]
    positions = voxel_positions_lps(geometry)
    heatmap = np.full(geometry.array_shape, 0.1, dtype=np.float32)
    small = np.linalg.norm(positions - (geometry.center_lps + (30.0, 0.0, 0.0)), axis=-1) <= 8.0
    # A crescent (shell) whose weighted centre lies in its hollow: the focus must still be on it.
    shell = np.abs(np.linalg.norm(positions - (geometry.center_lps - (20.0, 0.0, 0.0)), axis=-1) - 15.0) <= 3.0
    heatmap[small], heatmap[shell] = 0.95, 0.7
    keep = heatmap > 0.5
    focus = find_focus(heatmap, geometry, keep)
    i, j, k = focus.index_ijk
    assert shell[k, j, i] and "largest kept region" in focus.description
    for view in plan_views(geometry, focus.lps):
        kept_plane = sample_plane(keep.astype(np.float32), geometry, view, linear=False, fill=0.0)
        row, column = (int(round(v)) for v in view.lps_to_pixel(focus.lps))
        assert kept_plane[row, column] == 1.0, view.name  # each panel cuts through the kept region


def test_focus_when_nothing_or_everything_was_dropped():
    geometry = VolumeGeometry.identity((20, 16, 12), (2.0, 2.0, 3.0))
    heatmap = np.full(geometry.array_shape, 0.2, dtype=np.float32)
    heatmap[3:6, 4:8, 10:14] = 0.8
    everything = find_focus(heatmap, geometry, np.ones(geometry.array_shape, bool))
    i, j, k = everything.index_ijk
    assert heatmap[k, j, i] == pytest.approx(0.8) and "every token kept" in everything.description
    low = np.full(geometry.array_shape, 0.2, dtype=np.float32)
    low[7, 2, 3] = 0.4
    nothing = find_focus(low, geometry, np.zeros(geometry.array_shape, bool))
    assert nothing.index_ijk == (3, 2, 7) and "highest keep probability" in nothing.description


def test_caption_holds_question_answer_tokens_and_model():
    question = "Is there a hypodense lesion in the right lobe of the liver, and if so how large is it in millimetres?"
    answer = "Yes, there is a single round hypodense lesion in segment VI measuring about thirty millimetres across."
    lines = caption_lines(Caption(question, answer, 25, 512, "photon-demo"), display_window(np.zeros(3), True), width=60)
    assert all(len(line) <= 60 for line in lines[:-1]) and len(lines) >= 5  # wrapped
    text = " ".join(lines)
    assert f"Q: {question}" in text and f"A: {answer}" in text
    assert "25 of 512 visual tokens kept (4.9 %)" in lines[-1] and "model photon-demo" in lines[-1]
    assert "W 400 / L 40 HU" in lines[-1]


def test_grey_window_is_soft_tissue_for_ct_and_percentiles_otherwise():
    ct = display_window(np.array([-1000.0, 0.0, 1500.0]), True)
    assert (ct.low, ct.high) == (-160.0, 240.0)
    values = np.arange(1001, dtype=np.float32)
    mr = display_window(values, False)
    assert (mr.low, mr.high) == pytest.approx((5.0, 995.0)) and "percentile" in mr.label


def test_png_is_written_and_readable(tmp_path):
    geometry = ORIENTATIONS["LPI (slices stored feet last)"]
    volume = marker_volume(geometry)
    heatmap = (volume > 500).astype(np.float32) * 0.9
    caption = Caption("Is there a lesion?", "Yes", 3, 64, "tiny")
    path = write_overlay_png(tmp_path / "out" / "ask.png", volume, heatmap, geometry, display_window(volume, True),
                             keep_mask_kji=heatmap > 0.5, caption=caption)  # fmt: skip
    picture = sitk.ReadImage(str(path))
    assert picture.GetNumberOfComponentsPerPixel() == 3 and picture.GetSize()[0] >= 1000
    assert np.asarray(sitk.GetArrayFromImage(picture)).std() > 10  # not a blank canvas
    # Without keep mask or caption (photon ask --server: the server sends probabilities only).
    bare = sitk.ReadImage(str(write_overlay_png(tmp_path / "bare.png", volume, heatmap, geometry, (-160.0, 240.0))))
    assert bare.GetNumberOfComponentsPerPixel() == 3
    with pytest.raises(ValueError, match="PNG"):
        write_overlay_png(tmp_path / "ask.jpg", volume, heatmap, geometry, (-160.0, 240.0))


def test_missing_matplotlib_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    with pytest.raises(MissingExtraError, match=r"--png needs matplotlib: pip install"):
        require_matplotlib()
