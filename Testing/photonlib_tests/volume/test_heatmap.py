"""Model output mapped back onto the original volume lands on the voxels it describes."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from photonlib.geometry import VolumeGeometry
from photonlib.volume import (
    PreprocessConfig,
    Volume,
    block_grid_geometry,
    map_to_source,
    prepare_volume,
    read_volume,
    write_heatmap,
)

from support.volumes import ct_with_sphere, rotation, voxel_positions_lps

# Patch 14 and a 2 x 2 merge, as the model does, on a CPU-sized grid: 56 x 112 x 112 voxels
# become 4 x 8 x 8 patches and 4 x 4 x 4 merged tokens.
CONFIG = PreprocessConfig(field_of_view=(150, 160, 160), model_grid=(56, 112, 112))
TOKEN_GRIDS = [(4, 8, 8), (4, 4, 4)]

CASES = {
    # name: geometry; the field of view (150 x 160 x 160 mm) crops some and pads others.
    "oblique-anisotropic": VolumeGeometry((90, 80, 36), (1.6, 1.9, 4.5), (-60.0, 20.0, -35.0), rotation(12)),
    "oblique-left-handed": VolumeGeometry((70, 90, 40), (2.4, 1.3, 3.0), (15.0, -40.0, 60.0), rotation(21) @ np.diag([1.0, -1.0, 1.0])),
    "ras-axial": VolumeGeometry((100, 100, 30), (2.0, 2.0, 5.0), (99.0, 99.0, -70.0), np.diag([-1.0, -1.0, 1.0])),
    "lps-sagittal": VolumeGeometry((40, 96, 96), (4.0, 1.8, 1.8), (-80.0, -86.0, 86.0), np.array([[1.0, 0, 0], [0, 0, 1], [0, -1, 0]]).T),
}


def test_block_grid_centres_are_block_means_of_model_voxels():
    model = VolumeGeometry((112, 112, 56), (1.3, 1.3, 2.6), (3.0, 4.0, 5.0), rotation(2))
    tokens = block_grid_geometry(model, (4, 4, 4))  # blocks of 28 x 28 x 14 model voxels (i, j, k)
    block = np.stack(np.meshgrid(np.arange(28, 56), np.arange(56, 84), np.arange(14, 28), indexing="ij"), -1).reshape(-1, 3)
    np.testing.assert_allclose(tokens.index_to_lps([1, 2, 1]), model.index_to_lps(block).mean(axis=0), atol=1e-9)
    assert tokens.size == (4, 4, 4)
    np.testing.assert_allclose(tokens.spacing, (1.3 * 28, 1.3 * 28, 2.6 * 14))


def test_token_grid_must_divide_the_model_grid():
    model = VolumeGeometry((112, 112, 56), (1, 1, 1), (0, 0, 0), np.eye(3))
    with pytest.raises(ValueError, match="equal blocks"):
        block_grid_geometry(model, (5, 8, 8))


@pytest.mark.parametrize("token_grid", TOKEN_GRIDS)
@pytest.mark.parametrize("case", CASES)
def test_marked_token_maps_back_to_where_it_came_from(case, token_grid):
    """The central acceptance test of the inverse mapping.

    1. Pick a token; the preprocessing geometry says its centre is at physical point P.
    2. Put a small bright sphere at P in the ORIGINAL volume and preprocess it: the token whose
       block holds the most signal must be the marked one (the forward mapping is right).
    3. Map a one-hot token grid back onto the original volume: the marked region must contain
       the whole sphere, and its centre must be at P to within half an original voxel.
    """
    geometry = CASES[case]
    empty = Volume(np.zeros(geometry.array_shape, np.float32) - 1000, geometry, "nrrd")
    empty.array[0, 0, 0] = 0  # not blank
    prepared_geometry = prepare_volume(empty, CONFIG).geometry
    token_geometry = block_grid_geometry(prepared_geometry, token_grid)
    marked_ijk = np.array([token_grid[2] // 2, token_grid[1] // 2 - 1, token_grid[0] // 2])  # central-ish token
    centre = token_geometry.index_to_lps(marked_ijk)

    volume, sphere = ct_with_sphere(geometry, centre, radius_mm=7.0)
    assert sphere.sum() > 10, "the sphere must lie inside the original volume"
    prepared = prepare_volume(volume, CONFIG)

    # Forward: signal lands in the marked token.
    blocks = prepared.array.reshape(
        token_grid[0], CONFIG.model_grid[0] // token_grid[0],
        token_grid[1], CONFIG.model_grid[1] // token_grid[1],
        token_grid[2], CONFIG.model_grid[2] // token_grid[2],
    ).sum(axis=(1, 3, 5))  # fmt: skip
    assert np.unravel_index(np.argmax(blocks), blocks.shape) == tuple(marked_ijk[::-1])

    # Inverse: a one-hot token grid comes back around the sphere, centred on P.
    one_hot = np.zeros(token_grid, np.float32)
    one_hot[tuple(marked_ijk[::-1])] = 1.0
    heatmap = map_to_source(one_hot, prepared)
    assert heatmap.shape == geometry.array_shape
    assert np.all(heatmap[sphere] == 1.0), "every voxel of the structure must be inside its token"
    marked_kji = np.argwhere(heatmap == 1.0)
    centre_index = marked_kji.mean(axis=0)[::-1]
    error_voxels = np.abs(centre_index - geometry.lps_to_index(centre))
    assert np.all(error_voxels <= 0.5), f"token centre off by {error_voxels} voxels"
    # Its extent is the token's block: along each block axis the marked voxel centres span the
    # block's length, less at most one voxel (a voxel's projection is at most its diagonal).
    projections = (geometry.index_to_lps(marked_kji[:, ::-1]) - centre) @ token_geometry.direction
    spans = projections.max(axis=0) - projections.min(axis=0)
    voxel_diagonal = np.linalg.norm(geometry.spacing)
    assert np.all(spans <= np.array(token_geometry.spacing) + 1e-6)
    assert np.all(spans >= np.array(token_geometry.spacing) - voxel_diagonal)


def test_each_original_voxel_gets_the_token_whose_block_contains_it():
    geometry = CASES["oblique-anisotropic"]
    volume, _ = ct_with_sphere(geometry, geometry.center_lps, 20.0)
    prepared = prepare_volume(volume, CONFIG)
    token_values = np.arange(4 * 8 * 8, dtype=np.float32).reshape(4, 8, 8) + 1
    heatmap = map_to_source(token_values, prepared, fill_value=0.0)

    token_geometry = block_grid_geometry(prepared.geometry, (4, 8, 8))
    positions = voxel_positions_lps(geometry).reshape(-1, 3)
    token_index = token_geometry.lps_to_index(positions)
    nearest = np.round(token_index).astype(int)
    inside = np.all((token_index > -0.5 + 1e-6) & (token_index < np.array(token_geometry.size) - 0.5 - 1e-6), axis=1)
    # Skip voxels within 1e-6 of a block face, where rounding may go either way.
    away_from_faces = np.all(np.abs(token_index - np.floor(token_index) - 0.5) > 1e-4, axis=1)
    expected = np.zeros(len(positions), np.float32)
    expected[inside] = token_values[nearest[inside, 2], nearest[inside, 1], nearest[inside, 0]]
    np.testing.assert_array_equal(heatmap.reshape(-1)[away_from_faces], expected[away_from_faces])
    assert (heatmap == 0).any(), "this volume is larger than the field of view: outside voxels get the fill value"


def test_per_model_voxel_values_map_back_onto_the_image():
    """Mapping the model's own input back reproduces the (normalised) original image."""
    geometry = CASES["oblique-anisotropic"]
    positions = voxel_positions_lps(geometry)
    smooth = 500 * np.sin(positions[..., 0] / 25.0) * np.cos(positions[..., 1] / 30.0) + 2 * positions[..., 2]
    volume = Volume(smooth.astype(np.float32), geometry, "nrrd", modality="CT")
    config = PreprocessConfig(field_of_view=(150, 160, 160), model_grid=(112, 112, 112), ct_window_hu=(-2000, 2000))
    prepared = prepare_volume(volume, config)

    back = map_to_source(prepared.array, prepared, interpolation="linear", fill_value=np.nan)

    expected = (smooth - smooth.min()) / (smooth.max() - smooth.min())
    # Voxels on the faces of the original volume interpolate with the padding beyond them.
    interior = np.zeros_like(back, dtype=bool)
    interior[1:-1, 1:-1, 1:-1] = True
    covered = ~np.isnan(back) & interior
    assert covered.mean() > 0.5
    # Values are min-max scaled over the model grid, so compare after matching scale.
    slope, intercept = np.polyfit(back[covered], expected[covered], 1)
    residual = np.abs(slope * back[covered] + intercept - expected[covered])
    assert np.percentile(residual, 99) < 0.02


def test_linear_heatmap_peaks_at_the_token_centre():
    geometry = CASES["oblique-left-handed"]
    volume, _ = ct_with_sphere(geometry, geometry.center_lps, 10.0)
    prepared = prepare_volume(volume, CONFIG)
    token_geometry = block_grid_geometry(prepared.geometry, (4, 4, 4))
    values = np.zeros((4, 4, 4), np.float32)
    values[2, 1, 2] = 1.0
    heatmap = map_to_source(values, prepared, interpolation="linear")
    peak_kji = np.array(np.unravel_index(np.argmax(heatmap), heatmap.shape))
    expected = geometry.lps_to_index(token_geometry.index_to_lps([2, 1, 2]))
    assert np.all(np.abs(peak_kji[::-1] - expected) <= 1.0)


@pytest.mark.parametrize("suffix", [".nrrd", ".nii.gz"])
def test_written_heatmap_has_the_original_geometry(tmp_path, suffix):
    geometry = CASES["oblique-anisotropic"]
    volume, sphere = ct_with_sphere(geometry, geometry.center_lps, 8.0)
    prepared = prepare_volume(volume, CONFIG)
    values = np.random.default_rng(0).random((4, 4, 4)).astype(np.float32)

    path = write_heatmap(tmp_path / f"heat{suffix}", values, prepared)

    heatmap = read_volume(path)
    tolerance = 1e-4 if suffix == ".nii.gz" else 1e-9
    assert heatmap.geometry.isclose(geometry, atol_mm=tolerance, atol_direction=tolerance)
    np.testing.assert_allclose(heatmap.geometry.ijk_to_ras, geometry.ijk_to_ras, atol=1e-3)
    np.testing.assert_allclose(heatmap.array, map_to_source(values, prepared))
    # Written through SimpleITK's own reader: the same physical point for the same index.
    image = sitk.ReadImage(str(path))
    np.testing.assert_allclose(image.TransformIndexToPhysicalPoint((5, 6, 7)), geometry.index_to_lps([5, 6, 7]), atol=1e-3)


def test_bad_values_are_refused():
    geometry = CASES["ras-axial"]
    volume, _ = ct_with_sphere(geometry, geometry.center_lps, 8.0)
    prepared = prepare_volume(volume, CONFIG)
    with pytest.raises(ValueError, match="3D"):
        map_to_source(np.zeros((4, 4)), prepared)
    with pytest.raises(ValueError, match="NaN"):
        map_to_source(np.full((4, 4, 4), np.nan), prepared)
    with pytest.raises(ValueError, match="interpolation"):
        map_to_source(np.zeros((4, 4, 4)), prepared, interpolation="cubic")
