"""Reading every supported file format back with exact voxels and geometry, and refusing bad input."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import SimpleITK as sitk

from photonlib.geometry import VolumeGeometry
from photonlib.volume import (
    EmptyVolumeError,
    MultiComponentVolumeError,
    NonFiniteVolumeError,
    NotThreeDimensionalError,
    ReadLimits,
    UnreadableVolumeError,
    UnsupportedFormatError,
    VolumeTooLargeError,
    read_volume,
    write_volume,
)

from support.volumes import gradient_volume, rotation

GEOMETRIES = {
    "lps-axial": VolumeGeometry((20, 18, 12), (0.7, 0.7, 2.5), (-30.0, 12.0, 100.0), np.eye(3)),
    "ras": VolumeGeometry((16, 20, 10), (1.0, 1.2, 3.0), (5.0, -7.0, 2.0), np.diag([-1.0, -1.0, 1.0])),
    "oblique-anisotropic": VolumeGeometry((15, 17, 11), (0.55, 1.3, 4.0), (-12.5, 33.0, -8.0), rotation(4)),
    "sagittal": VolumeGeometry((10, 14, 16), (2.0, 0.9, 0.9), (0.0, 0.0, 0.0), np.array([[0, 0, 1], [1, 0, 0], [0, -1, 0]])),
}
SUFFIXES = [".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd"]


@pytest.mark.parametrize("suffix", SUFFIXES)
@pytest.mark.parametrize("name", GEOMETRIES)
def test_round_trip_keeps_voxels_and_geometry(tmp_path, name, suffix):
    geometry = GEOMETRIES[name]
    array = gradient_volume(geometry)
    path = write_volume(tmp_path / f"volume{suffix}", array, geometry)

    volume = read_volume(path)

    np.testing.assert_array_equal(volume.array, array)
    # NIfTI stores the affine in float32: allow its rounding, nothing more.
    tolerance = 1e-4 if suffix.startswith(".nii") else 1e-9
    assert volume.geometry.isclose(geometry, atol_mm=tolerance, atol_direction=tolerance), (volume.geometry, geometry)
    assert volume.geometry.orientation_code == geometry.orientation_code


def test_nifti_written_by_simpleitk_is_read_in_lps(tmp_path):
    """A file written by another tool (SimpleITK directly) is read with the same physical points."""
    image = sitk.Image(6, 7, 8, sitk.sitkInt16)
    image.SetSpacing((0.5, 0.75, 2.0))
    image.SetOrigin((10.0, 20.0, 30.0))
    image.SetDirection(rotation(9).flatten().tolist())
    sitk.WriteImage(image, str(tmp_path / "other.nii.gz"))
    image.SetPixel(3, 2, 1, 100)
    sitk.WriteImage(image, str(tmp_path / "other.nii.gz"))

    volume = read_volume(tmp_path / "other.nii.gz")

    assert volume.array[1, 2, 3] == 100 and volume.array.sum() == 100
    expected = image.TransformIndexToPhysicalPoint((3, 2, 1))
    np.testing.assert_allclose(volume.geometry.index_to_lps([3, 2, 1]), expected, atol=1e-4)


def test_npy_benchmark_array_gets_identity_geometry_and_says_so(tmp_path):
    array = np.random.default_rng(0).random((1, 8, 16, 16), dtype=np.float32)  # M3D style (C, D, H, W)
    np.save(tmp_path / "case.npy", array)

    volume = read_volume(tmp_path / "case.npy")

    np.testing.assert_array_equal(volume.array, array[0])
    assert volume.geometry == VolumeGeometry.identity((16, 16, 8))
    assert volume.intensity_normalized
    assert any("identity" in note and "1 mm" in note for note in volume.notes)


def test_npy_three_dimensional_raw_values_are_flagged(tmp_path):
    np.save(tmp_path / "raw.npy", np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6) - 1000)
    volume = read_volume(tmp_path / "raw.npy")
    assert volume.array.shape == (4, 5, 6)
    assert not volume.intensity_normalized
    assert any("not [0, 1]" in note for note in volume.notes)


def test_npy_multichannel_needs_a_component(tmp_path):
    np.save(tmp_path / "multi.npy", np.random.default_rng(1).random((3, 4, 5, 6)))
    with pytest.raises(MultiComponentVolumeError, match="component=0..2"):
        read_volume(tmp_path / "multi.npy")
    volume = read_volume(tmp_path / "multi.npy", component=2)
    np.testing.assert_array_equal(volume.array, np.load(tmp_path / "multi.npy")[2])


def test_npy_with_python_objects_is_refused(tmp_path):
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(UnreadableVolumeError, match="objects"):
        read_volume(tmp_path / "objects.npy")


# ---------------------------------------------------------------- bad input


def test_missing_file(tmp_path):
    with pytest.raises(UnreadableVolumeError, match="no such file"):
        read_volume(tmp_path / "absent.nii.gz")


def test_unknown_format(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(UnsupportedFormatError, match="accepted: NIfTI"):
        read_volume(tmp_path / "notes.txt")


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha", ".nii"])
def test_garbage_with_a_volume_suffix(tmp_path, suffix):
    path = tmp_path / f"fake{suffix}"
    path.write_bytes(b"this is not an image at all\n" * 10)
    with pytest.raises(UnreadableVolumeError):
        read_volume(path)


@pytest.mark.parametrize("suffix", [".nrrd", ".nii", ".mha"])
def test_truncated_file(tmp_path, suffix):
    geometry = GEOMETRIES["oblique-anisotropic"]
    path = write_volume(tmp_path / f"full{suffix}", gradient_volume(geometry), geometry, compress=False)
    data = path.read_bytes()
    truncated = tmp_path / f"truncated{suffix}"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(UnreadableVolumeError, match="truncated"):
        read_volume(truncated)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha"])
@pytest.mark.parametrize("fraction", [0.2, 0.5, 0.99])
def test_truncated_compressed_file(tmp_path, suffix, fraction):
    """ITK's NIfTI reader zero-fills a cut .nii.gz silently: the reader must notice."""
    geometry = GEOMETRIES["lps-axial"]
    path = write_volume(tmp_path / f"full{suffix}", gradient_volume(geometry), geometry, compress=True)
    data = path.read_bytes()
    truncated = tmp_path / f"cut{suffix}"
    truncated.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(UnreadableVolumeError):
        read_volume(truncated)


def test_truncated_npy(tmp_path):
    np.save(tmp_path / "full.npy", np.zeros((10, 10, 10), dtype=np.float32))
    (tmp_path / "cut.npy").write_bytes((tmp_path / "full.npy").read_bytes()[:500])
    with pytest.raises(UnreadableVolumeError, match="truncated"):
        read_volume(tmp_path / "cut.npy")


def test_two_dimensional_image(tmp_path):
    sitk.WriteImage(sitk.Image(32, 32, sitk.sitkInt16) + 5, str(tmp_path / "slice.nrrd"))
    with pytest.raises(NotThreeDimensionalError, match="2D image"):
        read_volume(tmp_path / "slice.nrrd")


def test_single_slice_volume_is_two_dimensional(tmp_path):
    geometry = VolumeGeometry((32, 32, 1), (1, 1, 1), (0, 0, 0), np.eye(3))
    write_volume(tmp_path / "one.nii.gz", gradient_volume(geometry), geometry)
    with pytest.raises(NotThreeDimensionalError, match="single voxel"):
        read_volume(tmp_path / "one.nii.gz")


def test_npy_two_dimensional(tmp_path):
    np.save(tmp_path / "flat.npy", np.ones((16, 16)))
    with pytest.raises(NotThreeDimensionalError, match=r"\(D, H, W\)"):
        read_volume(tmp_path / "flat.npy")


def test_four_dimensional_image_needs_a_timepoint(tmp_path):
    series = sitk.JoinSeries([sitk.Image(6, 7, 8, sitk.sitkFloat32) + float(t) for t in range(3)])
    sitk.WriteImage(series, str(tmp_path / "dwi.nii.gz"))
    with pytest.raises(MultiComponentVolumeError, match="timepoint=0..2"):
        read_volume(tmp_path / "dwi.nii.gz")
    with pytest.raises(MultiComponentVolumeError, match="out of range"):
        read_volume(tmp_path / "dwi.nii.gz", timepoint=3)


def test_four_dimensional_timepoint_choice_reads_that_volume(tmp_path):
    frames = [sitk.GetImageFromArray(np.full((8, 7, 6), t, dtype=np.float32)) for t in range(3)]
    for frame in frames:  # make each frame non-constant so it is a valid volume
        frame[0, 0, 0] = 100.0
    sitk.WriteImage(sitk.JoinSeries(frames), str(tmp_path / "dwi.nii.gz"))
    volume = read_volume(tmp_path / "dwi.nii.gz", timepoint=2)
    assert volume.array.shape == (8, 7, 6)
    assert volume.array[4, 4, 4] == 2.0


def test_multi_component_image_needs_a_component(tmp_path):
    rgb = sitk.Compose([sitk.GetImageFromArray(np.random.default_rng(c).random((5, 6, 7)).astype(np.float32)) for c in range(3)])
    sitk.WriteImage(rgb, str(tmp_path / "rgb.nrrd"))
    with pytest.raises(MultiComponentVolumeError, match="component=0..2"):
        read_volume(tmp_path / "rgb.nrrd")
    volume = read_volume(tmp_path / "rgb.nrrd", component=1)
    np.testing.assert_allclose(volume.array, sitk.GetArrayFromImage(rgb)[..., 1])


def test_empty_and_blank_images(tmp_path):
    geometry = GEOMETRIES["lps-axial"]
    write_volume(tmp_path / "blank.nrrd", np.zeros(geometry.array_shape, np.int16), geometry)
    with pytest.raises(EmptyVolumeError, match="blank"):
        read_volume(tmp_path / "blank.nrrd")
    np.save(tmp_path / "empty.npy", np.zeros((0, 4, 4), np.float32))
    with pytest.raises((EmptyVolumeError, NotThreeDimensionalError)):
        read_volume(tmp_path / "empty.npy")


@pytest.mark.parametrize("bad_value", [np.nan, np.inf, -np.inf])
def test_non_finite_voxels(tmp_path, bad_value):
    geometry = GEOMETRIES["ras"]
    array = gradient_volume(geometry, dtype=np.float32)
    array[3, 4, 5] = bad_value
    write_volume(tmp_path / "bad.nrrd", array, geometry)
    with pytest.raises(NonFiniteVolumeError, match=r"1 NaN or infinite voxels \(first at index i,j,k=\(5, 4, 3\)\)"):
        read_volume(tmp_path / "bad.nrrd")


def test_non_finite_npy(tmp_path):
    array = np.zeros((4, 5, 6), np.float32)
    array[1, 1, 1] = np.nan
    np.save(tmp_path / "nan.npy", array)
    with pytest.raises(NonFiniteVolumeError):
        read_volume(tmp_path / "nan.npy")


def test_absurd_size_is_refused_before_reading_pixels(tmp_path):
    """A header promising 4096^3 voxels is refused although the file holds only a few bytes."""
    header = (
        "NRRD0004\ntype: short\ndimension: 3\nsizes: 4096 4096 4096\nspacings: 1 1 1\n"
        "endian: little\nencoding: raw\ndata file: missing.raw\n\n"
    )
    (tmp_path / "huge.nhdr").write_text(header)
    (tmp_path / "missing.raw").write_bytes(b"")
    with pytest.raises(VolumeTooLargeError, match="68,719,476,736 voxels"):
        read_volume(tmp_path / "huge.nhdr")


def test_size_limit_is_configurable(tmp_path):
    geometry = GEOMETRIES["lps-axial"]
    write_volume(tmp_path / "v.mha", gradient_volume(geometry), geometry)
    with pytest.raises(VolumeTooLargeError, match="limit is 1,000"):
        read_volume(tmp_path / "v.mha", limits=ReadLimits(max_voxels=1000))
    with pytest.raises(VolumeTooLargeError, match="per axis"):
        read_volume(tmp_path / "v.mha", limits=ReadLimits(max_dimension=10))


def test_npy_size_is_checked_from_the_header(tmp_path):
    # A memory-mapped .npy is checked from its header: the refusal does not need the data.
    array = np.lib.format.open_memmap(tmp_path / "big.npy", mode="w+", dtype=np.uint8, shape=(64, 64, 64))
    del array
    with pytest.raises(VolumeTooLargeError):
        read_volume(tmp_path / "big.npy", limits=ReadLimits(max_voxels=64**3 - 1))


def test_gzip_bomb_style_header_is_refused_early(tmp_path):
    """A .nii.gz whose header claims a huge image is refused from the header alone."""
    geometry = GEOMETRIES["lps-axial"]
    path = write_volume(tmp_path / "v.nii", gradient_volume(geometry), geometry, compress=False)
    data = bytearray(path.read_bytes())
    # NIfTI-1 dim[1..3] are int16 at byte offsets 42, 44, 46.
    for offset in (42, 44, 46):
        data[offset : offset + 2] = (4000).to_bytes(2, "little")
    (tmp_path / "bomb.nii.gz").write_bytes(gzip.compress(bytes(data)))
    with pytest.raises(VolumeTooLargeError):
        read_volume(tmp_path / "bomb.nii.gz")
