"""Evaluation metrics on known strings, the benchmark's aggregation, and the Table 1 report."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from photonlib.evaluation import (
    TABLE1_ORDER,
    THREE_D_RAD_TASKS,
    EvalRecord,
    bertscore_f1,
    bleu1,
    build_results,
    canonical_task,
    default_bertscore_model,
    letter_rule_hit,
    markdown_table,
    mean_relative_accuracy,
    parse_first_number,
    photon_exact_match_hit,
    resolve_bertscore_model,
    rouge1,
    save_results,
)

from support import SHARED

THREE_D_RAD_TEST = SHARED / "data" / "3d-rad" / "test"


# --- BLEU-1 -----------------------------------------------------------------------------------


def test_bleu1_of_identical_strings_is_one():
    assert bleu1("Right hilar region.", "Right hilar region.") == pytest.approx(1.0)
    assert bleu1("30x13 mm", "30x13 mm") == pytest.approx(1.0)


def test_bleu1_known_pairs():
    # 13a tokens: hyp [the cat sat on the mat], ref [the cat is on the mat]; clipped unigram
    # matches the x2, cat, on, mat = 5 of 6; equal lengths so no brevity penalty: 5/6.
    assert bleu1("the cat sat on the mat", "the cat is on the mat") == pytest.approx(5 / 6)
    # hyp [right hilar] (2), ref [right hilar region .] (4; 13a splits the full stop):
    # precision 2/2, brevity penalty exp(1 - 4/2) = exp(-1).
    assert bleu1("right hilar", "right hilar region.") == pytest.approx(math.exp(-1))
    # Case is kept (as evaluate's bleu): "Small" != "small"; hyp 6 tokens, 1 match ("nodule"),
    # hyp longer than ref [A small nodule .] so no penalty: 1/6.
    assert bleu1("Small nodule in the right lung", "A small nodule.") == pytest.approx(1 / 6)
    assert bleu1("", "A small nodule.") == 0.0
    assert bleu1("liver", "A small nodule.") == 0.0


# --- ROUGE-1 ----------------------------------------------------------------------------------


def test_rouge1_f_known_pairs():
    assert rouge1("Right hilar region.", "Right hilar region.") == pytest.approx(1.0)
    # rouge-score lower-cases and drops punctuation: pred [small nodule in the right lung] (6),
    # ref [a small nodule] (3), overlap 2: P = 2/6, R = 2/3, F = 2PR / (P + R) = 4/9.
    assert rouge1("Small nodule in the right lung", "A small nodule.") == pytest.approx(4 / 9)
    assert rouge1("", "A small nodule.") == 0.0


# --- Closed questions -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prediction", "letter_rule", "photon_rule"),
    [
        ("The answer is B. Pleural effusion", True, False),  # "B." occurs; extra words fail equality
        ("B. Pleural effusion", True, False),  # the Photon release compares the answer text alone
        ("b", False, False),  # the letter rule is case-sensitive and needs the full stop
        ("B", False, False),
        ("Pleural effusion", False, True),  # the choice text alone
        ("PLEURAL  EFFUSION", False, True),  # case and runs of spaces are folded
        ("pleural effusion.", False, False),  # punctuation is kept (PhotonLib's old rule said hit)
        ("A. B.", True, False),  # the benchmark counts any "B.": lenient to several letters
        ("A. Pleural effusion", False, False),
        ("", False, False),
    ],
)
def test_both_closed_rules_on_tricky_outputs(prediction, letter_rule, photon_rule):
    assert letter_rule_hit(prediction, "B") is letter_rule
    assert photon_exact_match_hit(prediction, "Pleural effusion") is photon_rule


# --- MRA --------------------------------------------------------------------------------------


def test_mean_relative_accuracy_known_numbers():
    # Tolerances 1 - theta = 0.50, 0.45, ..., 0.05; a hit when relative error < tolerance.
    assert mean_relative_accuracy("about 10.4 cm", "10") == pytest.approx(1.0)  # 0.04 < all ten
    assert mean_relative_accuracy("11", "10") == pytest.approx(0.8)  # 0.10: 0.50 .. 0.15 -> 8
    assert mean_relative_accuracy("11.5", "10") == pytest.approx(0.7)  # 0.15 is not < 0.15 -> 7
    assert mean_relative_accuracy("13 mm", "10 mm") == pytest.approx(0.4)  # 0.30: 0.50 .. 0.35 -> 4
    assert mean_relative_accuracy("20", "10") == 0.0
    assert mean_relative_accuracy("-9", "-10") == pytest.approx(0.8)  # |-9 + 10| / |-10| = 0.10 -> 8
    assert mean_relative_accuracy("no lesion", "10") == 0.0  # unparsable -> 0
    assert mean_relative_accuracy("1200", "1,200 ml") == pytest.approx(1.0)
    assert mean_relative_accuracy("0", "0") == 1.0
    assert parse_first_number("30x13 mm") == 30.0
    assert parse_first_number("none") is None
    with pytest.raises(ValueError, match="no number"):
        mean_relative_accuracy("3", "unknown")


# --- BERTScore --------------------------------------------------------------------------------


def test_bertscore_with_the_offline_minilm_model():
    model = default_bertscore_model()
    assert model.name == "all-MiniLM-L6-v2" and model.num_layers == 6
    assert Path(model.model_type, "config.json").is_file()
    assert not model.comparable_to_paper
    scores = bertscore_f1(
        ["Right hilar region.", "Pacemaker on the chest wall.", ""],
        ["Right hilar region.", "Bilateral pleural effusion.", "Pacemaker."],
        model=model,
    )
    assert scores[0] == pytest.approx(1.0, abs=1e-4)
    assert 0.0 < scores[1] < 0.9
    assert scores[2] == 0.0  # empty output: 0 without calling the model
    paper = resolve_bertscore_model("roberta-large")
    assert paper.num_layers == 17 and paper.comparable_to_paper


# --- Aggregation and report -------------------------------------------------------------------


def _closed(task, subtask, prediction, answer="No", letter="B", **extra):
    return EvalRecord(
        task,
        subtask,
        "Close",
        prediction,
        answer,
        ("Yes", "No", "-", "-"),
        letter,
        **extra,
    )


def test_task_is_the_unweighted_mean_of_its_subtasks():
    records = [
        _closed("4", "1", "B. No"),
        _closed("4", "1", "B. No"),
        _closed("4", "1", "A. Yes"),
        _closed("4", "2", "A. Yes"),
    ]
    results = build_results(records, compute_bertscore=False, rules="m3d")
    task = results["tasks"]["Existence Detection"]
    assert task["subtasks"]["1"]["metrics"]["accuracy_letter_rule"] == pytest.approx(2 / 3)
    assert task["subtasks"]["2"]["metrics"]["accuracy_letter_rule"] == 0.0
    # Macro over subtasks (2/3 + 0) / 2 = 1/3, not the 2/4 a pooled mean would give.
    assert task["metrics"]["accuracy_letter_rule"] == pytest.approx(1 / 3)
    photon = build_results(records, compute_bertscore=False)["tasks"]["Existence Detection"]
    assert photon["metrics"]["accuracy_exact_match"] == 0.0  # "B. No" is not the answer text "No"
    assert task["num_samples"] == 4 and task["num_subtasks"] == 2


def test_closed_letter_is_derived_from_the_choices():
    record = EvalRecord("Existence Detection", "7", "closed", "B.", "No", ("Yes", "No", "-", "-"))
    assert record.answer_letter == "B" and record.choices == ("Yes", "No")
    with pytest.raises(ValueError, match="question type"):
        EvalRecord("x", "y", "essay", "a", "b")


def test_records_from_reader_samples_and_plain_dicts():
    # The dataset readers' sample attributes: choices as a letter mapping, answer_choice, extra.
    closed = SimpleNamespace(
        task="Existence Detection",
        subtask="Pleural effusion",
        question_type="closed",
        answer="No",
        choices={"A": "Yes", "B": "No"},
        answer_choice="B",
        extra={},
    )
    record = EvalRecord.from_sample(closed, "B. No", tokens_kept=120, tokens_total=4000, latency_s=0.3)
    assert (record.question_type, record.answer_letter, record.choices) == ("closed", "B", ("Yes", "No"))
    numeric = SimpleNamespace(
        task="Measurement",
        subtask="lesion volume measurement",
        question_type="open",
        answer="12.5",
        choices=None,
        answer_choice=None,
        extra={"answer_type": "numeric"},
    )
    assert EvalRecord.from_sample(numeric, "12").question_type == "numeric"
    plain = EvalRecord.from_mapping(
        {
            "task": "Medical Computation",  # the reader's name for 3D-RAD task 3
            "question_type": "closed",
            "prediction": "C",
            "answer": "New Lesion",
            "choices": {"A": "Refractory", "B": "Resolved", "C": "New Lesion", "D": "-"},
            "volume": "test_1.npy",
        }
    )
    assert plain.answer_letter == "C" and plain.choices == ("Refractory", "Resolved", "New Lesion")
    assert plain.extra == {"volume": "test_1.npy"} and plain.subtask == ""
    assert canonical_task(plain.task) == "Medical Measurement"
    with pytest.raises(ValueError, match="prediction"):
        EvalRecord.from_mapping({"task": "x", "question_type": "open", "answer": "y"})


def _run(name, accuracy, bleu_prediction, tokens, latency):
    records = [
        _closed(
            "Task4_Existence_Detection",
            "Emphysema",
            "No" if accuracy else "Yes",
            tokens_kept=tokens,
            tokens_total=1000,
            latency_s=latency,
        ),
        EvalRecord(
            "Task3_Medical_Computation",
            "Size",
            "Open",
            bleu_prediction,
            "30x13 mm",
            tokens_kept=tokens,
            tokens_total=1000,
            latency_s=latency,
        ),
        EvalRecord(
            "DeepTumorVQA",
            "lesion volume",
            "numeric",
            "11 ml",
            "10 ml",
            tokens_kept=tokens,
            tokens_total=1000,
            latency_s=latency,
            grounding=0.75,
        ),
    ]
    return build_results(records, run_name=name, compute_bertscore=False)


def test_markdown_table_like_table_1_with_runs_side_by_side():
    its = _run("ITS", True, "30x13 mm", 250, 0.5)
    full = _run("No pruning", False, "30 mm", 1000, 1.25)
    table = markdown_table([its, full])
    lines = table.splitlines()
    assert lines[0].startswith("Scored with rule set `photon` (default; Photon release), reproducing")
    assert lines[2] == "| Task | Metric | ITS | No pruning |"
    assert lines[3] == "| --- | --- | ---: | ---: |"
    body = [line.split(" | ") for line in lines[4:] if line.startswith("| ")]
    cells = [[cell.strip("| ") for cell in row] for row in body]
    assert cells[0] == ["Existence Detection", "Accuracy (exact match)", "100.00", "0.00"]
    # Table 1 order: Existence Detection before Medical Measurement; other tasks after.
    assert cells[1][:2] == ["Medical Measurement", "BLEU"]
    # "30 mm" vs [30x13 mm]: 1 of 2 unigrams, equal lengths -> 50.00.
    assert cells[1][2:] == ["100.00", "50.00"]
    assert cells[2][:2] == ["", "ROUGE"]
    assert cells[3][:2] == ["DeepTumorVQA", "MRA"] and cells[3][2:] == ["80.00", "80.00"]
    assert cells[4] == ["Tokens kept", "mean per case", "250.0", "1000.0"]
    assert cells[5] == ["", "% of volume tokens", "25.00", "100.00"]
    assert cells[6] == ["Latency", "mean s per case", "0.500", "1.250"]
    assert cells[8] == ["Grounding", "lesion voxels covered", "75.00", "75.00"]
    assert "BERT Score" not in [row[1] for row in cells]  # not computed in these runs


def test_results_are_json_serialisable_and_record_bertscore_model(tmp_path):
    records = [
        EvalRecord(
            "1",
            "1",
            "Open",
            "Right hilar region.",
            "Right hilar region.",
            tokens_kept=300,
            tokens_total=4000,
            latency_s=0.2,
        ),
        EvalRecord(
            "1",
            "2",
            "Open",
            "",
            "Pacemaker.",
            tokens_kept=500,
            tokens_total=4000,
            latency_s=0.3,
        ),
        _closed(
            "6",
            "1",
            "D. No Abnormality",
            answer="No Abnormality (Always absent)",
            letter="D",
        ),
    ]
    # m3d scores an empty answer 0 on every metric (photon would read it back as "nan").
    results = build_results(records, run_name="ITS", rules="m3d")
    path = save_results(results, tmp_path / "results.json")
    loaded = json.loads(path.read_text())
    assert loaded["bertscore"]["name"] == "all-MiniLM-L6-v2"
    assert loaded["bertscore"]["comparable_to_paper"] is False
    assert "not comparable" in loaded["bertscore"]["note"]
    image = loaded["tasks"]["Image Observation"]
    # Subtask 1 is a perfect answer, subtask 2 empty (scored 0): macro mean 0.5 on every metric.
    assert image["metrics"]["bleu1"] == pytest.approx(0.5)
    assert image["metrics"]["bertscore_f1"] == pytest.approx(0.5, abs=1e-4)
    assert loaded["empty_predictions"] == 1
    assert loaded["tokens_kept"]["mean"] == 400 and loaded["tokens_kept"]["median"] == 400
    assert loaded["tokens_kept"]["p10"] == pytest.approx(320) and loaded["tokens_kept"]["p90"] == pytest.approx(480)
    assert sum(loaded["tokens_kept"]["histogram"]["counts"]) == 2
    assert loaded["latency_s"]["mean"] == pytest.approx(0.25)
    assert loaded["grounding"] is None
    assert set(loaded["metric_definitions"]) >= {
        "bleu1",
        "rouge1",
        "bertscore_f1",
        "accuracy_letter_rule",
        "mra",
    }
    table = markdown_table(loaded)
    assert "| Image Observation | BLEU | 50.00 |" in table
    assert "all-MiniLM-L6-v2 layer 6 (ITS); not comparable" in table
    # The 3D-RAD benchmark's script drops empty outputs instead: then only subtask 1 has open metrics.
    skipped = build_results(records, compute_bertscore=False, rules="3d-rad")
    assert skipped["tasks"]["Image Observation"]["metrics"]["bleu1"] == pytest.approx(1.0)


@pytest.mark.skipif(not THREE_D_RAD_TEST.is_dir(), reason="3D-RAD test CSVs (shared/data) not present")
def test_real_3d_rad_task_names_map_to_table_rows():
    seen = {}
    for folder in sorted(path for path in THREE_D_RAD_TEST.iterdir() if path.is_dir()):
        with next(folder.glob("*.csv")).open(newline="") as handle:
            row = next(csv.DictReader(handle))
        by_folder, by_number = canonical_task(folder.name), canonical_task(row["Task"])
        assert by_folder == by_number
        assert by_folder in TABLE1_ORDER
        kind = next(task.question_type for task in THREE_D_RAD_TASKS if task.name == by_folder)
        assert EvalRecord(row["Task"], row["Subtask"], row["QuestionType"], "", row["Answer"]).question_type == kind
        seen[folder.name] = by_folder
    assert sorted(seen.values()) == sorted(TABLE1_ORDER)
    assert seen["Task3_Medical_Computation"] == "Medical Measurement"


def test_importing_evaluation_loads_no_model_library():
    code = (
        "import sys, photonlib; before = set(sys.modules); import photonlib.evaluation; "
        "new = set(sys.modules) - before; "
        "print(sorted(m for m in new if m.split('.')[0] in {'torch', 'bert_score', 'transformers', 'sacrebleu'}))"
    )
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert output.strip() == "[]"
