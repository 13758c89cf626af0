"""``photon ask`` locally: answer, token counts, timings, heatmap in the volume's geometry, picture."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from photonlib.cli.volume_options import EXAMPLE_VOLUME
from photonlib.geometry import VolumeGeometry
from photonlib.volume import read_volume, write_volume

from support.volumes import ct_with_sphere, rotation

PHOTON = Path(sys.executable).with_name("photon")


def test_ask_writes_heatmap_in_the_input_geometry_and_a_picture(tmp_path):
    geometry = VolumeGeometry((60, 50, 30), (1.8, 2.2, 5.0), (-40.0, 25.0, 60.0), rotation(3))
    volume, _ = ct_with_sphere(geometry, geometry.center_lps, 20.0)
    path = write_volume(tmp_path / "oblique.nii.gz", volume.array.astype(np.int16), geometry)

    result = subprocess.run(
        [str(PHOTON), "ask", str(path), "Is there a lesion in the liver?", "--json", "--max-new-tokens", "4",
         "--heatmap", str(tmp_path / "heat.nrrd"), "--png", str(tmp_path / "picture.png")],
        capture_output=True, text=True, timeout=300, env=dict(os.environ),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert {"answer", "tokens_total", "tokens_kept", "timings"} <= set(answer)
    assert 0 < answer["tokens_kept"] <= answer["tokens_total"]
    assert {"preprocess", "vision", "prefill", "decode", "total"} <= set(answer["timings"])
    heatmap = read_volume(tmp_path / "heat.nrrd")
    assert heatmap.geometry.isclose(geometry, atol_mm=1e-4)
    assert 0.0 <= heatmap.array.min() and heatmap.array.max() <= 1.0
    picture = sitk.ReadImage(str(tmp_path / "picture.png"))
    assert picture.GetNumberOfComponentsPerPixel() == 3 and picture.GetSize()[0] >= 600


def test_ask_without_volume_answers_about_the_bundled_example_and_says_where_it_wrote(tmp_path):
    """The README's quick start: the answer, the tokens kept of the total and the two files written."""
    result = subprocess.run(
        [str(PHOTON), "ask", "Is there a lesion in the liver?", "--max-new-tokens", "4",
         "--heatmap", "heatmap.nrrd", "--png", "heatmap.png"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, env=dict(os.environ),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 4, result.stdout
    assert lines[0].strip(), "the first line is the answer"
    kept = re.fullmatch(r"\[(\d+) of (\d+) visual tokens kept; .*\]", lines[1])
    assert kept and 0 < int(kept.group(1)) <= int(kept.group(2)), lines[1]
    assert lines[2].endswith(f": {tmp_path.resolve() / 'heatmap.nrrd'}") and lines[2].startswith("heatmap")
    assert lines[3].endswith(f": {tmp_path.resolve() / 'heatmap.png'}") and lines[3].startswith("picture")
    example = read_volume(EXAMPLE_VOLUME)
    assert read_volume(tmp_path / "heatmap.nrrd").geometry.isclose(example.geometry, atol_mm=1e-4)
    assert (tmp_path / "heatmap.png").stat().st_size > 0


def test_ask_refuses_bad_input_with_one_line(tmp_path):
    result = subprocess.run(
        [str(PHOTON), "ask", str(tmp_path / "missing.nrrd"), "Why?"], capture_output=True, text=True, timeout=120, env=dict(os.environ)
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == f"photon ask: error: {tmp_path / 'missing.nrrd'}: no such file or folder"


def test_tokens_kept_counts_what_the_language_model_used():
    """ITS scores in every mode but drops only in hard mode: without dropping, every token was used."""
    from photonlib.inference import PhotonEngine

    from support.models import random_tiny_model

    geometry = VolumeGeometry((40, 40, 20), (3.0, 3.0, 6.0), (0.0, 0.0, 0.0), np.eye(3))
    volume, _ = ct_with_sphere(geometry, geometry.center_lps, 15.0)
    counts = {}
    for mode in ("hard", "soft", "none"):
        model, processor = random_tiny_model()
        model.config.pruning_mode = mode
        engine = PhotonEngine(model, processor, "tiny", "cpu")
        answer = engine.ask(engine.prepare(volume), "Is there a lesion?", max_new_tokens=2)
        counts[mode] = (answer.tokens_kept, answer.tokens_total, answer.keep_probability.max() <= 1)
    assert counts["hard"][0] < counts["hard"][1]
    assert counts["soft"][0] == counts["soft"][1] and counts["none"][0] == counts["none"][1]
