"""Volume I/O with exact geometry: read, preprocess to the model grid, map results back.

Typical use::

    from photonlib.volume import read_volume, prepare_volume, write_heatmap

    volume = read_volume("ct.nii.gz")            # any supported format, exact geometry
    prepared = prepare_volume(volume)            # (140, 280, 280) float32 in [0, 1]
    write_heatmap("heat.nrrd", token_values, prepared)   # back onto the CT's own grid
"""

from photonlib.geometry import VolumeGeometry
from photonlib.volume.dicom import DicomSeriesInfo, list_dicom_series
from photonlib.volume.errors import (
    AmbiguousDicomSeriesError,
    DicomSeriesError,
    EmptyVolumeError,
    InconsistentDicomSeriesError,
    MultiComponentVolumeError,
    NoDicomSeriesError,
    NonFiniteVolumeError,
    NotThreeDimensionalError,
    UnreadableVolumeError,
    UnsupportedFormatError,
    VolumeError,
    VolumeTooLargeError,
)
from photonlib.volume.heatmap import block_grid_geometry, map_to_source, write_heatmap
from photonlib.volume.image import ReadLimits, Volume
from photonlib.volume.preprocess import PreparedVolume, PreprocessConfig, prepare_label_map, prepare_volume
from photonlib.volume.reader import read_volume
from photonlib.volume.writer import write_volume

__all__ = [
    "AmbiguousDicomSeriesError",
    "DicomSeriesError",
    "DicomSeriesInfo",
    "EmptyVolumeError",
    "InconsistentDicomSeriesError",
    "MultiComponentVolumeError",
    "NoDicomSeriesError",
    "NonFiniteVolumeError",
    "NotThreeDimensionalError",
    "PreparedVolume",
    "PreprocessConfig",
    "ReadLimits",
    "UnreadableVolumeError",
    "UnsupportedFormatError",
    "Volume",
    "VolumeError",
    "VolumeGeometry",
    "VolumeTooLargeError",
    "block_grid_geometry",
    "list_dicom_series",
    "map_to_source",
    "prepare_label_map",
    "prepare_volume",
    "read_volume",
    "write_heatmap",
    "write_volume",
]
