"""The volume file formats PhotonLib reads, by file-name suffix: the one list the reader, the
dataset readers (which look for a case's volume by name) and the messages share.

Pure Python: importing it loads neither SimpleITK nor NumPy.
"""

from __future__ import annotations

#: Suffix (lower case) -> format name reported to the user, for the files SimpleITK reads.
IMAGE_FILE_FORMATS: dict[str, str] = {
    ".nii": "nifti",
    ".nii.gz": "nifti",
    ".nrrd": "nrrd",
    ".nhdr": "nrrd",
    ".mha": "metaimage",
    ".mhd": "metaimage",
}
#: Benchmark arrays (M3D, 3D-RAD): no geometry stored.
NPY_SUFFIX = ".npy"
#: Every single-file volume suffix, longest first so ``.nii.gz`` is tried before ``.nii``.
VOLUME_FILE_SUFFIXES: tuple[str, ...] = tuple(
    sorted((*IMAGE_FILE_FORMATS, NPY_SUFFIX), key=lambda suffix: (-len(suffix), suffix))
)
#: What to tell a user whose file is none of these.
ACCEPTED_INPUTS = (
    "NIfTI (.nii, .nii.gz), NRRD (.nrrd, .nhdr), MetaImage (.mha, .mhd), a DICOM series folder, or a .npy array"
)


def volume_file_suffix(name: str) -> str | None:
    """The suffix of ``name`` that :data:`VOLUME_FILE_SUFFIXES` knows (case-insensitive), or None."""
    lowered = name.lower()
    return next((suffix for suffix in VOLUME_FILE_SUFFIXES if lowered.endswith(suffix)), None)
