"""Write real DICOM files with pydicom, for the DICOM reader's tests.

The voxels come from nilearn's MNI152 template (bundled with nilearn, nothing is downloaded),
so the reader is tested on anatomy rather than on noise. Every series gets the tags a scanner
writes for a CT or MR slice stack: UIDs, Image Plane module (position, orientation, pixel
spacing, thickness), rescale, 16-bit signed pixels and a valid file meta header (Explicit VR
Little Endian). Files are written in shuffled order under random names, so a reader that
trusts file names or directory order reads the slices in the wrong order.
"""

from __future__ import annotations

import functools
import random
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid
from pydicom.valuerep import format_number_as_ds

from photonlib.geometry import VolumeGeometry

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
ENHANCED_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2.1"
SOP_CLASS_BY_MODALITY = {"CT": CT_IMAGE_STORAGE, "MR": MR_IMAGE_STORAGE}

# Identifiers written into every file; the tests check that no message or note repeats them.
PATIENT_NAME = "Doe^Jane^Quintessa"
PATIENT_ID = "PHOTON-TEST-4711"
PATIENT_BIRTH_DATE = "19610203"


@dataclass(frozen=True)
class WrittenSeries:
    """What was written, i.e. what a correct reader must give back."""

    folder: Path
    slice_files: tuple[Path, ...]  # slice_files[k] holds slice k of the geometry
    geometry: VolumeGeometry
    voxels: np.ndarray  # KJI, stored values after rescale (slope * stored + intercept)
    series_uid: str
    description: str
    modality: str


@functools.lru_cache(maxsize=4)
def _template_stored_values(step: int) -> np.ndarray:
    from nilearn.datasets import load_mni152_template

    template = load_mni152_template()
    intensities = np.asarray(template.get_fdata(), dtype=np.float32)[::step, ::step, ::step]  # (i, j, k), in [0, 1]
    stored = np.round(intensities * 2000).astype(np.int16)
    stored.setflags(write=False)
    return np.ascontiguousarray(stored.transpose(2, 1, 0))  # KJI


def mni_template_voxels(step: int = 3) -> np.ndarray:
    """Every ``step``-th voxel of the MNI152 template as int16 stored values 0..2000, in KJI order."""
    return _template_stored_values(step).copy()


def _ds(values: Sequence[float]) -> list[str]:
    """Decimal strings as a scanner writes them: at most 16 characters each."""
    return [format_number_as_ds(float(v)) for v in values]


def _file_meta(sop_class_uid: str, sop_instance_uid: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class_uid
    meta.MediaStorageSOPInstanceUID = sop_instance_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    return meta


def _common_attributes(dataset: Dataset, *, modality: str, study_uid: str, series_uid: str,
                       frame_of_reference_uid: str, description: str, series_number: int) -> None:
    dataset.PatientName = PATIENT_NAME
    dataset.PatientID = PATIENT_ID
    dataset.PatientBirthDate = PATIENT_BIRTH_DATE
    dataset.StudyDate = "20240517"
    dataset.StudyInstanceUID = study_uid
    dataset.SeriesInstanceUID = series_uid
    dataset.FrameOfReferenceUID = frame_of_reference_uid
    dataset.Modality = modality
    dataset.SeriesDescription = description
    dataset.SeriesNumber = series_number
    dataset.SamplesPerPixel = 1
    dataset.PhotometricInterpretation = "MONOCHROME2"
    dataset.BitsAllocated = 16
    dataset.BitsStored = 16
    dataset.HighBit = 15
    dataset.PixelRepresentation = 1  # signed


def _shuffled_file_names(count: int, rng: random.Random) -> list[str]:
    # Random hex names, some without a suffix as many scanners write them, never in slice order.
    return [f"{rng.getrandbits(48):012x}" + (".dcm" if rng.random() < 0.5 else "") for _ in range(count)]


def write_dicom_series(
    folder: Path,
    stored_kji: np.ndarray,
    geometry: VolumeGeometry,
    *,
    modality: str = "CT",
    description: str = "test series",
    rescale_slope: float | Sequence[float] = 1.0,
    rescale_intercept: float = -1024.0,
    series_uid: str | None = None,
    study_uid: str | None = None,
    series_number: int = 1,
    seed: int = 0,
) -> WrittenSeries:
    """Write one single-frame DICOM file per slice of ``stored_kji`` (int16) at ``geometry``.

    ``rescale_slope`` may be a sequence with one slope per slice (some scanners scale each
    slice on its own). The k axis of ``geometry`` must be the slice normal, row cosine x column
    cosine, as DICOM defines it.
    """
    stored_kji = np.asarray(stored_kji)
    if stored_kji.dtype != np.int16 or tuple(stored_kji.shape) != geometry.array_shape:
        raise ValueError(
            f"need int16 voxels of shape {geometry.array_shape}, got {stored_kji.dtype} {stored_kji.shape}"
        )
    direction = geometry.direction
    if not np.allclose(np.cross(direction[:, 0], direction[:, 1]), direction[:, 2], atol=1e-9):
        raise ValueError("the slice axis k must be row cosine x column cosine (a right-handed direction)")
    folder.mkdir(parents=True, exist_ok=True)
    slice_count = stored_kji.shape[0]
    slopes = np.broadcast_to(np.asarray(rescale_slope, dtype=float), (slice_count,))
    series_uid = series_uid or generate_uid()
    study_uid = study_uid or generate_uid()
    frame_of_reference_uid = generate_uid()
    sop_class_uid = SOP_CLASS_BY_MODALITY[modality]
    rng = random.Random(seed)
    names = _shuffled_file_names(slice_count, rng)
    spacing_i, spacing_j, spacing_k = geometry.spacing

    slice_files = []
    datasets = []
    for k in range(slice_count):
        sop_instance_uid = generate_uid()
        dataset = Dataset()
        dataset.file_meta = _file_meta(sop_class_uid, sop_instance_uid)
        _common_attributes(dataset, modality=modality, study_uid=study_uid, series_uid=series_uid,
                           frame_of_reference_uid=frame_of_reference_uid, description=description,
                           series_number=series_number)
        dataset.SOPClassUID = sop_class_uid
        dataset.SOPInstanceUID = sop_instance_uid
        dataset.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        dataset.InstanceNumber = k + 1
        dataset.AcquisitionNumber = 1
        position = geometry.index_to_lps((0, 0, k))
        dataset.ImagePositionPatient = _ds(position)
        dataset.ImageOrientationPatient = _ds(list(direction[:, 0]) + list(direction[:, 1]))
        dataset.PixelSpacing = _ds([spacing_j, spacing_i])  # (between rows, between columns)
        dataset.SliceThickness = format_number_as_ds(spacing_k)
        dataset.SliceLocation = format_number_as_ds(float(position @ direction[:, 2]))
        dataset.Rows, dataset.Columns = stored_kji.shape[1], stored_kji.shape[2]
        dataset.RescaleSlope = format_number_as_ds(float(slopes[k]))
        dataset.RescaleIntercept = format_number_as_ds(float(rescale_intercept))
        if modality == "CT":
            dataset.RescaleType = "HU"
        dataset.PixelData = np.ascontiguousarray(stored_kji[k]).astype("<i2").tobytes()
        slice_files.append(folder / names[k])
        datasets.append(dataset)

    # Written in random order, so directory order is not slice order either.
    for k in rng.sample(range(slice_count), slice_count):
        datasets[k].save_as(slice_files[k], enforce_file_format=True)
    voxels = stored_kji.astype(np.float64) * slopes[:, None, None] + rescale_intercept
    return WrittenSeries(
        folder=folder,
        slice_files=tuple(slice_files),
        geometry=geometry,
        voxels=voxels,
        series_uid=series_uid,
        description=description,
        modality=modality,
    )


def write_enhanced_ct(
    path: Path,
    stored_kji: np.ndarray,
    geometry: VolumeGeometry,
    *,
    rescale_intercept: float = -1024.0,
    frame_order: Sequence[int] | None = None,
) -> WrittenSeries:
    """Write one Enhanced CT file holding every slice as a frame, frames in ``frame_order``.

    Geometry lives in the functional groups: orientation, pixel spacing and rescale are shared,
    the position is given per frame.
    """
    slice_count = stored_kji.shape[0]
    frame_order = list(range(slice_count)) if frame_order is None else list(frame_order)
    direction = geometry.direction
    sop_instance_uid = generate_uid()
    series_uid = generate_uid()
    dataset = Dataset()
    dataset.file_meta = _file_meta(ENHANCED_CT_IMAGE_STORAGE, sop_instance_uid)
    _common_attributes(dataset, modality="CT", study_uid=generate_uid(), series_uid=series_uid,
                       frame_of_reference_uid=generate_uid(), description="enhanced CT", series_number=7)
    dataset.SOPClassUID = ENHANCED_CT_IMAGE_STORAGE
    dataset.SOPInstanceUID = sop_instance_uid
    dataset.ImageType = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
    dataset.InstanceNumber = 1
    dataset.NumberOfFrames = len(frame_order)
    dataset.Rows, dataset.Columns = stored_kji.shape[1], stored_kji.shape[2]

    pixel_measures = Dataset()
    pixel_measures.PixelSpacing = _ds([geometry.spacing[1], geometry.spacing[0]])
    pixel_measures.SliceThickness = format_number_as_ds(geometry.spacing[2])
    plane_orientation = Dataset()
    plane_orientation.ImageOrientationPatient = _ds(list(direction[:, 0]) + list(direction[:, 1]))
    value_transformation = Dataset()
    value_transformation.RescaleSlope = "1"
    value_transformation.RescaleIntercept = format_number_as_ds(float(rescale_intercept))
    value_transformation.RescaleType = "HU"
    shared = Dataset()
    shared.PixelMeasuresSequence = DicomSequence([pixel_measures])
    shared.PlaneOrientationSequence = DicomSequence([plane_orientation])
    shared.PixelValueTransformationSequence = DicomSequence([value_transformation])
    dataset.SharedFunctionalGroupsSequence = DicomSequence([shared])

    per_frame = []
    for k in frame_order:
        plane_position = Dataset()
        plane_position.ImagePositionPatient = _ds(geometry.index_to_lps((0, 0, k)))
        frame_content = Dataset()
        frame_content.InStackPositionNumber = int(k) + 1
        frame_group = Dataset()
        frame_group.PlanePositionSequence = DicomSequence([plane_position])
        frame_group.FrameContentSequence = DicomSequence([frame_content])
        per_frame.append(frame_group)
    dataset.PerFrameFunctionalGroupsSequence = DicomSequence(per_frame)
    dataset.PixelData = np.ascontiguousarray(stored_kji[frame_order]).astype("<i2").tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    dataset.save_as(path, enforce_file_format=True)
    return WrittenSeries(
        folder=path.parent,
        slice_files=(path,) * slice_count,
        geometry=geometry,
        voxels=stored_kji.astype(np.float64) + rescale_intercept,
        series_uid=series_uid,
        description="enhanced CT",
        modality="CT",
    )


def rewrite_slice(path: Path, **attributes: Any) -> None:
    """Change DICOM attributes (by keyword) of one written file in place; ``None`` deletes one."""
    dataset = pydicom.dcmread(path)
    for keyword, value in attributes.items():
        if value is None:
            delattr(dataset, keyword)
        else:
            setattr(dataset, keyword, value)
    dataset.save_as(path, enforce_file_format=True)


def copy_as_new_image(source: Path, destination: Path, **attributes: Any) -> None:
    """Copy a slice as another image of the same series (new SOP Instance UID), e.g. a second acquisition."""
    shutil.copyfile(source, destination)
    new_uid = generate_uid()
    dataset = pydicom.dcmread(destination)
    dataset.SOPInstanceUID = new_uid
    dataset.file_meta.MediaStorageSOPInstanceUID = new_uid
    dataset.save_as(destination, enforce_file_format=True)
    if attributes:
        rewrite_slice(destination, **attributes)


def position_string(position: Sequence[float]) -> list[str]:
    """An ImagePositionPatient value as a scanner writes it."""
    return _ds(position)
