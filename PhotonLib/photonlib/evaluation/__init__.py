"""Evaluation: per-sample metrics as the benchmarks define them, and run reports.

Importing this package loads no model: BERTScore imports ``bert_score`` (and torch) on first use.
"""

from photonlib.evaluation.metrics import (
    METRIC_DEFINITIONS,
    BertScoreModel,
    bertscore_f1,
    bleu1,
    default_bertscore_model,
    exact_match_hit,
    letter_rule_hit,
    mean_relative_accuracy,
    normalize_answer,
    parse_first_number,
    resolve_bertscore_model,
    rouge1,
)
from photonlib.evaluation.report import (
    TABLE1_ORDER,
    THREE_D_RAD_TASKS,
    EvalRecord,
    build_results,
    canonical_task,
    markdown_table,
    save_results,
    score_records,
)

__all__ = [
    "METRIC_DEFINITIONS",
    "TABLE1_ORDER",
    "THREE_D_RAD_TASKS",
    "BertScoreModel",
    "EvalRecord",
    "bertscore_f1",
    "bleu1",
    "build_results",
    "canonical_task",
    "default_bertscore_model",
    "exact_match_hit",
    "letter_rule_hit",
    "markdown_table",
    "mean_relative_accuracy",
    "normalize_answer",
    "parse_first_number",
    "resolve_bertscore_model",
    "rouge1",
    "save_results",
    "score_records",
]
