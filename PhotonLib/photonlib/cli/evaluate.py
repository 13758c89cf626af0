"""``photon eval``: answer a dataset's questions with a model and score them like the benchmarks."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from photonlib.errors import UsageError
from photonlib.evaluation.rules import DEFAULT_RULE_SET, RULE_SETS


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="evaluate a model on a dataset (3D-RAD, DeepTumorVQA, M3D, JSONL, phantoms)",
        description="Answer every question of a dataset and write results.json plus a Table-1 style results.md.",
    )
    parser.add_argument("--model", type=Path, help="a Photon model folder (default: the embedded model)")
    parser.add_argument("--data", required=True, metavar="KIND:PATH", help="e.g. phantoms:phantoms/phantoms.jsonl or 3d-rad:3D-RAD/test")
    parser.add_argument("--volume-root", type=Path, help="folder of the volumes (3D-RAD, M3D, DeepTumorVQA)")
    parser.add_argument("--out", type=Path, default=Path("results.json"), help="results JSON (Markdown written beside it)")
    parser.add_argument("--limit", type=int, help="evaluate only the first N questions")
    parser.add_argument("--pruner", help="override the model's pruner: its, none, random, visionzip, hiprune")
    parser.add_argument("--budget", type=float, help="kept fraction for fixed-budget pruners")
    parser.add_argument("--pruning-mode", choices=("none", "soft", "hard"), help="override the model's pruning mode")
    parser.add_argument("--max-new-tokens", type=int, default=64, metavar="N")
    parser.add_argument("--bertscore-model", help="roberta-large or a local folder (default: offline all-MiniLM-L6-v2)")
    parser.add_argument("--no-bertscore", action="store_true", help="skip BERTScore")
    parser.add_argument(
        "--rules", choices=tuple(RULE_SETS), default=DEFAULT_RULE_SET,
        help=f"whose scorer to reproduce (default {DEFAULT_RULE_SET}): photon = the Photon release (Existence "
        "Detection closed, lower-cased exact match), 3d-rad = the benchmark's scorer (Existence Detection open, "
        "letter rule), m3d = M3D's (per-answer BLEU/ROUGE/METEOR/BERTScore); see docs/evaluation.md",
    )  # fmt: skip
    parser.add_argument("--name", help="run name in the table (default: the model and its pruning, e.g. \"photon-demo (its)\")")
    parser.add_argument("--device", default="auto")
    parser.set_defaults(run=run)


def run_label(model: str, pruner: str, budget: float | None, mode: str) -> str:
    """The run's default name in the table: the model and what it prunes, e.g. ``photon-demo (its)``,
    ``photon-demo (random 0.05, soft)``; a model evaluated with pruning mode ``none`` keeps every
    token, whatever its pruner, and is labelled ``(no pruning)``."""
    if mode == "none" or pruner == "none":
        return f"{model} (no pruning)"
    budget_text = "" if budget is None else f" {budget:g}"
    mode_text = "" if mode == "hard" else f", {mode}"
    return f"{model} ({pruner}{budget_text}{mode_text})"


def run(args: argparse.Namespace) -> int:
    from photonlib.data import load_dataset
    from photonlib.data.samples import DatasetError
    from photonlib.evaluation.runner import evaluate, write_outputs
    from photonlib.inference import PhotonEngine

    kind, separator, path = args.data.partition(":")
    if not separator or not path:
        raise UsageError(f"--data must be KIND:PATH (e.g. phantoms:out/phantoms.jsonl), got {args.data!r}")
    report = load_dataset(kind, path, volume_root=args.volume_root, on_error="skip")
    samples = report.samples[: args.limit] if args.limit else report.samples
    if not samples:
        raise DatasetError(f"{path}: no usable questions ({report.summary()})")
    engine = PhotonEngine.load(args.model, args.device)
    engine.use_pruning(args.pruner, args.budget, args.pruning_mode)  # a bad name fails here, before the run
    name = args.name or run_label(engine.name, engine.pruner_name, engine.pruning_budget, engine.pruning_mode)
    run_result = evaluate(
        engine, samples, run_name=name, max_new_tokens=args.max_new_tokens,
        bertscore_model=args.bertscore_model, compute_bertscore=not args.no_bertscore, rules=args.rules,
    )  # fmt: skip
    json_path, markdown_path, predictions_path = write_outputs(run_result, args.out)
    print(run_result.table)
    print(json.dumps({"results": str(json_path), "table": str(markdown_path), "predictions": str(predictions_path), "questions": len(samples), "skipped_rows": len(report.problems)}))
    return 0
