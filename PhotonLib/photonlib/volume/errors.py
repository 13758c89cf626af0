"""Why a volume was refused.

Every refusal is a :class:`VolumeError` (a ``ValueError``) of a specific type whose message
says what was wrong with the input and what would be accepted instead. The CLI prints the
message on one line and exits with code 2; the server will answer 4xx with it.
"""

from __future__ import annotations

from photonlib.errors import PhotonInputError


class VolumeError(PhotonInputError):
    """Base class: the input cannot be used as a 3D volume (a ``ValueError``)."""


class UnsupportedFormatError(VolumeError):
    """The path is not a format PhotonLib reads."""


class UnreadableVolumeError(VolumeError):
    """The file exists but cannot be decoded (corrupt, truncated, wrong content)."""


class NotThreeDimensionalError(VolumeError):
    """The image is 2D (or has a single voxel along an axis after reading a single slice)."""


class MultiComponentVolumeError(VolumeError):
    """The image is 4D or has several components per voxel and no choice was made."""


class EmptyVolumeError(VolumeError):
    """The image has no voxels, or every voxel has the same value."""


class NonFiniteVolumeError(VolumeError):
    """The image contains NaN or infinite voxels."""


class VolumeTooLargeError(VolumeError):
    """The image is larger than the configured limit (checked before pixel data are read)."""


class DicomSeriesError(VolumeError):
    """A DICOM folder could not be turned into one consistent volume."""


class NoDicomSeriesError(DicomSeriesError):
    """The folder holds no readable DICOM image series."""


class AmbiguousDicomSeriesError(DicomSeriesError):
    """The folder holds several series and none was chosen."""


class InconsistentDicomSeriesError(DicomSeriesError):
    """Missing or duplicated slices, uneven spacing, gantry tilt or mixed slice shapes."""
