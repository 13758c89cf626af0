"""Evaluation: the official scorers' metrics as named rule sets (``photon``, ``3d-rad``,
``m3d``), and run reports that say which rule set they were scored with.

Importing this package loads no model: BERTScore imports ``bert_score`` (and torch) on first use.
"""

from photonlib.answers import answer_letter_for, parse_first_number
from photonlib.evaluation.metrics import (
    METRIC_DEFINITIONS,
    BertScoreModel,
    MetricUnavailable,
    bertscore_f1,
    bleu1,
    corpus_bleu1,
    default_bertscore_model,
    letter_rule_hit,
    mean_relative_accuracy,
    meteor,
    meteor_unavailable_reason,
    photon_exact_match_hit,
    photon_mean_relative_accuracy,
    resolve_bertscore_model,
    rouge1,
    strict_match_hit,
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
from photonlib.evaluation.rules import DEFAULT_RULE_SET, RULE_SETS, RuleSet, get_rule_set

__all__ = [
    "DEFAULT_RULE_SET",
    "METRIC_DEFINITIONS",
    "RULE_SETS",
    "TABLE1_ORDER",
    "THREE_D_RAD_TASKS",
    "BertScoreModel",
    "EvalRecord",
    "MetricUnavailable",
    "RuleSet",
    "answer_letter_for",
    "bertscore_f1",
    "bleu1",
    "build_results",
    "canonical_task",
    "corpus_bleu1",
    "default_bertscore_model",
    "get_rule_set",
    "letter_rule_hit",
    "markdown_table",
    "mean_relative_accuracy",
    "meteor",
    "meteor_unavailable_reason",
    "parse_first_number",
    "photon_exact_match_hit",
    "photon_mean_relative_accuracy",
    "resolve_bertscore_model",
    "rouge1",
    "save_results",
    "score_records",
    "strict_match_hit",
]
