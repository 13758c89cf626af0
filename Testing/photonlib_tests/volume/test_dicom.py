"""The DICOM series reader, on real files written with pydicom from the MNI152 template.

Every series is written in shuffled order under random names, so these tests only pass when
the reader sorts slices by their position. Round trips are cross-checked against plain
SimpleITK, which sorts the same files by itself.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.data import get_testdata_file
from pydicom.uid import RLELossless

from photonlib.geometry import VolumeGeometry
from photonlib.volume import (
    AmbiguousDicomSeriesError,
    InconsistentDicomSeriesError,
    NoDicomSeriesError,
    NotThreeDimensionalError,
    ReadLimits,
    UnreadableVolumeError,
    VolumeError,
    VolumeTooLargeError,
    read_volume,
)
from photonlib.volume.dicom import DicomSeriesInfo, list_dicom_series, read_dicom_series
from photonlib.volume.image import geometry_from_sitk

from support.dicom_series import (
    PATIENT_BIRTH_DATE,
    PATIENT_ID,
    PATIENT_NAME,
    WrittenSeries,
    copy_as_new_image,
    mni_template_voxels,
    position_string,
    rewrite_slice,
    write_dicom_series,
    write_enhanced_ct,
)
from support.volumes import rotation

AXIAL_SPACING = (0.8, 0.9, 2.5)
OBLIQUE_SPACING = (0.7, 0.75, 3.0)


@pytest.fixture(scope="module")
def template() -> np.ndarray:
    """Every 3rd voxel of the MNI152 template (66 x 78 x 63), int16 stored values."""
    return mni_template_voxels(step=3)


def axial_geometry(stored: np.ndarray) -> VolumeGeometry:
    return VolumeGeometry(stored.shape[::-1], AXIAL_SPACING, (-98.5, -134.25, -72.0), np.eye(3))


def oblique_geometry(stored: np.ndarray) -> VolumeGeometry:
    direction = rotation(4)  # a random rotation: every index axis is oblique to every patient axis
    return VolumeGeometry(stored.shape[::-1], OBLIQUE_SPACING, (-80.125, -110.5, 40.75), direction)


@pytest.fixture()
def axial_ct(tmp_path: Path, template: np.ndarray) -> WrittenSeries:
    return write_dicom_series(tmp_path / "axial", template, axial_geometry(template), description="axial CT")


def assert_no_patient_identifiers(text: str) -> None:
    """Messages and notes may name series and files, never the patient."""
    for identifier in (*PATIENT_NAME.split("^"), PATIENT_ID, PATIENT_BIRTH_DATE):
        assert identifier not in text, f"patient identifier {identifier!r} leaked into: {text}"


def refusal(error_type: type[VolumeError], path: Path, **options) -> str:
    """The one-line message of the refusal ``read_dicom_series(path)`` must raise."""
    with pytest.raises(error_type) as raised:
        read_dicom_series(path, **options)
    message = str(raised.value)
    assert "\n" not in message
    assert_no_patient_identifiers(message)
    return message


def read_with_plain_simpleitk(folder: Path) -> sitk.Image:
    """SimpleITK on its own: GDCM finds and sorts the series' files itself."""
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


# ============================================================================ round trips
@pytest.mark.parametrize(
    "geometry_of, modality, slope, intercept",
    [
        (axial_geometry, "CT", 1.0, -1024.0),
        (oblique_geometry, "MR", 0.5, 0.0),
    ],
    ids=["axial-CT", "oblique-MR"],
)
def test_series_round_trip_matches_written_voxels_geometry_and_simpleitk(
    tmp_path, template, geometry_of, modality, slope, intercept
):
    geometry = geometry_of(template)
    written = write_dicom_series(
        tmp_path / "series", template, geometry, modality=modality,
        rescale_slope=slope, rescale_intercept=intercept, description=f"{modality} round trip",
    )

    volume = read_dicom_series(written.folder)

    assert volume.source_format == "dicom"
    assert volume.modality == modality
    assert volume.geometry.isclose(geometry)
    assert volume.geometry.is_oblique == (geometry_of is oblique_geometry)
    np.testing.assert_array_equal(volume.array, written.voxels)
    assert any(written.series_uid in note for note in volume.notes)
    assert not any("SimpleITK" in note for note in volume.notes)  # GDCM agreed with the headers
    for note in volume.notes:
        assert_no_patient_identifiers(note)

    plain = read_with_plain_simpleitk(written.folder)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(plain), volume.array)
    # ITK computes the slice step in single precision, hence 1e-3 mm.
    assert geometry_from_sitk(plain).isclose(volume.geometry, atol_mm=1e-3, atol_direction=1e-5)


def test_read_volume_accepts_the_folder_a_parent_folder_or_one_file(tmp_path, template):
    geometry = oblique_geometry(template)
    written = write_dicom_series(tmp_path / "study" / "series", template, geometry, modality="MR", rescale_intercept=0)
    # What a CD export or a copied study folder holds besides the images; all are skipped.
    (tmp_path / "study" / "README.txt").write_text("exported images\n")
    (tmp_path / "study" / "series" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + bytes(100))
    (tmp_path / "study" / "DICOMDIR").write_bytes(bytes(128) + b"DICM" + bytes(40))
    (tmp_path / "study" / "notes").write_text("no suffix, not DICOM\n")

    from_parent = read_volume(tmp_path / "study")
    from_folder = read_volume(written.folder)
    from_file = read_volume(written.slice_files[17])

    for volume in (from_parent, from_folder, from_file):
        assert volume.geometry.isclose(geometry)
        np.testing.assert_array_equal(volume.array, written.voxels)


def test_series_whose_slices_have_different_rescale_slopes_is_read_exactly(tmp_path, template):
    # The first slice decides ITK's pixel type: int16 here, which would cut 2.5 * stored values.
    slopes = [1.0] * 10 + [2.5] * (template.shape[0] - 10)
    written = write_dicom_series(tmp_path / "slopes", template, axial_geometry(template),
                                 rescale_slope=slopes, rescale_intercept=0.0)

    volume = read_dicom_series(written.folder)

    assert volume.array.dtype == np.float32
    np.testing.assert_array_equal(volume.array, written.voxels)
    assert any("rescale" in note for note in volume.notes)


def test_files_without_the_dicm_preamble_are_read(tmp_path, template):
    written = write_dicom_series(tmp_path / "old", template, axial_geometry(template))
    for path in written.slice_files:  # old ACR-NEMA style: no preamble, no file meta, implicit VR
        dataset = pydicom.dcmread(path)
        del dataset.file_meta
        dataset.preamble = None
        dataset.save_as(path, implicit_vr=True, little_endian=True)
    assert written.slice_files[0].read_bytes()[128:132] != b"DICM"

    volume = read_dicom_series(written.folder)

    assert volume.geometry.isclose(written.geometry)
    np.testing.assert_array_equal(volume.array, written.voxels)


def test_compressed_series_is_decoded(tmp_path, template):
    written = write_dicom_series(tmp_path / "rle", template, oblique_geometry(template), modality="MR",
                                 rescale_intercept=0.0)
    for path in written.slice_files:
        dataset = pydicom.dcmread(path)
        dataset.compress(RLELossless)  # pydicom's own encoder; GDCM decodes it when reading
        dataset.save_as(path)

    volume = read_dicom_series(written.folder)

    assert volume.geometry.isclose(written.geometry)
    np.testing.assert_array_equal(volume.array, written.voxels)


def test_copies_of_a_file_are_read_once(tmp_path, axial_ct):
    shutil.copyfile(axial_ct.slice_files[5], axial_ct.folder / "copy of a slice")

    volume = read_dicom_series(axial_ct.folder)

    np.testing.assert_array_equal(volume.array, axial_ct.voxels)
    assert any("copies" in note for note in volume.notes)


def test_enhanced_multiframe_file_with_shuffled_frames_gets_the_header_geometry(tmp_path, template):
    geometry = oblique_geometry(template)
    frame_order = np.random.default_rng(7).permutation(template.shape[0])
    written = write_enhanced_ct(tmp_path / "enhanced" / "volume.dcm", template, geometry, frame_order=frame_order)

    for path in (written.folder, written.slice_files[0]):
        volume = read_volume(path)
        # GDCM cannot order the frames and falls back to 1 mm spacing; the headers define the grid.
        assert volume.geometry.isclose(geometry)
        np.testing.assert_array_equal(volume.array, written.voxels)
        assert any("out of order" in note for note in volume.notes)


# ============================================================================ choosing a series
def test_folder_with_two_series_names_both_and_series_uid_picks_one(tmp_path, template):
    folder = tmp_path / "two"
    ct = write_dicom_series(folder / "a", template, axial_geometry(template), description="abdomen CT", series_number=2)
    mr = write_dicom_series(folder / "b", template[:20], oblique_geometry(template[:20]), modality="MR",
                            description="T1 oblique", series_number=5, rescale_intercept=0, seed=1)

    message = refusal(AmbiguousDicomSeriesError, folder)
    for series, slices in ((ct, template.shape[0]), (mr, 20)):
        assert series.series_uid in message
        assert f"'{series.description}'" in message
        assert f"{slices} slices" in message
        assert series.modality in message
    assert "series_uid=" in message and "--series" in message

    picked = read_dicom_series(folder, series_uid=mr.series_uid)
    np.testing.assert_array_equal(picked.array, mr.voxels)
    assert picked.modality == "MR"
    assert read_volume(folder, series_uid=ct.series_uid).geometry.isclose(ct.geometry)

    unknown = refusal(AmbiguousDicomSeriesError, folder, series_uid="1.2.3.4.5")
    assert "1.2.3.4.5" in unknown and ct.series_uid in unknown and mr.series_uid in unknown

    listed = list_dicom_series(folder)
    assert [info.series_uid for info in listed] == [ct.series_uid, mr.series_uid]  # by series number
    assert listed[1] == DicomSeriesInfo(mr.series_uid, "MR", "T1 oblique", 5, 20, 20, mr.folder)


def test_folder_without_an_image_series_is_refused(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no DICOM image series" in refusal(NoDicomSeriesError, empty)
    assert list_dicom_series(empty) == []

    not_dicom = tmp_path / "not_dicom"
    not_dicom.mkdir()
    (not_dicom / "README").write_text("nothing to see\n")
    (not_dicom / "scan.nii.gz").write_bytes(b"\x1f\x8b" + bytes(300))
    message = refusal(NoDicomSeriesError, not_dicom)
    assert "no DICOM image series" in message and "none of its 2 file(s) is a DICOM file" in message

    # DICOM files without pixel data (a structured report, an RT plan) are not image series.
    reports = tmp_path / "reports"
    reports.mkdir()
    shutil.copy(get_testdata_file("test-SR.dcm"), reports)
    shutil.copy(get_testdata_file("rtplan.dcm"), reports)
    message = refusal(NoDicomSeriesError, reports)
    assert "2 DICOM file(s) were found but none holds an image" in message


# ============================================================================ inconsistent series
def test_missing_slices_are_refused_saying_where(axial_ct):
    step = AXIAL_SPACING[2]
    axial_ct.slice_files[20].unlink()
    for k in (40, 41, 42):
        axial_ct.slice_files[k].unlink()

    message = refusal(InconsistentDicomSeriesError, axial_ct.folder)

    assert "missing" in message
    assert f"the usual step is {step:.3f} mm" in message
    assert axial_ct.slice_files[19].name in message and axial_ct.slice_files[21].name in message
    assert "about 1 slice(s) seem missing after slice 20" in message
    assert "1 more gap(s), about 4 missing slices in all" in message


def test_duplicated_slice_position_is_refused(axial_ct):
    copy_as_new_image(axial_ct.slice_files[30], axial_ct.folder / "second acquisition", AcquisitionNumber=2)

    message = refusal(InconsistentDicomSeriesError, axial_ct.folder)

    assert "share their position" in message
    assert "AcquisitionNumber 1 vs 2" in message
    assert f"{len(axial_ct.slice_files) + 1} images at {len(axial_ct.slice_files)} positions" in message


def test_uneven_spacing_is_refused_but_rounding_is_not(axial_ct):
    geometry = axial_ct.geometry
    normal = geometry.direction[:, 2]
    # 0.005 mm is within the tolerance (max(0.01 mm, 1% of the 2.5 mm step) = 0.025 mm).
    rewrite_slice(axial_ct.slice_files[12],
                  ImagePositionPatient=position_string(geometry.index_to_lps((0, 0, 12)) + 0.005 * normal))
    np.testing.assert_array_equal(read_dicom_series(axial_ct.folder).array, axial_ct.voxels)

    rewrite_slice(axial_ct.slice_files[30],
                  ImagePositionPatient=position_string(geometry.index_to_lps((0, 0, 30)) + 0.4 * normal))
    message = refusal(InconsistentDicomSeriesError, axial_ct.folder)

    assert "uneven" in message
    assert axial_ct.slice_files[30].name in message and "0.400 mm" in message


def test_gantry_tilt_is_refused(axial_ct):
    geometry = axial_ct.geometry
    tilt = np.deg2rad(15.0)
    for k, path in enumerate(axial_ct.slice_files):
        # A tilted gantry shifts each slice along the column direction (posterior) in proportion to k.
        shift = k * AXIAL_SPACING[2] * np.tan(tilt) * geometry.direction[:, 1]
        rewrite_slice(path, ImagePositionPatient=position_string(geometry.index_to_lps((0, 0, k)) + shift))

    message = refusal(InconsistentDicomSeriesError, axial_ct.folder)

    assert "gantry tilt of about 15.0 degrees" in message


def test_mixed_orientation_in_one_series_is_refused(axial_ct):
    # A localizer saved into the series: a coronal image among the axial slices.
    rewrite_slice(axial_ct.slice_files[3], ImageOrientationPatient=["1", "0", "0", "0", "0", "-1"])

    message = refusal(InconsistentDicomSeriesError, axial_ct.folder)

    assert "ImageOrientationPatient" in message and axial_ct.slice_files[3].name in message


def test_mixed_slice_sizes_are_refused(tmp_path, template):
    written = write_dicom_series(tmp_path / "sizes", template, axial_geometry(template))
    small = template[:, :40, :50]
    other = write_dicom_series(tmp_path / "small", small[:1], axial_geometry(small[:1]), series_uid=written.series_uid)
    shutil.move(other.slice_files[0], written.folder / "odd size slice")

    message = refusal(InconsistentDicomSeriesError, written.folder)

    assert "size (columns x rows)" in message and "50 x 40" in message and "odd size slice" in message


def test_missing_image_position_means_geometry_cannot_be_known(axial_ct):
    rewrite_slice(axial_ct.slice_files[8], ImagePositionPatient=None)

    message = refusal(InconsistentDicomSeriesError, axial_ct.folder)

    assert "ImagePositionPatient" in message and "cannot be known" in message
    assert axial_ct.slice_files[8].name in message


def test_single_slice_is_a_2d_image(tmp_path, template):
    single = write_dicom_series(tmp_path / "single", template[:1], axial_geometry(template[:1]))
    assert "single slice" in refusal(NotThreeDimensionalError, single.folder)

    pydicom_ct = tmp_path / "pydicom_ct"
    pydicom_ct.mkdir()
    shutil.copy(get_testdata_file("CT_small.dcm"), pydicom_ct)
    message = refusal(NotThreeDimensionalError, pydicom_ct)
    assert "single slice" in message and "2D" in message
    with pytest.raises(NotThreeDimensionalError):
        read_volume(pydicom_ct / "CT_small.dcm")


# ============================================================================ pixels and limits
def test_truncated_slice_is_unreadable_and_named(axial_ct):
    truncated = axial_ct.slice_files[25]
    truncated.write_bytes(truncated.read_bytes()[:-2000])  # the header survives, pixels do not

    message = refusal(UnreadableVolumeError, axial_ct.folder)

    assert message.startswith(truncated.name)
    assert "truncated" in message


def test_size_limit_is_checked_before_pixels_are_read(axial_ct):
    # The truncated file would fail when pixels are read; the size refusal comes first.
    truncated = axial_ct.slice_files[0]
    truncated.write_bytes(truncated.read_bytes()[:-2000])
    rows, columns, slices = axial_ct.voxels.shape[1], axial_ct.voxels.shape[2], axial_ct.voxels.shape[0]

    message = refusal(VolumeTooLargeError, axial_ct.folder, limits=ReadLimits(max_voxels=10_000))

    assert f"size {(columns, rows, slices)}" in message
    with pytest.raises(VolumeTooLargeError):
        read_volume(axial_ct.folder, limits=ReadLimits(max_dimension=50))
