"""A real MR volume (nilearn's bundled MNI152 T1 template), cross-checked with nibabel.

nibabel is an independent NIfTI reader: if PhotonLib's RAS/LPS handling were wrong anywhere,
its IJK->RAS matrix would disagree with nibabel's affine.
"""

from __future__ import annotations

from pathlib import Path

import nibabel
import nilearn
import numpy as np
import pytest

from photonlib.volume import PreprocessConfig, prepare_volume, read_volume, write_heatmap

MNI152_T1 = Path(nilearn.__file__).parent / "datasets" / "data" / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"


@pytest.fixture(scope="module")
def mni152():
    assert MNI152_T1.exists(), "nilearn ships the MNI152 template; the test extra installs nilearn"
    return read_volume(MNI152_T1)


def test_matches_nibabel(mni152):
    image = nibabel.load(MNI152_T1)
    assert mni152.geometry.size == image.shape
    np.testing.assert_allclose(mni152.geometry.ijk_to_ras, image.affine, atol=1e-4)
    # nibabel arrays are indexed [i, j, k]; PhotonLib's [k, j, i].
    np.testing.assert_allclose(mni152.array, np.asarray(image.dataobj).transpose(2, 1, 0))


def test_mr_preprocessing_and_heatmap_round_trip(tmp_path, mni152):
    prepared = prepare_volume(mni152, PreprocessConfig.preset("tiny"))
    assert prepared.intensity_mode == "percentile"  # MR: no Hounsfield units
    assert prepared.array.shape == (28, 56, 56)

    values = np.random.default_rng(0).random((2, 4, 4)).astype(np.float32)
    heatmap = nibabel.load(write_heatmap(tmp_path / "heat.nii.gz", values, prepared))

    # The heatmap written by PhotonLib has the template's own affine (as nibabel reads it).
    assert heatmap.shape == nibabel.load(MNI152_T1).shape
    np.testing.assert_allclose(heatmap.affine, nibabel.load(MNI152_T1).affine, atol=1e-4)
