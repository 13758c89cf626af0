"""``photon info``: the installed console script, run as a user would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from photonlib.cli.main import main
from photonlib.geometry import VolumeGeometry
from photonlib.volume import write_volume

from support.volumes import gradient_volume, rotation

PHOTON = Path(sys.executable).with_name("photon")


def run_photon(*args: str) -> subprocess.CompletedProcess:
    """The real console script in a subprocess (exit code, stdout and stderr as a user sees them)."""
    return subprocess.run([str(PHOTON), *args], capture_output=True, text=True, timeout=120, env=dict(os.environ))


def test_console_script_is_installed():
    assert PHOTON.exists(), "the photon console script must be installed with the package"
    result = run_photon("--version")
    assert result.returncode == 0 and result.stdout.startswith("photonlib ")


def test_info_on_the_bundled_example_without_arguments():
    result = run_photon("info")
    assert result.returncode == 0, result.stderr
    assert "phantom_ct.nrrd" in result.stdout
    assert "size (i,j,k): (96, 96, 48)" in result.stdout
    assert "orientation:  LPS" in result.stdout
    assert "intensities:  [-1000, 700]" in result.stdout


def test_info_json_describes_an_oblique_volume(tmp_path, capsys):
    geometry = VolumeGeometry((20, 22, 9), (0.8, 0.9, 3.0), (10.0, -20.0, 30.0), rotation(5))
    path = write_volume(tmp_path / "oblique.nrrd", gradient_volume(geometry), geometry)

    assert main(["info", str(path), "--json"]) == 0

    summary = json.loads(capsys.readouterr().out)
    assert summary["size"] == [20, 22, 9]
    assert summary["oblique"] is True
    assert summary["orientation"] == geometry.orientation_code
    np.testing.assert_allclose(summary["spacing_mm"], geometry.spacing)
    np.testing.assert_allclose(summary["origin_lps_mm"], geometry.origin_lps, atol=1e-6)
    np.testing.assert_allclose(summary["direction_lps"], geometry.direction, atol=1e-6)
    np.testing.assert_allclose(summary["ijk_to_ras"], geometry.ijk_to_ras, atol=1e-5)
    low, high = summary["intensity_range"]
    assert (low, high) == (float(gradient_volume(geometry).min()), float(gradient_volume(geometry).max()))


def test_info_with_preprocessing(capsys, example_volume_path):
    assert main(["info", str(example_volume_path), "--json", "--preprocess", "tiny"]) == 0
    model = json.loads(capsys.readouterr().out)["model_input"]
    assert model["shape_dhw"] == [28, 56, 56]
    assert model["intensity_mode"] == "ct"
    assert model["geometry"]["orientation"] == "LAI"  # RAI with W flipped


@pytest.mark.parametrize(
    "make_input, expected",
    [
        (lambda d: d / "absent.nii.gz", "no such file"),
        (lambda d: _write(d / "notes.txt", b"hello"), "not a volume format"),
        (lambda d: _write(d / "broken.nii.gz", b"\x1f\x8b garbage"), "broken.nii.gz"),
        (lambda d: _npy(d / "flat.npy", np.ones((8, 8))), "(D, H, W)"),
        (lambda d: _npy(d / "nan.npy", np.full((4, 4, 4), np.nan)), "NaN"),
        (lambda d: d, "no DICOM image series"),  # an empty folder
    ],
    ids=["missing", "unknown-format", "corrupt", "2d", "nan", "empty-folder"],
)
def test_bad_input_exits_2_with_one_line(tmp_path, make_input, expected):
    path = make_input(tmp_path)
    result = run_photon("info", str(path))
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("photon info: error: ")
    assert expected in lines[0]


def test_size_limit_option(tmp_path, capsys, example_volume_path):
    assert main(["info", str(example_volume_path), "--max-voxels", "1000"]) == 2
    assert "limit is 1,000" in capsys.readouterr().err


def test_bad_option_value_exits_2():
    result = run_photon("info", "--component", "two")
    assert result.returncode == 2
    assert "invalid int value" in result.stderr


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _npy(path: Path, array: np.ndarray) -> Path:
    np.save(path, array)
    return path
