"""The demo model shipped inside photonlib: installed, the default of `photon ask`, and useful on
phantoms it has never seen (fresh seeds, not its training or its documented test seed).

The bars sit below what this model reaches on these phantoms, with room for a few answers, and
above what the model shipped before it reached on the organ, the tokens kept and the grounding.
The model is deterministic, so are the phantoms.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from photonlib.answers import choice_key
from photonlib.data import load_dataset
from photonlib.data.phantoms import EXISTENCE_TASK, make_phantoms
from photonlib.evaluation.phantom_figures import size_within_tolerance
from photonlib.evaluation.runner import lesion_grounding
from photonlib.inference import PhotonEngine
from photonlib.inference.engine import EMBEDDED_MODEL_DIR
from photonlib.volume import read_volume

PHOTON = Path(sys.executable).with_name("photon")
FRESH_SEED = 4242  # the demo trained on seed 0 and is documented on seeds 6000 and 6001
FRESH_CASES = 80
# Of 80 existence, 40 organ and 40 size questions. Measured: 71, 26 and 23 (the model shipped
# before it: 67, 13 and 22). One size for every lesion ("About 31 mm.") already lands within 5 mm
# of half of these lesions, so the size bar only catches a broken model.
EXISTENCE_BAR, ORGAN_BAR, SIZE_BAR = 64, 20, 18


@pytest.fixture(scope="module")
def engine() -> PhotonEngine:
    return PhotonEngine.load(None, "cpu")


@pytest.fixture(scope="module")
def fresh_phantoms(tmp_path_factory) -> Path:
    return make_phantoms(tmp_path_factory.mktemp("fresh"), FRESH_CASES, FRESH_SEED, profile="conspicuous").jsonl


def test_the_demo_model_is_installed_small_and_the_default(engine):
    assert (EMBEDDED_MODEL_DIR / "config.json").is_file()
    size = sum(path.stat().st_size for path in EMBEDDED_MODEL_DIR.rglob("*") if path.is_file())
    assert size < 10 * 2**20, f"the embedded model is {size / 2**20:.1f} MiB"
    info = engine.info()
    assert info["name"] == "photon-demo"
    assert info["tokens_total"] == 512 and info["pruner"] == "its" and info["pruning_mode"] == "hard"


@pytest.mark.timeout(240)  # 80 volumes and 160 answers: about a minute on 2 idle cores
def test_the_demo_model_sees_lesions_in_fresh_phantoms(engine, fresh_phantoms):
    """On phantoms of an unseen seed: existence and the lesion's organ well above chance, ITS keeps
    few tokens and they hold the lesion. The model shipped before the grounding term and the
    anatomy warm-up (nearly always "Liver", 23 % of the tokens kept, 87.6 % of the lesion covered
    here) fails the organ, token and grounding bars; this one keeps 4.7 % and covers 95.7 %."""
    hits: dict[str, list[bool]] = {"existence": [], "organ": [], "size": []}
    kept_fractions, grounding, cases = [], [], {}
    for sample in load_dataset("phantoms", fresh_phantoms).samples:
        family = sample.extra["family"]
        if family not in hits:
            continue
        if sample.volume not in cases:
            cases[sample.volume] = engine.prepare(read_volume(sample.volume))
        case = cases[sample.volume]
        answer = engine.ask(case, sample.question, max_new_tokens=8)
        if family == "size":
            hits[family].append(size_within_tolerance(answer.answer, sample.extra["lesion"]["diameter_mm"]))
        else:
            hits[family].append(choice_key(answer.answer) == choice_key(sample.answer))
        kept_fractions.append(answer.tokens_kept / answer.tokens_total)
        covered = lesion_grounding(answer, case, sample)
        if covered is not None:
            grounding.append(covered)
    counts = {family: (sum(values), len(values)) for family, values in hits.items()}
    assert counts["existence"][1] == FRESH_CASES and counts["organ"][1] == counts["size"][1] == FRESH_CASES // 2
    figures = f"{counts}, {np.mean(kept_fractions):.1%} of the tokens kept, grounding {np.mean(grounding):.1%}"
    # Guessing reaches 64 of 80 yes/no answers with probability under 1e-7; naming the commonest
    # organ (the liver, 35 % of lesions) about 14 of 40.
    assert counts["existence"][0] >= EXISTENCE_BAR, figures
    assert counts["organ"][0] >= ORGAN_BAR, figures
    assert counts["size"][0] >= SIZE_BAR, figures
    assert np.mean(kept_fractions) < 0.12, figures
    assert np.mean(grounding) > 0.92, figures


def test_photon_ask_answers_a_phantom_with_the_demo_model(fresh_phantoms, tmp_path):
    sample = next(s for s in load_dataset("phantoms", fresh_phantoms).samples if s.task == EXISTENCE_TASK)
    result = subprocess.run(
        [str(PHOTON), "ask", sample.volume, sample.question, "--json", "--heatmap", str(tmp_path / "heat.nrrd")],
        capture_output=True, text=True, timeout=300, env=dict(os.environ),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["model"] == "photon-demo"
    assert answer["answer"] in ("Yes", "No")
    assert 0 < answer["tokens_kept"] < answer["tokens_total"] == 512
    heatmap = read_volume(tmp_path / "heat.nrrd")
    assert heatmap.geometry.isclose(read_volume(sample.volume).geometry, atol_mm=1e-4)


def test_photon_eval_scores_the_demo_model_with_a_relative_dataset_path(fresh_phantoms, tmp_path):
    """The documented command, run from the dataset's parent folder: results, table, predictions,
    and grounding read from the label maps (a relative path once doubled the mask folder)."""
    relative = Path(fresh_phantoms.parent.name) / fresh_phantoms.name
    result = subprocess.run(
        [str(PHOTON), "eval", "--data", f"phantoms:{relative}", "--limit", "12", "--no-bertscore",
         "--out", str(tmp_path / "results.json")],
        capture_output=True, text=True, timeout=300, env=dict(os.environ), cwd=fresh_phantoms.parent.parent,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["num_samples"] == 12 and results["grounding"]["count"] > 0
    assert "Existence Detection" in (tmp_path / "results.md").read_text()
    predictions = [json.loads(line) for line in (tmp_path / "results.predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == 12 and all(0 < p["tokens_kept"] <= p["tokens_total"] == 512 for p in predictions)
    assert any(p["grounding"] is not None and 0 <= p["grounding"] <= 1 for p in predictions)


def test_photon_eval_names_an_unpruned_run_so(fresh_phantoms, tmp_path):
    result = subprocess.run(
        [str(PHOTON), "eval", "--data", f"phantoms:{fresh_phantoms}", "--limit", "2", "--no-bertscore",
         "--pruning-mode", "none", "--out", str(tmp_path / "results.json")],
        capture_output=True, text=True, timeout=300, env=dict(os.environ),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["run"] == "photon-demo (no pruning)"
    predictions = [json.loads(line) for line in (tmp_path / "results.predictions.jsonl").read_text().splitlines()]
    assert all(p["tokens_kept"] == p["tokens_total"] for p in predictions)


def test_a_model_saved_before_volume_fps_and_its_score_precision_keeps_its_behaviour(tmp_path):
    """A config.json written before those fields existed (as earlier demo models were): one
    temporal position per token (not the release's 28) and exact ITS scores."""
    import shutil

    from photonlib.model import PhotonConfig

    folder = tmp_path / "older-model"
    shutil.copytree(EMBEDDED_MODEL_DIR, folder)
    saved = json.loads((folder / "config.json").read_text())
    for field in ("volume_fps", "its_score_precision"):
        saved.pop(field, None)
    (folder / "config.json").write_text(json.dumps(saved))
    config = PhotonConfig.from_pretrained(folder)
    assert config.volume_fps is None and config.temporal_position_scale == 1.0
    assert config.its_score_precision == "float32"  # and ITS compares exactly, also in bf16 on a GPU


def test_the_demo_model_uses_one_temporal_position_per_depth_step():
    from photonlib.model import PhotonConfig

    config = PhotonConfig.from_pretrained(EMBEDDED_MODEL_DIR)
    assert config.volume_fps is None and config.temporal_position_scale == 1.0
