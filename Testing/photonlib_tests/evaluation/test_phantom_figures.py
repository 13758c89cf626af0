"""The phantom figures of `photon eval`: each question family judged by the phantom's facts."""

from __future__ import annotations

import pytest

from photonlib.evaluation.phantom_figures import phantom_figures, size_within_tolerance
from photonlib.evaluation.report import EvalRecord, build_results, markdown_table


def _record(family, prediction, reference, kept=16, grounding=None, **extra):
    return EvalRecord(
        task="Phantom", subtask=family, question_type="open", prediction=prediction, reference=reference,
        tokens_kept=kept, tokens_total=64, grounding=grounding, extra={"family": family, **extra},
    )  # fmt: skip


def _records():
    lesion = {"diameter_mm": 31.6, "organ": "spleen"}
    return [
        _record("existence", "Yes", "Yes", kept=8, grounding=1.0, lesion=lesion),
        _record("existence", "yes.", "No", kept=8),  # wrong
        _record("existence", "No", "No", kept=8),
        _record("organ", "Spleen.", "Spleen", grounding=0.5, lesion=lesion),
        _record("organ", "Liver", "Spleen", grounding=0.0, lesion=lesion),
        _record("size", "About 27 mm.", "About 32 mm.", kept=32, grounding=0.75, lesion=lesion),  # 4.6 mm off
        _record("size", "About 37 mm.", "About 32 mm.", kept=32, lesion=lesion),  # 5.4 mm off
        _record("size", "Large.", "About 32 mm.", kept=32, lesion=lesion),  # no number
        _record("anomaly", "No abnormality.", "No abnormality.", kept=0),
    ]


def test_each_family_is_judged_by_the_phantom_facts():
    figures = phantom_figures(_records())
    assert figures["existence_accuracy"] == pytest.approx(2 / 3)
    assert figures["organ_accuracy"] == pytest.approx(1 / 2)
    assert figures["size_within_5mm"] == pytest.approx(1 / 3)
    assert figures["grounding"] == pytest.approx((1.0 + 0.5 + 0.0 + 0.75) / 4)
    assert figures["keep_ratio"] == pytest.approx((8 * 3 + 16 * 2 + 32 * 3 + 0) / 9 / 64)
    assert figures["families"]["existence"]["keep_ratio"] == pytest.approx(8 / 64)
    assert figures["families"]["anomaly"]["accuracy"] is None  # free text: no phantom figure


@pytest.mark.parametrize(
    ("prediction", "diameter", "within"),
    [("About 24 mm.", 28.9, True), ("About 24 mm.", 29.1, False), ("A 40 mm hypodense lesion", 35.0, True), ("", 20.0, False)],
)
def test_size_tolerance_is_five_millimetres_either_way(prediction, diameter, within):
    assert size_within_tolerance(prediction, diameter) is within


def test_results_and_table_carry_the_phantom_figures_only_for_phantom_questions():
    results = build_results(_records(), compute_bertscore=False)
    assert results["phantom"]["organ_accuracy"] == pytest.approx(0.5)
    table = markdown_table(results)
    assert "| Phantom facts | existence answered right | 66.67 |" in table
    assert "diameter within 5 mm | 33.33 |" in table
    other = build_results([EvalRecord("Existence Detection", "x", "closed", "Yes", "Yes", ("Yes", "No"))], compute_bertscore=False)
    assert "phantom" not in other and "Phantom facts" not in markdown_table(other)
