"""Preprocessing to the model grid: the released numbers, exact geometry, intensity handling."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import SimpleITK as sitk
import torch
import torch.nn.functional as F

from photonlib.geometry import VolumeGeometry
from photonlib.volume import PreprocessConfig, Volume, prepare_volume, read_volume
from photonlib.volume.preprocess import field_of_view_geometry, reorient_geometry

from support.volumes import ct_with_sphere, rotation, voxel_positions_lps

SMALL = PreprocessConfig(field_of_view=(60, 64, 64), model_grid=(20, 24, 24))


def test_defaults_are_the_released_photon_numbers():
    config = PreprocessConfig()
    assert config.orientation == "RAI"
    assert config.isotropic_spacing_mm == 1.0
    assert config.field_of_view == (364, 364, 364)
    assert config.ct_window_hu == (-1000.0, 1000.0)
    assert config.model_grid == (140, 280, 280)
    assert config.flip_w
    assert PreprocessConfig.preset("photon") == config


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"orientation": "RAR"}, "orientation"),
        ({"orientation": "XYZ"}, "orientation"),
        ({"model_grid": (0, 10, 10)}, "model_grid"),
        ({"isotropic_spacing_mm": 0}, "isotropic"),
        ({"intensity": "hu"}, "intensity"),
        ({"ct_window_hu": (100, -100)}, "ct_window"),
        ({"percentiles": (50, 120)}, "percentiles"),
    ],
)
def test_bad_configuration_is_refused(overrides, message):
    with pytest.raises(ValueError, match=message):
        PreprocessConfig(**overrides)


def test_unknown_preset():
    with pytest.raises(ValueError, match="known: photon, small, tiny"):
        PreprocessConfig.preset("huge")


def test_config_dict_round_trip():
    config = PreprocessConfig(model_grid=(28, 56, 56), intensity="percentile", flip_w=False)
    assert PreprocessConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize("seed", range(40))
def test_reorientation_matches_simpleitk_dicom_orient(seed):
    direction = rotation(seed)
    if seed % 3 == 0:
        direction[:, 1] *= -1  # left-handed
    geometry = VolumeGeometry((5, 6, 7), (0.5, 1.5, 2.5), (3.0, -4.0, 5.0), direction)
    image = sitk.Image(list(geometry.size), sitk.sitkUInt8)
    image.SetSpacing(geometry.spacing)
    image.SetOrigin(geometry.origin_lps)
    image.SetDirection(direction.flatten().tolist())
    for code in ("RAI", "LPS", "RAS", "PIR"):
        expected = sitk.DICOMOrient(image, code)
        ours = reorient_geometry(geometry, code)
        assert ours.isclose(VolumeGeometry(expected.GetSize(), expected.GetSpacing(), expected.GetOrigin(), expected.GetDirection()))


def released_pipeline(volume: Volume, config: PreprocessConfig) -> np.ndarray:
    """The released steps written out literally, independently of prepare_volume."""
    image = sitk.Cast(volume.to_sitk(), sitk.sitkFloat32)
    image = sitk.DICOMOrient(image, config.orientation)
    spacing = config.isotropic_spacing_mm
    new_size = [max(1, int(round(n * s / spacing))) for n, s in zip(image.GetSize(), image.GetSpacing())]
    image = sitk.Resample(
        image, new_size, sitk.Transform(), sitk.sitkLinear, image.GetOrigin(), (spacing,) * 3,
        image.GetDirection(), -1000.0, sitk.sitkFloat32,
    )
    array = sitk.GetArrayFromImage(image)  # (D, H, W)
    for axis, target in enumerate(config.field_of_view):  # centre crop or pad
        current = array.shape[axis]
        if current >= target:
            start = (current - target) // 2
            array = np.take(array, range(start, start + target), axis=axis)
        else:
            before = (target - current) // 2
            widths = [(0, 0)] * 3
            widths[axis] = (before, target - current - before)
            array = np.pad(array, widths, constant_values=-1000.0)
    array = np.clip(array, *config.ct_window_hu)
    tensor = torch.from_numpy(np.ascontiguousarray(array))[None, None]
    array = F.interpolate(tensor, size=config.model_grid, mode="trilinear", align_corners=False)[0, 0].numpy()
    array = (array - array.min()) / (array.max() - array.min())
    return array[:, :, ::-1]


@pytest.mark.parametrize(
    "geometry",
    [
        VolumeGeometry((50, 40, 30), (1.3, 1.1, 2.0), (-20.0, 10.0, 5.0), np.eye(3)),  # crop and pad mixed
        VolumeGeometry((30, 36, 24), (2.2, 2.0, 3.0), (4.0, -3.0, 2.0), np.diag([-1.0, -1.0, 1.0])),  # RAS, pad only
        VolumeGeometry((70, 70, 40), (1.0, 1.0, 2.5), (0.0, 0.0, 0.0), np.diag([1.0, -1.0, -1.0])),  # crop only
    ],
    ids=["lps-crop-pad", "ras-pad", "flipped-crop"],
)
def test_matches_the_released_steps_done_literally(geometry):
    rng = np.random.default_rng(0)
    array = rng.normal(0, 400, geometry.array_shape).astype(np.float32)
    array[0, 0, 0] = -1000  # ensure the full window is reached, as real CT does
    array[-1, -1, -1] = 1000
    volume = Volume(array=array, geometry=geometry, source_format="nrrd", modality="CT")

    prepared = prepare_volume(volume, SMALL)

    assert prepared.array.shape == SMALL.model_grid
    assert prepared.array.dtype == np.float32
    np.testing.assert_allclose(prepared.array, released_pipeline(volume, SMALL), atol=2e-5)


def sphere_centroid_model_index(prepared) -> np.ndarray:
    weights = np.clip(prepared.array - 0.5, 0, None)
    kji = np.argwhere(weights > 0)
    centroid_kji = (kji * weights[weights > 0][:, None]).sum(axis=0) / weights.sum()
    return centroid_kji[::-1]


@pytest.mark.parametrize("seed", [3, 5, 8])
def test_a_structure_keeps_its_physical_position_in_the_model_grid(seed):
    """Image content at a physical point appears at the model voxel the geometry says."""
    geometry = VolumeGeometry((60, 55, 30), (1.1, 0.9, 2.5), (12.0, -30.0, 40.0), rotation(seed))
    centre = geometry.index_to_lps([38, 20, 14])
    volume, _ = ct_with_sphere(geometry, centre, radius_mm=9.0)
    config = PreprocessConfig(field_of_view=(64, 64, 64), model_grid=(32, 64, 64))

    prepared = prepare_volume(volume, config)

    found = prepared.geometry.index_to_lps(sphere_centroid_model_index(prepared))
    error_in_model_voxels = np.abs(prepared.geometry.lps_to_index(found) - prepared.geometry.lps_to_index(centre))
    assert np.all(error_in_model_voxels < 0.5), error_in_model_voxels
    # W is flipped and the grid is RAI-like: i now points toward patient Left.
    assert prepared.geometry.orientation_code[1:] == "AI"


def test_model_grid_orientation_without_flip_is_rai():
    geometry = VolumeGeometry((20, 20, 20), (1, 1, 1), (0, 0, 0), np.eye(3))
    volume, _ = ct_with_sphere(geometry, geometry.center_lps, 4)
    prepared = prepare_volume(volume, PreprocessConfig(field_of_view=(20, 20, 20), model_grid=(10, 10, 10), flip_w=False))
    assert prepared.geometry.orientation_code == "RAI"
    flipped = prepare_volume(volume, PreprocessConfig(field_of_view=(20, 20, 20), model_grid=(10, 10, 10)))
    np.testing.assert_allclose(flipped.array, prepared.array[:, :, ::-1])
    assert flipped.geometry.orientation_code == "LAI"


def test_field_of_view_is_centred_on_the_volume():
    for seed in range(3):
        geometry = VolumeGeometry((200, 180, 90), (0.8, 0.8, 3.0), (1.0, 2.0, 3.0), rotation(seed))
        grid = field_of_view_geometry(geometry, PreprocessConfig(field_of_view=(100, 120, 140)))
        # Centred to within one isotropic voxel (crops and pads are whole voxels).
        assert np.linalg.norm(grid.center_lps - geometry.center_lps) <= np.sqrt(3) * 1.0


def test_mr_volume_uses_percentiles():
    geometry = VolumeGeometry((30, 30, 30), (1, 1, 1), (0, 0, 0), np.eye(3))
    rng = np.random.default_rng(0)
    array = rng.gamma(2.0, 200.0, geometry.array_shape).astype(np.float32)
    array[0, 0, 0] = 1e6  # a hot outlier voxel must not squash the contrast
    volume = Volume(array=array, geometry=geometry, source_format="nifti", modality="MR")

    prepared = prepare_volume(volume, SMALL)

    assert prepared.intensity_mode == "percentile"
    low, high = np.percentile(array, SMALL.percentiles)
    assert prepared.intensity_window == pytest.approx((low, high))
    assert prepared.array.min() == 0.0 and prepared.array.max() == pytest.approx(1.0)
    assert np.median(prepared.array[prepared.array > 0]) > 0.1  # contrast kept despite the outlier


def test_ct_is_recognised_from_hounsfield_values(example_volume_path):
    prepared = prepare_volume(read_volume(example_volume_path), PreprocessConfig.preset("tiny"))
    assert prepared.intensity_mode == "ct"
    assert prepared.intensity_window == (-1000.0, 1000.0)
    assert any("Hounsfield" in note for note in prepared.notes)
    assert prepared.array.shape == (28, 56, 56)
    assert 0.0 <= prepared.array.min() and prepared.array.max() <= 1.0


def test_benchmark_array_is_only_resized(tmp_path):
    array = np.random.default_rng(2).random((1, 16, 32, 32), dtype=np.float32)
    np.save(tmp_path / "m3d.npy", array)
    volume = read_volume(tmp_path / "m3d.npy")

    prepared = prepare_volume(volume, PreprocessConfig(model_grid=(16, 32, 32)))

    assert prepared.intensity_mode == "none"
    np.testing.assert_allclose(prepared.array, array[0], atol=1e-6)  # same grid: values untouched
    assert prepared.geometry.isclose(volume.geometry)
    assert any("only resized" in note for note in prepared.notes)


def test_intensity_mode_can_be_forced():
    geometry = VolumeGeometry((20, 20, 20), (1, 1, 1), (0, 0, 0), np.eye(3))
    volume, _ = ct_with_sphere(geometry, geometry.center_lps, 5, inside=300.0, outside=-200.0)
    config = PreprocessConfig(field_of_view=(20, 20, 20), model_grid=(10, 10, 10), intensity="minmax")
    prepared = prepare_volume(volume, config)
    assert prepared.intensity_mode == "minmax"
    assert prepared.intensity_window == (-200.0, 300.0)


def test_padding_looks_like_air():
    """Voxels outside the scanned field of view become 0 (air), not mid-grey."""
    geometry = VolumeGeometry((10, 10, 10), (1, 1, 1), (0, 0, 0), np.eye(3))
    volume, _ = ct_with_sphere(geometry, geometry.center_lps, 3, inside=500.0, outside=0.0)  # water + bone
    volume = Volume(volume.array, geometry, "nrrd", modality="CT")
    prepared = prepare_volume(volume, PreprocessConfig(field_of_view=(40, 40, 40), model_grid=(20, 20, 20)))
    positions = voxel_positions_lps(prepared.geometry)
    outside = np.linalg.norm(positions - geometry.center_lps, axis=-1) > 12
    assert np.all(prepared.array[outside] == 0.0)


@pytest.mark.parametrize("index", [0, 1, 2, 3])
def test_a_label_map_lands_where_its_image_does(index):
    """prepare_label_map takes the image's field of view, resizing and flip, nearest-neighbour:
    its organ voxels are where the linearly resampled organ mask is mostly organ, for axial,
    flipped and oblique phantom grids."""
    from photonlib.data.phantoms import LABELS, make_case
    from photonlib.volume import prepare_label_map

    case = make_case(7, index, "small", "liver")
    config = dataclasses.replace(PreprocessConfig.preset("small"), intensity="none")
    labels = prepare_label_map(Volume(case.labels, case.geometry, "labels"), config)
    assert labels.dtype == np.int32 and set(np.unique(labels)) <= set(range(11))
    # A small lesion has proportionally more edge voxels, where two nearest-neighbour steps and
    # one linear one disagree by up to a voxel.
    for name, agreement in (("liver", 0.95), ("spleen", 0.95), ("lesion", 0.8)):
        mask = (case.labels == LABELS[name]).astype(np.float32)
        fraction = prepare_volume(Volume(mask, case.geometry, "mask"), config).array
        nearest = labels == LABELS[name]
        assert nearest.any()
        assert (fraction[nearest] > 0.25).mean() > agreement, name  # nearest-neighbour voxels lie on the organ
        assert nearest[fraction > 0.75].mean() > agreement, name  # and cover its core
