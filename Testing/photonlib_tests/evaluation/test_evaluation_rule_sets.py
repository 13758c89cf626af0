"""Rule sets reproducing the official scorers (3D-RAD, the Photon release, M3D) on fixed
predictions, against values computed by hand, and the one answer vocabulary module."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

import photonlib.answers as answers
from photonlib.data.readers import rows as reader_rows
from photonlib.evaluation import (
    DEFAULT_RULE_SET,
    RULE_SETS,
    EvalRecord,
    bleu1,
    build_results,
    corpus_bleu1,
    get_rule_set,
    markdown_table,
    meteor,
    meteor_unavailable_reason,
    metrics,
    photon_exact_match_hit,
    photon_mean_relative_accuracy,
    report,
)
from photonlib.evaluation.rules import as_read_back_by_pandas

# Three short answers; 13a tokens (case kept):
#   [the cat sat]            vs [the cat sat on the mat]  3 of 3 match, hyp 3, ref 6
#   [a dog]                  vs [a dog]                   2 of 2 match, hyp 2, ref 2
#   [small nodule in lung]   vs [no nodule]               1 of 4 match, hyp 4, ref 2
PREDICTIONS = ["the cat sat", "a dog", "small nodule in lung"]
REFERENCES = ["the cat sat on the mat", "a dog", "no nodule"]
# Pooled: 6 matches of 9 output tokens, lengths 9 against 10: (6/9) * exp(1 - 10/9).
CORPUS_BLEU1 = (6 / 9) * math.exp(1 - 10 / 9)
# Sentence by sentence: exp(1 - 6/3), 1, 1/4 (the third is longer than its reference: no penalty).
MEAN_SENTENCE_BLEU1 = (math.exp(-1) + 1 + 0.25) / 3


def _open(prediction, reference, subtask="Size", task="Medical Measurement"):
    return EvalRecord(task, subtask, "open", prediction, reference)


def _existence(prediction, answer, subtask="Emphysema"):
    return EvalRecord("Existence Detection", subtask, "closed", prediction, answer, ("Yes", "No"))


# --- BLEU-1: one corpus score per subtask vs the mean of sentence scores ----------------------


def test_corpus_bleu1_pools_counts_and_lengths():
    assert corpus_bleu1(PREDICTIONS, REFERENCES) == pytest.approx(CORPUS_BLEU1)
    assert [bleu1(p, r) for p, r in zip(PREDICTIONS, REFERENCES)] == pytest.approx([math.exp(-1), 1.0, 0.25])
    assert corpus_bleu1(["", ""], ["a", "b"]) == 0.0


def test_mean_sentence_and_corpus_bleu_differ_by_points_on_the_same_predictions():
    records = [_open(p, r) for p, r in zip(PREDICTIONS, REFERENCES)]
    per_rule_set = {
        name: build_results(records, compute_bertscore=False, rules=name)["tasks"]["Medical Measurement"]["metrics"]
        for name in RULE_SETS
    }
    assert per_rule_set["3d-rad"]["bleu1"] == pytest.approx(CORPUS_BLEU1)  # 59.65
    assert per_rule_set["photon"]["bleu1"] == pytest.approx(CORPUS_BLEU1)
    assert per_rule_set["m3d"]["bleu1"] == pytest.approx(MEAN_SENTENCE_BLEU1)  # 53.93
    assert 100 * (CORPUS_BLEU1 - MEAN_SENTENCE_BLEU1) == pytest.approx(5.72, abs=0.01)


def test_corpus_bleu_is_per_subtask_then_averaged_over_subtasks():
    records = [_open(PREDICTIONS[0], REFERENCES[0], "Diameter"), _open(PREDICTIONS[1], REFERENCES[1], "Size")]
    task = build_results(records, compute_bertscore=False, rules="3d-rad")["tasks"]["Medical Measurement"]
    assert task["subtasks"]["Diameter"]["metrics"]["bleu1"] == pytest.approx(math.exp(-1))
    assert task["subtasks"]["Size"]["metrics"]["bleu1"] == pytest.approx(1.0)
    assert task["metrics"]["bleu1"] == pytest.approx((math.exp(-1) + 1) / 2)


# --- Existence Detection: open under 3d-rad, closed under photon -----------------------------


def test_photon_closed_rule_is_lower_cased_whole_string_equality():
    assert photon_exact_match_hit("YES", "yes")
    assert photon_exact_match_hit("  yes \n", "Yes")
    assert not photon_exact_match_hit("Yes.", "yes")  # punctuation is kept
    assert not photon_exact_match_hit("B", "No")  # a letter is not the answer text
    assert not photon_exact_match_hit("B. No", "No")
    assert not photon_exact_match_hit("No, there is none", "No")


def test_existence_detection_scored_by_each_rule_set():
    records = [_existence("No", "No"), _existence("Yes, there is.", "Yes"), _existence("B.", "No")]
    photon = build_results(records, compute_bertscore=False, rules="photon")["tasks"]["Existence Detection"]
    assert photon["metrics"] == {"accuracy_exact_match": pytest.approx(1 / 3)}
    rad = build_results(records, compute_bertscore=False, rules="3d-rad")["tasks"]["Existence Detection"]
    # As open questions: [No] [Yes , there is .] [B .] against [No] [Yes] [No]: 2 of 8 tokens
    # match, outputs longer than the references (no penalty): 2/8. No accuracy at all.
    assert rad["metrics"]["bleu1"] == pytest.approx(2 / 8)
    assert "accuracy_exact_match" not in rad["metrics"] and "accuracy_letter_rule" not in rad["metrics"]
    # ROUGE-1 F: 1, then P 1/3 R 1 -> 1/2, then 0 (no common word): mean 1/2.
    assert rad["metrics"]["rouge1"] == pytest.approx(0.5)
    m3d = build_results(records, compute_bertscore=False, rules="m3d")["tasks"]["Existence Detection"]
    assert m3d["metrics"] == {"accuracy_letter_rule": pytest.approx(1 / 3)}  # only "B." names B


def test_temporal_tasks_use_the_letter_rule_under_3d_rad_and_equality_under_photon():
    choices = ("Refractory", "Resolved", "New Lesion")
    records = [
        EvalRecord("5", "b", "Close", "C. New Lesion", "New Lesion", choices, "C"),
        EvalRecord("5", "b", "Close", "new lesion", "New Lesion", choices, "C"),
    ]
    rad = build_results(records, compute_bertscore=False, rules="3d-rad")["tasks"]["Static Temporal Diagnosis"]
    assert rad["metrics"] == {"accuracy_letter_rule": 0.5}
    photon = build_results(records, compute_bertscore=False, rules="photon")["tasks"]["Static Temporal Diagnosis"]
    assert photon["metrics"] == {"accuracy_exact_match": 0.5}


# --- Empty and NA-looking answers, as each scorer's pipeline sees them -------------------------


def test_empty_answers_dropped_by_3d_rad_read_as_nan_by_photon_zero_in_m3d():
    records = [_open("", "no nodule"), _open("a dog", "a dog")]
    rad = build_results(records, compute_bertscore=False, rules="3d-rad")["tasks"]["Medical Measurement"]["metrics"]
    assert rad["bleu1"] == pytest.approx(1.0)  # eval_3DRAD.py never writes the empty one
    photon = build_results(records, compute_bertscore=False, rules="photon")["tasks"]["Medical Measurement"]["metrics"]
    # [nan] vs [no nodule] and [a dog] vs [a dog]: 2 of 3 match, lengths 3 against 4.
    assert photon["bleu1"] == pytest.approx((2 / 3) * math.exp(1 - 4 / 3))
    m3d = build_results(records, compute_bertscore=False, rules="m3d")["tasks"]["Medical Measurement"]["metrics"]
    assert m3d["bleu1"] == pytest.approx(0.5) and m3d["rouge1"] == pytest.approx(0.5)


def test_pandas_read_back_turns_na_strings_into_nan():
    assert as_read_back_by_pandas("None") == "nan"
    assert as_read_back_by_pandas("") == "nan"
    assert as_read_back_by_pandas(" None") == "None"  # pandas compares the raw field
    assert as_read_back_by_pandas(" 2 cm\n") == "2 cm"


def test_photon_mra_reads_numbers_as_the_release_does():
    assert photon_mean_relative_accuracy("1,200 ml", "1200") == 0.0  # "1,200" reads 1
    assert photon_mean_relative_accuracy("11", "10") == pytest.approx(0.8)
    assert photon_mean_relative_accuracy("3", "unknown") == 0.0  # no raise: scores 0


# --- METEOR (m3d) -----------------------------------------------------------------------------


def test_m3d_names_meteor_unavailable_instead_of_faking_it(monkeypatch):
    monkeypatch.setattr(metrics, "meteor_unavailable_reason", lambda: "METEOR not computed: no WordNet here")
    records = [_open(p, r) for p, r in zip(PREDICTIONS, REFERENCES)]
    results = build_results(records, run_name="M3D run", compute_bertscore=False, rules="m3d")
    assert results["meteor"] == {"computed": False, "reason": "METEOR not computed: no WordNet here"}
    assert "meteor" not in results["tasks"]["Medical Measurement"]["metrics"]
    table = markdown_table(results)
    assert "| | METEOR | — |" in table.replace("|  |", "| |")
    assert "METEOR (M3D run): METEOR not computed: no WordNet here." in table
    assert build_results(records, compute_bertscore=False, rules="photon")["meteor"] is None


def test_meteor_unavailable_reason_says_what_is_missing():
    reason = meteor_unavailable_reason()
    if reason is not None:
        assert "WordNet" in reason or "Punkt" in reason
        assert "nltk.download" in reason
        with pytest.raises(metrics.MetricUnavailable, match="METEOR"):
            meteor(["a"], ["a"])


@pytest.mark.skipif(meteor_unavailable_reason() is not None, reason="nltk's WordNet/Punkt data not installed")
def test_meteor_matches_a_hand_computed_value():
    # Six unigrams all matched in one chunk: F-mean 1, penalty 0.5 * (1/6)^3.
    assert meteor(["the cat sat on the mat"], ["the cat sat on the mat"]) == pytest.approx(1 - 0.5 / 216, abs=1e-4)


# --- The rule set is named in every output ----------------------------------------------------


def test_default_rule_set_is_named_in_json_and_markdown():
    assert DEFAULT_RULE_SET == "photon" and get_rule_set(None).name == "photon"
    results = build_results([_existence("No", "No")], run_name="ITS", compute_bertscore=False)
    assert results["rule_set"]["name"] == "photon" and results["rule_set"]["default"] is True
    assert any("jsonl_results_to_csv.py" in source for source in results["rule_set"]["sources"])
    first_line = markdown_table(results).splitlines()[0]
    assert first_line.startswith("Scored with rule set `photon` (default; Photon release)")
    other = build_results([_existence("No", "No")], run_name="RAD", compute_bertscore=False, rules="3d-rad")
    assert other["rule_set"]["default"] is False
    both = markdown_table([results, other]).splitlines()[0]
    assert "`photon` (default; Photon release) for ITS" in both and "`3d-rad` (3D-RAD benchmark) for RAD" in both
    with pytest.raises(ValueError, match="unknown rule set"):
        get_rule_set("bleu-4")


# --- One answer vocabulary for readers and scorers --------------------------------------------


def test_readers_and_scorers_share_the_answer_vocabulary():
    assert reader_rows.CHOICE_LETTERS is answers.CHOICE_LETTERS
    assert set(reader_rows.CSV_CHOICE_LETTERS) <= set(answers.CHOICE_LETTERS)
    assert report.CHOICE_LETTERS is answers.CHOICE_LETTERS
    assert reader_rows.answer_matches_choice is answers.answer_matches_choice
    assert metrics.parse_first_number is answers.parse_first_number
    assert report.answer_letter_for is answers.answer_letter_for
    # The duplicates that used to disagree are gone.
    for name in ("_normalized", "_NUMBER"):
        assert not hasattr(reader_rows, name)
    for name in ("normalize_answer", "CHOICE_LETTERS", "_NUMBER", "answer_letter_for"):
        assert name not in vars(metrics)
    # What a reader accepts as naming choice B, the scorer derives as letter B.
    choices = {"A": "Yes", "B": "Pleural effusion"}
    assert reader_rows.closed_choice("'pleural effusion.'", choices, None) == "B"
    record = EvalRecord("Existence Detection", "x", "closed", "", "'pleural effusion.'", choices)
    assert record.answer_letter == "B"
    assert answers.parse_first_number("1,200 ml") == 1200 and answers.parse_first_number("1,200", thousands=False) == 1


def test_answer_vocabulary_module_imports_no_numpy_or_torch():
    code = (
        "import sys; import photonlib.answers; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in {'torch', 'numpy', 'photonlib.evaluation'}))"
    )
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert output.strip() == "[]"
