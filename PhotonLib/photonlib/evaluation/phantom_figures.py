"""What a model knows about the phantoms of ``photon phantoms make``: one figure per question family.

The 3D-RAD metrics of ``report.build_results`` score answers as text (BLEU, ROUGE, exact match);
for the phantoms the facts are known, so each family gets the figure that says whether the
answer is right:

* ``existence``: the Yes/No answer equals the reference (compared by ``answers.choice_key``);
* ``organ``: the answer names the lesion's organ (same comparison);
* ``size``: the first number of the answer lies within ``SIZE_TOLERANCE_MM`` of the lesion's
  recorded longest diameter;
* ``grounding``: the mean, over every question about a case with a lesion, of the share of
  lesion voxels inside kept tokens (``runner.lesion_grounding``);
* ``keep_ratio``: the mean share of the visual tokens kept, over all questions and per family.

Records are recognised by ``extra["family"]``, which the phantom generator writes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from photonlib.answers import choice_key, parse_first_number

SIZE_TOLERANCE_MM = 5.0
FAMILIES = ("existence", "organ", "size", "description", "anomaly")


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def size_within_tolerance(prediction: str, diameter_mm: float) -> bool:
    value = parse_first_number(prediction)
    return value is not None and abs(value - float(diameter_mm)) <= SIZE_TOLERANCE_MM


def _hit(record: Any) -> bool | None:
    """Whether one answer is right by its family's figure; None where the family has none."""
    family = record.extra.get("family")
    if family in ("existence", "organ"):
        return choice_key(record.prediction) == choice_key(record.reference)
    if family == "size":
        lesion = record.extra.get("lesion") or {}
        diameter = lesion.get("diameter_mm")
        if diameter is None:
            diameter = parse_first_number(record.reference)
        return None if diameter is None else size_within_tolerance(record.prediction, diameter)
    return None


def is_phantom_run(records: Sequence[Any]) -> bool:
    return any(isinstance(record.extra, Mapping) and record.extra.get("family") in FAMILIES for record in records)


def phantom_figures(records: Sequence[Any]) -> dict[str, Any]:
    """The figures above from evaluation records (``report.EvalRecord``) of phantom questions."""
    by_family: dict[str, dict[str, Any]] = {}
    for family in FAMILIES:
        members = [record for record in records if record.extra.get("family") == family]
        if not members:
            continue
        hits = [hit for hit in map(_hit, members) if hit is not None]
        ratios = [r.tokens_kept / r.tokens_total for r in members if r.tokens_kept is not None and r.tokens_total]
        grounding = [float(r.grounding) for r in members if r.grounding is not None]
        by_family[family] = {
            "num_samples": len(members),
            "accuracy": _mean([float(hit) for hit in hits]),
            "keep_ratio": _mean(ratios),
            "grounding": _mean(grounding),
        }
    phantom = [record for record in records if record.extra.get("family") in FAMILIES]
    ratios = [r.tokens_kept / r.tokens_total for r in phantom if r.tokens_kept is not None and r.tokens_total]
    grounding = [float(r.grounding) for r in phantom if r.grounding is not None]
    return {
        "existence_accuracy": by_family.get("existence", {}).get("accuracy"),
        "organ_accuracy": by_family.get("organ", {}).get("accuracy"),
        "size_within_5mm": by_family.get("size", {}).get("accuracy"),
        "grounding": _mean(grounding),
        "keep_ratio": _mean(ratios),
        "size_tolerance_mm": SIZE_TOLERANCE_MM,
        "families": by_family,
    }
