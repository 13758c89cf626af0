"""The geometry type: IJK <-> LPS/RAS conversions, orientation codes, round trips."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from photonlib.geometry import LPS_TO_RAS, VolumeGeometry

from support.volumes import rotation


def test_identity_geometry_maps_index_to_millimetres():
    geometry = VolumeGeometry((10, 20, 30), (0.5, 1.0, 2.5), (10.0, -5.0, 3.0), np.eye(3))
    assert geometry.array_shape == (30, 20, 10)
    np.testing.assert_allclose(geometry.index_to_lps([2, 3, 4]), [11.0, -2.0, 13.0])
    # RAS negates x and y (Slicer's world), z is shared.
    np.testing.assert_allclose(geometry.index_to_ras([2, 3, 4]), [-11.0, 2.0, 13.0])
    assert geometry.orientation_code == "LPS"
    assert not geometry.is_oblique


def test_ras_and_lps_matrices_differ_by_the_xy_flip():
    geometry = VolumeGeometry((8, 9, 10), (0.7, 0.8, 3.0), (1.0, 2.0, 3.0), rotation(1))
    np.testing.assert_allclose(geometry.ijk_to_ras, LPS_TO_RAS @ geometry.ijk_to_lps)
    np.testing.assert_allclose(geometry.ijk_to_ras @ geometry.ras_to_ijk, np.eye(4), atol=1e-12)
    np.testing.assert_allclose(geometry.origin_ras, [-1.0, -2.0, 3.0])


@pytest.mark.parametrize("seed", range(5))
def test_point_round_trips_through_patient_space(seed):
    geometry = VolumeGeometry((50, 60, 70), (0.6, 0.9, 2.0), (-100.0, 40.0, 7.5), rotation(seed))
    ijk = np.random.default_rng(seed).uniform(0, 50, size=(20, 3))
    np.testing.assert_allclose(geometry.lps_to_index(geometry.index_to_lps(ijk)), ijk, atol=1e-9)
    np.testing.assert_allclose(geometry.ras_to_index(geometry.index_to_ras(ijk)), ijk, atol=1e-9)
    # The 4x4 matrices agree with the point functions.
    homogeneous = np.c_[ijk, np.ones(len(ijk))]
    np.testing.assert_allclose((geometry.ijk_to_ras @ homogeneous.T).T[:, :3], geometry.index_to_ras(ijk))


@pytest.mark.parametrize("seed", range(4))
def test_slicer_ijk_to_ras_matrix_round_trip(seed):
    geometry = VolumeGeometry((5, 6, 7), (0.3, 1.7, 4.0), (3.0, 2.0, 1.0), rotation(seed))
    rebuilt = VolumeGeometry.from_ijk_to_ras(geometry.ijk_to_ras, geometry.size)
    assert rebuilt.isclose(geometry, atol_mm=1e-9, atol_direction=1e-12)


def test_dict_round_trip_survives_json():
    geometry = VolumeGeometry((5, 6, 7), (0.3, 1.7, 4.0), (3.0, 2.0, 1.0), rotation(3))
    assert VolumeGeometry.from_dict(json.loads(json.dumps(geometry.to_dict()))) == geometry


def test_matches_simpleitk_physical_points():
    geometry = VolumeGeometry((12, 13, 14), (0.8, 1.1, 2.5), (-4.0, 8.0, 15.0), rotation(11))
    image = sitk.Image(list(geometry.size), sitk.sitkUInt8)
    image.SetSpacing(geometry.spacing)
    image.SetOrigin(geometry.origin_lps)
    image.SetDirection(geometry.direction.flatten().tolist())
    for ijk in [(0, 0, 0), (11, 0, 5), (3.5, 7.25, 13)]:
        expected = image.TransformContinuousIndexToPhysicalPoint([float(v) for v in ijk])
        np.testing.assert_allclose(geometry.index_to_lps(ijk), expected, atol=1e-9)


@pytest.mark.parametrize("seed", range(30))
def test_orientation_code_matches_simpleitk(seed):
    direction = rotation(seed)
    if seed % 2:  # left-handed directions occur too (e.g. after flipping one axis)
        direction[:, 0] *= -1
    geometry = VolumeGeometry((2, 2, 2), (1, 1, 1), (0, 0, 0), direction)
    expected = sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(direction.flatten().tolist())
    assert geometry.orientation_code == expected


def test_axis_aligned_codes():
    flip_xy = np.diag([-1.0, -1.0, 1.0])
    assert VolumeGeometry((2, 2, 2), (1, 1, 1), (0, 0, 0), flip_xy).orientation_code == "RAS"
    permuted = np.array([[0, 0, -1], [1, 0, 0], [0, -1, 0]], dtype=float)  # i->P, j->I, k->R
    assert VolumeGeometry((2, 2, 2), (1, 1, 1), (0, 0, 0), permuted).orientation_code == "PIR"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"spacing": (1, 0, 1)}, "spacing"),
        ({"spacing": (1, float("nan"), 1)}, "spacing"),
        ({"origin_lps": (0, float("inf"), 0)}, "origin"),
        ({"direction_lps": np.diag([1.0, 2.0, 1.0])}, "orthonormal"),
        ({"size": (1, 2)}, "3 values"),
    ],
)
def test_invalid_geometry_is_refused(kwargs, message):
    values = {"size": (2, 2, 2), "spacing": (1, 1, 1), "origin_lps": (0, 0, 0), "direction_lps": np.eye(3)}
    values.update(kwargs)
    with pytest.raises(ValueError, match=message):
        VolumeGeometry(**values)
