"""``photon eval``: answer every question of a dataset and score it as the benchmarks do.

Each volume is prepared once (preprocessing + vision tower) and asked all its questions. Per
case the runner records the answer, tokens kept, latency and, for phantoms (which carry lesion
masks), grounding: the fraction of the lesion's voxels that lie in kept tokens.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from photonlib.evaluation.report import EvalRecord, build_results, markdown_table, save_results

logger = logging.getLogger(__name__)


@dataclass
class EvaluationRun:
    results: dict[str, Any]
    records: list[EvalRecord]
    table: str
    predictions: list[dict[str, Any]]  # one per question: what was asked, answered and kept


def lesion_grounding(answer, case, sample) -> float | None:
    """Fraction of the lesion's voxels inside kept tokens (phantoms: extra.mask_path / lesion_label)."""
    extra = getattr(sample, "extra", None) or {}
    label, mask_path = extra.get("lesion_label"), extra.get("mask_path")
    if label is None or not mask_path:
        return None
    from photonlib.volume import read_volume

    mask_file = Path(mask_path)  # the phantom reader resolved it against the dataset folder
    if not mask_file.exists() and not mask_file.is_absolute():
        mask_file = Path(sample.volume).parent.parent / mask_file  # as written: <root>/masks beside <root>/volumes
    labels = read_volume(mask_file).array
    lesion = labels == int(label)
    if not lesion.any():
        return None
    from photonlib.volume import map_to_source

    kept = map_to_source(answer.keep_mask.astype(np.float32), case.prepared) > 0.5  # each voxel: its token kept?
    return float(kept[lesion].mean())


def evaluate(
    engine,
    samples,
    *,
    run_name: str = "run",
    max_new_tokens: int = 64,
    bertscore_model: str | None = None,
    compute_bertscore: bool = True,
    rules: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> EvaluationRun:
    """Ask ``engine`` every sample's question; return results scored under the rule set ``rules``
    (``photon``, the default, ``3d-rad`` or ``m3d``) and the Table-1 Markdown naming it."""
    from photonlib.volume import read_volume

    records: list[EvalRecord] = []
    predictions: list[dict[str, Any]] = []
    by_volume: dict[Path, list] = {}
    for sample in samples:
        by_volume.setdefault(Path(sample.volume), []).append(sample)
    done = 0
    for volume_path, volume_samples in by_volume.items():
        case = engine.prepare(read_volume(volume_path))
        first = True
        for sample in volume_samples:
            answer = engine.ask(case, sample.question, max_new_tokens=max_new_tokens)
            # The first question pays for preprocessing and the vision tower; later ones do not.
            latency = answer.timings["total"] if first else answer.timings["total"] - case.timings.get("preprocess", 0) - case.timings.get("vision", 0)
            first = False
            record = EvalRecord.from_sample(
                sample,
                answer.answer,
                tokens_kept=answer.tokens_kept,
                tokens_total=answer.tokens_total,
                latency_s=latency,
                grounding=lesion_grounding(answer, case, sample),
            )
            records.append(record)
            predictions.append(
                {
                    "volume": str(volume_path), "task": record.task, "question": sample.question,
                    "reference": sample.answer, "prediction": answer.answer, "tokens_kept": answer.tokens_kept,
                    "tokens_total": answer.tokens_total, "grounding": record.grounding,
                }
            )  # fmt: skip
            done += 1
            if progress is not None:
                progress(done, len(samples))
    results = build_results(
        records, run_name=run_name, bertscore_model=bertscore_model, compute_bertscore=compute_bertscore, rules=rules
    )
    return EvaluationRun(results=results, records=records, table=markdown_table([results]), predictions=predictions)


def write_outputs(run: EvaluationRun, out: Path) -> tuple[Path, Path, Path]:
    """results.json and, beside it, results.md (the Table-1 shaped Markdown) and
    results.predictions.jsonl (every question with its answer, for looking at the errors)."""
    json_path = save_results(run.results, out)
    markdown_path = out.with_suffix(".md")
    markdown_path.write_text(run.table + "\n")
    predictions_path = out.with_suffix(".predictions.jsonl")
    predictions_path.write_text("".join(json.dumps(line, ensure_ascii=False) + "\n" for line in run.predictions))
    return json_path, markdown_path, predictions_path
