"""The phantom generator: determinism, label maps that match the volumes and the recorded
lesions, balanced and consistent questions, and ``photon phantoms make`` as a user runs it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from photonlib.cli.main import main
from photonlib.data import load_dataset
from photonlib.data.phantoms import (
    LABELS,
    LESION_LABEL,
    LESION_ORGANS,
    LESION_PROFILES,
    MAX_DIAMETER_MM,
    make_case,
    make_phantoms,
    plan_cases,
)
from photonlib.volume import read_volume

PHOTON = Path(sys.executable).with_name("photon")


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("phantoms") / "set"
    make_phantoms(folder, 20, seed=5, size="tiny")
    return folder


def files_of(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def half_up(value: float) -> int:
    return int(np.floor(value + 0.5))


def records_of(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "phantoms.jsonl").read_text().splitlines()]


# ----------------------------------------------------------------------------- determinism
def test_same_seed_same_bytes_other_seed_other_data(tiny_set, tmp_path):
    make_phantoms(tmp_path / "again", 20, seed=5, size="tiny")
    make_phantoms(tmp_path / "other", 20, seed=6, size="tiny")
    first, again, other = files_of(tiny_set), files_of(tmp_path / "again"), files_of(tmp_path / "other")

    assert len(first) == 2 * 20 + 2
    assert first == again  # volumes, masks, JSONL and manifest, byte for byte
    assert sorted(other) == sorted(first)
    assert first["phantoms.jsonl"] != other["phantoms.jsonl"]
    different = [name for name in first if name.startswith("volumes/") and first[name] != other[name]]
    assert len(different) == 20


def test_make_case_is_a_pure_function_of_seed_index_and_organ():
    one, same = make_case(9, 3, "tiny", "liver"), make_case(9, 3, "tiny", "liver")
    assert np.array_equal(one.hu, same.hu) and np.array_equal(one.labels, same.labels)
    assert one.facts == same.facts
    assert not np.array_equal(one.hu, make_case(9, 4, "tiny", "liver").hu)


# ----------------------------------------------------------------------------- volumes and masks
def test_masks_match_volumes_and_recorded_lesions(tiny_set):
    manifest = json.loads((tiny_set / "manifest.json").read_text())
    assert manifest["labels"] == LABELS
    lesions = 0
    for case in manifest["cases"]:
        volume = read_volume(tiny_set / case["volume"])
        mask = read_volume(tiny_set / case["mask"])
        assert volume.array.dtype == np.int16 and mask.array.dtype == np.uint8
        assert mask.geometry.isclose(volume.geometry, atol_mm=1e-6)
        recorded = case["geometry"]
        assert list(volume.geometry.size) == recorded["size"]
        np.testing.assert_allclose(volume.geometry.spacing, recorded["spacing"], atol=1e-4)
        np.testing.assert_allclose(volume.geometry.origin_lps, recorded["origin_lps"], atol=1e-3)
        np.testing.assert_allclose(volume.geometry.direction, recorded["direction_lps"], atol=1e-5)
        assert volume.geometry.spacing[2] > volume.geometry.spacing[0]  # anisotropic: thicker slices
        labels, hu = mask.array, volume.array.astype(float)
        for name, facts in case["organs"].items():
            if (labels == facts["label"]).sum() > 20:
                # Each organ holds its recorded HU, give or take the noise.
                assert abs(hu[labels == facts["label"]].mean() - facts["hu"]) < 4 * case["noise_sigma_hu"], name
        lesion = case["lesion"]
        if lesion is None:
            assert LESION_LABEL not in labels
            continue
        lesions += 1
        inside = labels == LESION_LABEL
        organ_label = LABELS[lesion["organ"]]
        assert inside.sum() == lesion["voxels"] > 0
        # Contrast: lesion voxels minus organ voxels, as recorded (noise averages out).
        sigma = case["noise_sigma_hu"]
        organ_voxels = labels == organ_label
        tolerance = 4 * sigma * (1 / np.sqrt(inside.sum()) + 1 / np.sqrt(organ_voxels.sum())) + 1
        measured = hu[inside].mean() - hu[organ_voxels].mean()
        assert abs(measured - lesion["contrast_hu"]) < tolerance
        assert lesion["contrast_hu"] == lesion["lesion_hu"] - lesion["organ_hu"]
        assert lesion["density"] == ("hypodense" if lesion["contrast_hu"] < 0 else "hyperdense")
        # Centre: the mask's centroid, mapped through the geometry, is the recorded LPS centre.
        centroid_ijk = np.argwhere(inside)[:, ::-1].mean(axis=0)
        distance = np.linalg.norm(volume.geometry.index_to_lps(centroid_ijk) - np.array(lesion["centre_lps_mm"]))
        assert distance < np.linalg.norm(volume.geometry.spacing)
        # Wholly inside its organ: every face neighbour of a lesion voxel is lesion or organ.
        k, j, i = np.nonzero(inside)
        for dk, dj, di in ((1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1)):
            assert set(np.unique(labels[k + dk, j + dj, i + di])) <= {LESION_LABEL, organ_label}
    assert lesions == 10


def test_small_cases_are_plausible_and_fast():
    started = time.perf_counter()
    cases = [make_case(21, index, "small", LESION_ORGANS[index % len(LESION_ORGANS)]) for index in range(12)]
    seconds_per_case = (time.perf_counter() - started) / len(cases)
    assert seconds_per_case < 0.5  # about 0.04 s here; the writes add about as much
    orientations, oblique = set(), 0
    for case in cases:
        geometry = case.geometry
        assert geometry.size == (96, 96, 48)
        assert 3.2 <= geometry.spacing[0] == geometry.spacing[1] <= 3.7 and 4.5 <= geometry.spacing[2] <= 6.0
        field_of_view = np.array(geometry.size) * np.array(geometry.spacing)
        assert np.all(field_of_view < 364)  # inside the model's 364 mm crop
        orientations.add(geometry.orientation_code)
        oblique += geometry.is_oblique
        lesion = case.lesion
        assert MAX_DIAMETER_MM[lesion["organ"]] + 0.1 >= lesion["diameter_mm"] >= 15.0
        if lesion["organ"].endswith("lung"):
            assert lesion["contrast_hu"] > 700  # a solid nodule in aerated lung
        else:
            assert 30 <= abs(lesion["contrast_hu"]) <= 80
        assert case.hu.min() >= -1024 and case.hu.max() > 150
        assert set(np.unique(case.labels)) <= set(LABELS.values()) | {0}
        for organ in ("right lung", "left lung", "liver", "spleen", "aorta", "spine"):
            assert (case.labels == LABELS[organ]).any(), organ
    assert orientations >= {"LPS", "RAS"} and oblique >= 1


def test_conspicuous_profile_changes_only_the_lesion_and_is_recorded(tmp_path):
    profile = LESION_PROFILES["conspicuous"]
    for index in range(8):
        organ = LESION_ORGANS[index % len(LESION_ORGANS)]
        realistic, conspicuous = (
            make_case(21, index, "small", organ),
            make_case(21, index, "small", organ, profile="conspicuous"),
        )
        # Same seed and index: the same anatomy; only the lesion differs.
        assert conspicuous.facts["organs"] == realistic.facts["organs"]
        assert conspicuous.facts["geometry"] == realistic.facts["geometry"]
        lesion = conspicuous.lesion
        # Too small an organ for a 30 mm lesion falls back to the liver, as the realistic profile does.
        assert lesion["organ"] in (organ, "liver")
        assert profile.diameter_mm[0] - 0.1 <= lesion["diameter_mm"] <= profile.max_diameter_mm(lesion["organ"]) + 0.1
        assert lesion["diameter_mm"] > realistic.lesion["diameter_mm"] or realistic.lesion["diameter_mm"] >= 30
        if not lesion["organ"].endswith("lung"):
            assert 150 <= abs(lesion["contrast_hu"]) <= 300
            inside = conspicuous.labels == LESION_LABEL
            measured = conspicuous.hu[inside].mean() - lesion["organ_hu"]
            assert abs(measured - lesion["contrast_hu"]) < 4 * conspicuous.facts["noise_sigma_hu"]

    assert main(["phantoms", "make", str(tmp_path / "set"), "--n", "2", "--seed", "1", "--size", "tiny",
                 "--lesion-profile", "conspicuous"]) == 0  # fmt: skip
    manifest = json.loads((tmp_path / "set" / "manifest.json").read_text())
    assert manifest["parameters"]["lesion_profile"] == {
        "name": "conspicuous",
        "diameter_mm": [30.0, 60.0],
        "contrast_hu": [150, 300],
    }


# ----------------------------------------------------------------------------- questions
def test_questions_balanced_and_consistent_with_the_cases(tiny_set):
    records = records_of(tiny_set)
    manifest = json.loads((tiny_set / "manifest.json").read_text())
    cases = {case["case"]: case for case in manifest["cases"]}
    existence = [r for r in records if r["task"] == "Existence Detection"]
    answers = Counter(r["answer"] for r in existence)
    assert answers == {"Yes": 10, "No": 10} == manifest["counts"]["existence_answers"]
    assert manifest["counts"]["questions"] == len(records)

    for record in records:
        case = cases[record["extra"]["case"]]
        lesion = case["lesion"]
        assert record["volume"] == case["volume"] and record["extra"]["mask_path"] == case["mask"]
        assert record["extra"]["lesion"] == lesion
        assert record["extra"]["lesion_label"] == (LESION_LABEL if lesion else None)
        family = record["extra"]["family"]
        if family == "existence":
            asked = record["extra"]["asked_organ"]
            assert record["question"] == f"Is there a lesion in the {asked}?"
            assert record["choices"] == {"A": "Yes", "B": "No"}
            is_there = lesion is not None and lesion["organ"] == asked
            assert (record["answer"], record["answer_choice"]) == (("Yes", "A") if is_there else ("No", "B"))
        elif family == "organ":
            assert len(record["choices"]) == 4 and len(set(record["choices"].values())) == 4
            assert record["choices"][record["answer_choice"]] == record["answer"] == lesion["organ"].capitalize()
        elif family == "size":
            assert record["answer"] == f"About {half_up(lesion['diameter_mm'])} mm."
        elif family == "description":
            description = f"A {half_up(lesion['diameter_mm'])} mm {lesion['density']} lesion in the {lesion['organ']}."
            assert record["answer"] == description
        else:
            assert family == "anomaly" and record["task"] == "Anomaly Detection"
            assert record["answer"] == (f"A lesion in the {lesion['organ']}." if lesion else "No abnormality.")
    per_case = Counter(record["extra"]["case"] for record in records)
    for case_id, case in cases.items():
        assert per_case[case_id] == case["questions"] == (5 if case["lesion"] else 2)


@pytest.mark.parametrize(
    ("n", "probability", "lesions", "yes", "no"), [(10, 0.2, 2, 2, 2), (9, 1.0, 9, 4, 5), (7, 0.0, 0, 0, 0)]
)
def test_existence_stays_balanced_for_any_lesion_probability(n, probability, lesions, yes, no):
    plans = plan_cases(n, seed=3, lesion_probability=probability)
    assert sum(plan.lesion_organ is not None for plan in plans) == lesions
    asked = Counter(plan.existence for plan in plans)
    assert (asked["own"], asked["other"]) == (yes, no)
    assert all(plan.existence != "own" or plan.lesion_organ for plan in plans)


# ----------------------------------------------------------------------------- command line and readers
def run_photon(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(PHOTON), *args], capture_output=True, text=True, timeout=120, env=dict(os.environ))


def test_photon_phantoms_make_and_read_back(tmp_path):
    out = tmp_path / "demo"
    result = run_photon("phantoms", "make", str(out), "--n", "4", "--seed", "11", "--size", "tiny")
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(
        rf"wrote 4 phantom cases \(2 with a lesion\) and \d+ questions to {out}/phantoms.jsonl in [\d.]+ s\n",
        result.stdout,
    )

    report = load_dataset("phantoms", out)
    assert report.problems == [] and len(report.samples) == report.rows_read > 0
    assert report.source == "phantoms"
    grounded = [sample for sample in report.samples if sample.extra["has_lesion"]]
    for sample in grounded:
        mask = read_volume(sample.extra["mask_path"])
        volume = read_volume(sample.volume)
        assert mask.geometry.isclose(volume.geometry)
        assert (mask.array == sample.extra["lesion_label"]).sum() == sample.extra["lesion"]["voxels"]
    assert {s.task for s in report.samples} == {
        "Existence Detection",
        "Lesion Localization",
        "Medical Computation",
        "Image Observation",
        "Anomaly Detection",
    }
    assert load_dataset("phantoms", out / "phantoms.jsonl").summary() == report.summary()

    refused = run_photon("phantoms", "make", str(out), "--n", "4", "--seed", "11")
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1
    assert "folder is not empty" in refused.stderr and "--overwrite" in refused.stderr
    replaced = run_photon(
        "phantoms", "make", str(out), "--n", "2", "--seed", "1", "--size", "tiny", "--overwrite", "--json"
    )
    assert replaced.returncode == 0, replaced.stderr
    assert json.loads(replaced.stdout)["cases"] == 2
    assert sorted(path.name for path in (out / "volumes").iterdir()) == ["case_0000.nii.gz", "case_0001.nii.gz"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--n", "0", "--seed", "1"], "the number of cases must be a positive integer, got 0"),
        (["--n", "2", "--seed", "-3"], "the seed must be a non-negative integer, got -3"),
        (["--n", "2", "--seed", "1", "--lesion-probability", "1.5"], "the lesion probability must be between 0 and 1"),
        (["--n", "2", "--seed", "1", "--size", "huge"], "unknown phantom size 'huge'; known: small, tiny"),
        (
            ["--n", "2", "--seed", "1", "--lesion-profile", "subtle"],
            "unknown lesion profile 'subtle'; known: realistic, conspicuous",
        ),
    ],
)
def test_photon_phantoms_make_refuses_bad_input(tmp_path, capsys, args, message):
    assert main(["phantoms", "make", str(tmp_path / "out"), *args]) == 2
    error = capsys.readouterr().err
    assert error.startswith("photon phantoms: error: ") and message in error and error.count("\n") == 1
    assert not (tmp_path / "out").exists()
