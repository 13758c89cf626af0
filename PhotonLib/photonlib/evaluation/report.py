"""Results of an evaluation run: per-task metrics as the benchmarks aggregate them, efficiency
figures, a JSON-able results dict and a Markdown table shaped like the paper's Table 1.

Input: one ``EvalRecord`` per answered question. Output of ``build_results``::

    {"run": ..., "num_samples": ...,
     "tasks": {task: {"question_types", "num_samples", "num_subtasks", "metrics",
                      "subtasks": {subtask: {"num_samples", "metrics"}}}},
     "overall": {"num_samples", "metrics"},
     "tokens_kept", "keep_ratio", "tokens_total", "latency_s", "grounding",
     "rule_set", "meteor", "bertscore", "metric_definitions", "packages", ...,
     "phantom": {...}}   # only for phantom questions: photonlib.evaluation.phantom_figures

``rule_set`` names the scorer reproduced (``photonlib.evaluation.rules``); the Markdown table
says it in its first line.

Metric values are fractions in [0, 1]; the Markdown table prints them as percentages with two
decimals, as the paper does. ``markdown_table`` puts several runs side by side (e.g. ITS, no
pruning, a fixed budget), one column each.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from photonlib.answers import CHOICE_LETTERS, answer_letter_for, normalize_letter
from photonlib.errors import ConfigurationError, PhotonInputError
from photonlib.evaluation import metrics as metric_functions
from photonlib.evaluation.metrics import BertScoreModel
from photonlib.evaluation.phantom_figures import is_phantom_run, phantom_figures
from photonlib.evaluation.rules import RuleSet, as_read_back_by_pandas, get_rule_set

RESULTS_SCHEMA = "photonlib.evaluation.results/2"  # 2: rule sets

OPEN, CLOSED, NUMERIC = "open", "closed", "numeric"

_QUESTION_TYPES = {
    "open": OPEN,
    "close": CLOSED,  # 3D-RAD's spelling
    "closed": CLOSED,
    "choice": CLOSED,
    "multiple_choice": CLOSED,
    "multiple-choice": CLOSED,
    "numeric": NUMERIC,
    "number": NUMERIC,
    "mra": NUMERIC,
}


@dataclass(frozen=True)
class TaskInfo:
    """One 3D-RAD task: its number and folder in the benchmark, its row name in Table 1."""

    number: int
    folder: str
    name: str
    question_type: str


# In the row order of the paper's Table 1. Task 3's folder says "Medical_Computation"; the
# paper calls it Medical Measurement.
THREE_D_RAD_TASKS: tuple[TaskInfo, ...] = (
    TaskInfo(4, "Task4_Existence_Detection", "Existence Detection", CLOSED),
    TaskInfo(5, "Task5_Static_Temporal_Diagnosis", "Static Temporal Diagnosis", CLOSED),
    TaskInfo(6, "Task6_Longitudinal_Temporal_Diagnosis", "Longitudinal Temporal Diagnosis", CLOSED),
    TaskInfo(3, "Task3_Medical_Computation", "Medical Measurement", OPEN),
    TaskInfo(1, "Task1_Image_Observation", "Image Observation", OPEN),
    TaskInfo(2, "Task2_Anomaly_Detection", "Anomaly Detection", OPEN),
)
TABLE1_ORDER: tuple[str, ...] = tuple(task.name for task in THREE_D_RAD_TASKS)


def _key(text: str) -> str:
    return " ".join(text.replace("_", " ").replace("-", " ").lower().split())


_TASK_ALIASES: dict[str, str] = {}
for _task in THREE_D_RAD_TASKS:
    _folder_words = _task.folder.split("_", 1)[1]  # "Existence_Detection"
    for _alias in (
        str(_task.number),
        f"task{_task.number}",
        f"task {_task.number}",
        _task.folder,
        _folder_words,
        _task.name,
    ):
        _TASK_ALIASES[_key(_alias)] = _task.name
_TASK_ALIASES[_key("Medical Computation")] = "Medical Measurement"


def canonical_task(task: str | int) -> str:
    """The Table 1 name of a 3D-RAD task given its number, folder or name; other tasks unchanged.

    ``4``, ``"Task4_Existence_Detection"``, ``"existence detection"`` -> ``"Existence Detection"``;
    ``"Task3_Medical_Computation"`` -> ``"Medical Measurement"``. Bare numbers are read as 3D-RAD
    task numbers.
    """
    text = str(task).strip()
    return _TASK_ALIASES.get(_key(text), text)


@dataclass(frozen=True)
class EvalRecord:
    """One answered question, as ``photon eval`` collects it.

    ``question_type``: ``"open"`` (BLEU-1, ROUGE-1, BERTScore), ``"closed"`` (both accuracy
    rules; 3D-RAD's ``"Close"`` is accepted) or ``"numeric"`` (MRA). ``reference`` is the answer
    text (for closed questions the text of the right choice). ``choices``: the choice texts in
    letter order, or a ``{"A": text, ...}`` mapping; 3D-RAD's ``"-"`` placeholders are dropped.
    ``answer_letter`` is derived from the choices when missing. ``grounding`` is the fraction of
    lesion voxels covered by kept tokens, where known (phantoms).
    """

    task: str
    subtask: str
    question_type: str
    prediction: str
    reference: str
    choices: tuple[str, ...] | Mapping[str, str] = ()
    answer_letter: str | None = None
    tokens_kept: int | None = None
    tokens_total: int | None = None
    latency_s: float | None = None
    grounding: float | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        kind = _QUESTION_TYPES.get(str(self.question_type).strip().lower())
        if kind is None:
            raise PhotonInputError(
                f"question type {self.question_type!r} is not known; use one of: open, closed (or Close), numeric"
            )
        object.__setattr__(self, "question_type", kind)
        object.__setattr__(self, "task", "(no task)" if self.task is None else str(self.task))
        object.__setattr__(self, "subtask", "" if self.subtask is None else str(self.subtask))
        if isinstance(self.choices, Mapping):
            lettered = {str(key).strip().upper(): text for key, text in self.choices.items() if _is_choice(text)}
        else:
            lettered = dict(zip(CHOICE_LETTERS, self.choices))
            lettered = {key: text for key, text in lettered.items() if _is_choice(text)}
        object.__setattr__(self, "choices", tuple(str(text) for text in lettered.values()))
        letter = normalize_letter(self.answer_letter)
        if letter is None and kind == CLOSED:
            letter = answer_letter_for(self.reference, lettered)
        object.__setattr__(self, "answer_letter", letter)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> EvalRecord:
        """From a dict with the field names above; ``answer`` and ``answer_choice`` (the dataset
        readers' names) are read as ``reference`` and ``answer_letter``. Other keys go to ``extra``."""
        values = dict(values)
        for alias, name in (("answer", "reference"), ("answer_choice", "answer_letter")):
            if alias in values and name not in values:
                values[name] = values.pop(alias)
        known = {name for name in cls.__dataclass_fields__ if name != "extra"}
        missing = {"task", "question_type", "prediction", "reference"} - set(values)
        if missing:
            raise PhotonInputError(f"an evaluation record needs {sorted(missing)}; got keys {sorted(values)}")
        arguments = {name: values[name] for name in known if name in values}
        arguments.setdefault("subtask", None)
        arguments["choices"] = values.get("choices") or ()
        extra = dict(values.get("extra") or {})
        extra.update({key: value for key, value in values.items() if key not in known and key != "extra"})
        return cls(**arguments, extra=extra)

    @classmethod
    def from_sample(
        cls,
        sample: Any,
        prediction: str,
        tokens_kept: int | None = None,
        tokens_total: int | None = None,
        latency_s: float | None = None,
        grounding: float | None = None,
    ) -> EvalRecord:
        """From a dataset sample (``photonlib.data.VQASample`` or anything with its attributes).

        Open questions whose ``extra["answer_type"]`` is ``"numeric"`` (DeepTumorVQA
        measurements) are scored with MRA.
        """
        extra = dict(getattr(sample, "extra", None) or {})
        question_type = getattr(sample, "question_type", "open")
        if question_type == OPEN and extra.get("answer_type") == NUMERIC:
            question_type = NUMERIC
        return cls(
            task=getattr(sample, "task", None),
            subtask=getattr(sample, "subtask", None),
            question_type=question_type,
            prediction=prediction,
            reference=sample.answer,
            choices=getattr(sample, "choices", None) or (),
            answer_letter=getattr(sample, "answer_choice", None),
            tokens_kept=tokens_kept,
            tokens_total=tokens_total,
            latency_s=latency_s,
            grounding=grounding,
            extra=extra,
        )


def _is_choice(choice: Any) -> bool:
    # 3D-RAD fills unused choice columns with "-".
    return choice is not None and str(choice).strip() not in {"", "-"}


# ---------------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------------

OPEN_METRICS = ("bleu1", "rouge1", "meteor", "bertscore_f1")
CLOSED_METRICS = ("accuracy_letter_rule", "accuracy_exact_match", "accuracy_strict")
NUMERIC_METRICS = ("mra",)
ALL_METRICS = (*CLOSED_METRICS, *OPEN_METRICS, *NUMERIC_METRICS)


@dataclass
class _Scored:
    """Per-sample values, and the texts each open answer was scored on (for corpus BLEU)."""

    samples: list[dict[str, float]]
    open_texts: dict[int, tuple[str, str]]
    meteor_unavailable: str | None


def _open_text(prediction: str, rules: RuleSet) -> str | None:
    """The answer as the rule set's scorer sees it; None when it leaves the answer out."""
    if not prediction.strip():
        return None if rules.empty_open == "drop" else ("nan" if rules.empty_open == "nan" else "")
    return as_read_back_by_pandas(prediction) if rules.csv_read_back else prediction.strip()


def _score(
    records: Sequence[EvalRecord], rules: RuleSet, bertscore_model: BertScoreModel | None, compute_bertscore: bool
) -> _Scored:
    scores: list[dict[str, float]] = [{} for _ in records]
    open_texts: dict[int, tuple[str, str]] = {}
    for index, record in enumerate(records):
        sample = scores[index]
        is_rad_task = canonical_task(record.task) in TABLE1_ORDER
        scored_open = record.question_type == OPEN or (
            record.question_type == CLOSED and canonical_task(record.task) in rules.open_scored_tasks
        )
        if record.question_type == OPEN and rules.closed_rule == "photon" and record.extra.get("answer_type") == "text":
            # The Photon release grades DeepTumorVQA's non-numeric free text by equality.
            sample["accuracy_strict"] = float(metric_functions.strict_match_hit(record.prediction, record.reference))
        elif scored_open:
            if not record.reference.strip():
                raise PhotonInputError(
                    f"record {index} ({record.task} / {record.subtask}): open question with an empty reference"
                )
            prediction = _open_text(record.prediction, rules)
            if prediction is None:
                continue
            reference = as_read_back_by_pandas(record.reference) if rules.csv_read_back else record.reference.strip()
            open_texts[index] = (prediction, reference)
            if rules.bleu == "sentence":
                sample["bleu1"] = metric_functions.bleu1(prediction, reference)
            sample["rouge1"] = metric_functions.rouge1(prediction, reference)
        elif record.question_type == CLOSED:
            if rules.closed_rule == "letter":
                if record.answer_letter is not None:
                    sample["accuracy_letter_rule"] = float(
                        metric_functions.letter_rule_hit(record.prediction, record.answer_letter)
                    )
            elif is_rad_task:
                hit = metric_functions.photon_exact_match_hit(record.prediction, record.reference)
                sample["accuracy_exact_match"] = float(hit)
            else:
                sample["accuracy_strict"] = float(
                    metric_functions.strict_match_hit(record.prediction, record.reference)
                )
        else:
            try:
                if rules.mra == "photon":
                    sample["mra"] = metric_functions.photon_mean_relative_accuracy(record.prediction, record.reference)
                else:
                    sample["mra"] = metric_functions.mean_relative_accuracy(record.prediction, record.reference)
            except ValueError as error:
                raise PhotonInputError(f"record {index} ({record.task} / {record.subtask}): {error}") from error
    indices = list(open_texts)
    meteor_unavailable = None
    if rules.meteor and indices:
        meteor_unavailable = metric_functions.meteor_unavailable_reason()
        if meteor_unavailable is None:
            values = metric_functions.meteor([open_texts[i][0] for i in indices], [open_texts[i][1] for i in indices])
            for index, value in zip(indices, values):
                scores[index]["meteor"] = value
    if compute_bertscore and indices:
        f1 = metric_functions.bertscore_f1(
            [open_texts[i][0] for i in indices], [open_texts[i][1] for i in indices], model=bertscore_model
        )
        for index, value in zip(indices, f1):
            scores[index]["bertscore_f1"] = value
    return _Scored(scores, open_texts, meteor_unavailable)


def score_records(
    records: Sequence[EvalRecord],
    bertscore_model: BertScoreModel | None = None,
    compute_bertscore: bool = True,
    rules: str | RuleSet | None = None,
) -> list[dict[str, float]]:
    """Per-sample metric values under a rule set (one dict per record; metrics that do not
    apply are absent). With a corpus-BLEU rule set BLEU-1 is not a per-sample value: it is
    made per subtask by ``build_results``."""
    return _score(records, get_rule_set(rules), bertscore_model, compute_bertscore).samples


def _mean(values: Iterable[float]) -> float | None:
    values = list(values)
    return sum(values) / len(values) if values else None


def _aggregate(groups: Sequence[Mapping[str, float | None]]) -> dict[str, float]:
    """Unweighted mean of each metric over the groups that have it."""
    result: dict[str, float] = {}
    for name in ALL_METRICS:
        value = _mean(group[name] for group in groups if group.get(name) is not None)
        if value is not None:
            result[name] = value
    return result


def _distribution(values: Sequence[float], bins: int = 10) -> dict[str, Any] | None:
    if not values:
        return None
    array = np.asarray(values, dtype=float)
    counts, edges = np.histogram(array, bins=bins)
    return {
        "count": int(array.size),
        "mean": float(array.mean()),
        "median": float(np.median(array)),
        "p10": float(np.percentile(array, 10)),
        "p90": float(np.percentile(array, 90)),
        "min": float(array.min()),
        "max": float(array.max()),
        "histogram": {"bin_edges": [float(edge) for edge in edges], "counts": [int(count) for count in counts]},
    }


def _task_order(names: Iterable[str]) -> list[str]:
    """Table 1 tasks in the paper's order, then the others in order of appearance."""
    seen = list(dict.fromkeys(names))
    return [name for name in TABLE1_ORDER if name in seen] + [name for name in seen if name not in TABLE1_ORDER]


def build_results(
    records: Sequence[EvalRecord | Mapping[str, Any]],
    run_name: str = "run",
    bertscore_model: str | BertScoreModel | None = None,
    compute_bertscore: bool = True,
    include_samples: bool = False,
    rules: str | RuleSet | None = None,
) -> dict[str, Any]:
    """Score the records under a rule set and aggregate them as its scorer does; returns a
    JSON-able dict that names the rule set (``"rule_set"``).

    ``rules``: ``"photon"`` (the default), ``"3d-rad"`` or ``"m3d"`` (``photonlib.evaluation.rules``).
    Per subtask: mean over its samples, or one corpus BLEU-1 where the rule set says so. Per
    task: unweighted mean over its subtasks. Overall: unweighted mean over the tasks that have
    the metric. ``bertscore_model``: ``None`` for the offline default (all-MiniLM-L6-v2),
    ``"roberta-large"`` or a local folder (see ``metrics.resolve_bertscore_model``);
    ``compute_bertscore=False`` leaves BERTScore out.
    """
    rule_set = get_rule_set(rules)
    records = [record if isinstance(record, EvalRecord) else EvalRecord.from_mapping(record) for record in records]
    has_open = any(
        record.question_type == OPEN or canonical_task(record.task) in rule_set.open_scored_tasks for record in records
    )
    model = metric_functions.resolve_bertscore_model(bertscore_model) if compute_bertscore and has_open else None
    scored = _score(records, rule_set, model, compute_bertscore)
    scores = scored.samples

    grouped: dict[str, dict[str, list[int]]] = {}
    for index, record in enumerate(records):
        grouped.setdefault(canonical_task(record.task), {}).setdefault(record.subtask, []).append(index)

    tasks: dict[str, Any] = {}
    for task in _task_order(grouped):
        subtasks: dict[str, Any] = {}
        for subtask, indices in grouped[task].items():
            subtask_metrics = {
                name: value
                for name in ALL_METRICS
                if (value := _mean(scores[index][name] for index in indices if name in scores[index])) is not None
            }
            open_pairs = [scored.open_texts[index] for index in indices if index in scored.open_texts]
            if rule_set.bleu == "corpus" and open_pairs:
                subtask_metrics["bleu1"] = metric_functions.corpus_bleu1(
                    [prediction for prediction, _ in open_pairs], [reference for _, reference in open_pairs]
                )
            subtasks[subtask] = {
                "num_samples": len(indices),
                "metrics": {name: subtask_metrics[name] for name in ALL_METRICS if name in subtask_metrics},
            }
        indices = [index for group in grouped[task].values() for index in group]
        tasks[task] = {
            "question_types": sorted({records[index].question_type for index in indices}),
            "num_samples": len(indices),
            "num_subtasks": len(subtasks),
            "metrics": _aggregate([entry["metrics"] for entry in subtasks.values()]),
            "subtasks": subtasks,
        }

    kept = [float(record.tokens_kept) for record in records if record.tokens_kept is not None]
    totals = [float(record.tokens_total) for record in records if record.tokens_total is not None]
    ratios = [
        record.tokens_kept / record.tokens_total
        for record in records
        if record.tokens_kept is not None and record.tokens_total
    ]
    latencies = [float(record.latency_s) for record in records if record.latency_s is not None]
    grounding = [float(record.grounding) for record in records if record.grounding is not None]

    results: dict[str, Any] = {
        "schema": RESULTS_SCHEMA,
        "run": run_name,
        "num_samples": len(records),
        "tasks": tasks,
        "overall": {
            "num_samples": len(records),
            "metrics": _aggregate([entry["metrics"] for entry in tasks.values()]),
        },
        "tokens_kept": _distribution(kept),
        "keep_ratio": _distribution(ratios),
        "tokens_total": _distribution(totals),
        "latency_s": _distribution(latencies),
        "grounding": _distribution(grounding),
        "empty_predictions": sum(1 for record in records if not record.prediction.strip()),
        "closed_without_letter": sum(
            1 for record in records if record.question_type == CLOSED and record.answer_letter is None
        ),
        "rule_set": rule_set.describe(),
        "meteor": None
        if not rule_set.meteor
        else {
            "computed": scored.meteor_unavailable is None and bool(scored.open_texts),
            "reason": scored.meteor_unavailable,
        },
        "bertscore": model.describe()
        if model is not None
        else {"computed": False, "note": "no open questions" if not has_open else "not requested"},
        "metric_definitions": {
            **metric_functions.METRIC_DEFINITIONS,
            "aggregation": (
                f"Per subtask: {'one corpus BLEU-1 over its answers' if rule_set.bleu == 'corpus' else 'mean over its samples'}"
                f"{' (other metrics: mean over its samples)' if rule_set.bleu == 'corpus' else ''}. Per task: unweighted "
                "mean over its subtasks (as the 3D-RAD benchmark). Overall: unweighted mean over the tasks that have the "
                "metric."
            ),
        },
        "packages": metric_functions.package_versions(),
    }
    if is_phantom_run(records):
        results["phantom"] = phantom_figures(records)
    if include_samples:
        results["samples"] = [
            {
                "task": canonical_task(record.task),
                "subtask": record.subtask,
                "question_type": record.question_type,
                "prediction": record.prediction,
                "reference": record.reference,
                "answer_letter": record.answer_letter,
                "metrics": scores[index],
            }
            for index, record in enumerate(records)
        ]
    return results


def save_results(results: Mapping[str, Any], path: str | Path) -> Path:
    """Write results as strict JSON (no NaN), creating the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, allow_nan=False) + "\n")
    return path


# ---------------------------------------------------------------------------------------------
# Markdown table
# ---------------------------------------------------------------------------------------------

METRIC_LABELS: dict[str, str] = {
    "accuracy_letter_rule": 'Accuracy ("X." rule)',
    "accuracy_exact_match": "Accuracy (exact match)",
    "accuracy_strict": "Accuracy (exact string)",
    "bleu1": "BLEU",
    "rouge1": "ROUGE",
    "meteor": "METEOR",
    "bertscore_f1": "BERT Score",
    "mra": "MRA",
}

ACCURACY_RULES = {
    "letter_rule": "accuracy_letter_rule",
    "exact_match": "accuracy_exact_match",
    "strict": "accuracy_strict",
}

MISSING = "—"

# The phantom figures (photonlib.evaluation.phantom_figures) shown under the table.
PHANTOM_ROWS = (
    ("existence_accuracy", "existence answered right"),
    ("organ_accuracy", "lesion organ named right"),
    ("size_within_5mm", "diameter within 5 mm"),
)


def _percent(value: float | None) -> str:
    return MISSING if value is None or not math.isfinite(value) else f"{100.0 * value:.2f}"


def _number(value: float | None, decimals: int) -> str:
    return MISSING if value is None or not math.isfinite(value) else f"{value:.{decimals}f}"


def _statistic(results: Mapping[str, Any], key: str, statistic: str = "mean") -> float | None:
    entry = results.get(key)
    return None if not entry else entry.get(statistic)


def rule_set_line(labels: Sequence[str], runs: Sequence[Mapping[str, Any]]) -> str:
    """``Scored with rule set `photon` (default; Photon release): ...`` for the runs' rule sets."""
    by_rule_set: dict[str, list[str]] = {}
    described: dict[str, Mapping[str, Any]] = {}
    for label, run in zip(labels, runs):
        rule_set = run.get("rule_set") or {}
        name = rule_set.get("name", "not recorded (results written before rule sets)")
        by_rule_set.setdefault(name, []).append(label)
        described[name] = rule_set
    parts = []
    for name, run_labels in by_rule_set.items():
        rule_set = described[name]
        if not rule_set:
            parts.append(f"rule set {name}")
            continue
        default = "default; " if rule_set.get("default") else ""
        where = f" for {', '.join(run_labels)}" if len(by_rule_set) > 1 else ""
        parts.append(
            f"rule set `{name}` ({default}{rule_set.get('title', name)}){where}, reproducing "
            f"{rule_set.get('reproduces', '')} ({'; '.join(rule_set.get('sources', []))})"
        )
    return "Scored with " + "; ".join(parts) + "."


def markdown_table(
    runs: Mapping[str, Any] | Sequence[Mapping[str, Any]],
    labels: Sequence[str] | None = None,
    accuracy_rules: Sequence[str] | None = None,
) -> str:
    """A Markdown table shaped like the paper's Table 1, one column per run, under a line that
    names the rule set each run was scored with.

    Rows: each task with the metrics its runs have (accuracy under the rule set's closed rule;
    BLEU, ROUGE, METEOR, BERT Score for questions scored as open; MRA), in the paper's task
    order, then tokens kept (mean per case and % of the volume's tokens), latency and, when
    present, grounding. ``accuracy_rules`` keeps only the named accuracy metrics
    (``letter_rule``, ``exact_match``, ``strict``; default all). Metrics are percentages with
    two decimals; a run without a value shows "—". Notes below the table say what each
    accuracy rule is and which BERTScore model each run used.
    """
    runs = [runs] if isinstance(runs, Mapping) else list(runs)
    if not runs:
        raise ValueError("markdown_table needs at least one results dict")
    labels = list(labels) if labels is not None else [str(run.get("run", f"run {i + 1}")) for i, run in enumerate(runs)]
    if len(labels) != len(runs):
        raise ValueError(f"{len(labels)} labels for {len(runs)} runs")
    rules = tuple(ACCURACY_RULES) if accuracy_rules is None else tuple(accuracy_rules)
    unknown = set(rules) - set(ACCURACY_RULES)
    if unknown:
        raise ConfigurationError(f"unknown accuracy rules {sorted(unknown)}; use {sorted(ACCURACY_RULES)}")
    shown = [name for name in ALL_METRICS if name not in CLOSED_METRICS or name in {ACCURACY_RULES[r] for r in rules}]
    meteor_expected = any((run.get("rule_set") or {}).get("meteor") for run in runs)

    header = ["Task", "Metric", *labels]
    rows: list[list[str]] = []
    used: set[str] = set()
    tasks = _task_order(name for run in runs for name in run.get("tasks", {}))
    for task in tasks:
        present = {name for run in runs for name in run.get("tasks", {}).get(task, {}).get("metrics", {})}
        if meteor_expected and present & {"bleu1", "rouge1"}:
            present.add("meteor")  # shown as "—" where METEOR could not run, so the gap is visible
        metric_names = [name for name in shown if name in present]
        used.update(metric_names)
        for position, name in enumerate(metric_names):
            cells = [_percent(run.get("tasks", {}).get(task, {}).get("metrics", {}).get(name)) for run in runs]
            rows.append([task if position == 0 else "", METRIC_LABELS[name], *cells])

    efficiency = [
        ("Tokens kept", "mean per case", [_number(_statistic(run, "tokens_kept"), 1) for run in runs]),
        ("Tokens kept", "% of volume tokens", [_percent(_statistic(run, "keep_ratio")) for run in runs]),
        ("Latency", "mean s per case", [_number(_statistic(run, "latency_s"), 3) for run in runs]),
        ("Latency", "median s per case", [_number(_statistic(run, "latency_s", "median"), 3) for run in runs]),
        ("Grounding", "lesion voxels covered", [_percent(_statistic(run, "grounding")) for run in runs]),
        *(
            ("Phantom facts", label, [_percent((run.get("phantom") or {}).get(key)) for run in runs])
            for key, label in PHANTOM_ROWS
        ),
    ]
    previous_group = None
    for group, metric_cell, cells in efficiency:
        if all(cell == MISSING for cell in cells):
            continue  # e.g. no grounding outside phantoms
        rows.append([group if group != previous_group else "", metric_cell, *cells])
        previous_group = group

    lines = [
        rule_set_line(labels, runs),
        "",
        "| " + " | ".join(header) + " |",
        "| " + " | ".join(["---", "---", *["---:"] * len(runs)]) + " |",
        *("| " + " | ".join(row) + " |" for row in rows),
    ]

    notes = []
    if "accuracy_letter_rule" in used:
        notes.append(
            'Accuracy ("X." rule): the 3D-RAD and M3D scorers\' rule, a hit when the answer letter and a full stop '
            '(e.g. "B.") appear anywhere in the output (case-sensitive).'
        )
    if "accuracy_exact_match" in used:
        notes.append(
            "Accuracy (exact match): the Photon release's rule, the whole output equals the answer text after "
            'collapsing whitespace and lower-casing; punctuation counts ("Yes." is not "yes").'
        )
    if "accuracy_strict" in used:
        notes.append("Accuracy (exact string): the Photon release's DeepTumorVQA rule, output == answer text.")
    if "bleu1" in used:
        kinds = {(run.get("rule_set") or {}).get("bleu") for run in runs}
        if "corpus" in kinds:
            notes.append("BLEU (corpus rule sets): one BLEU-1 per subtask over its pooled unigram counts and lengths.")
        if "sentence" in kinds:
            notes.append("BLEU (sentence rule sets): the mean of each answer's own BLEU-1.")
    for label, run in zip(labels, runs):
        reason = (run.get("meteor") or {}).get("reason")
        if reason:
            notes.append(f"METEOR ({label}): {reason}.")
    models = {}
    for label, run in zip(labels, runs):
        bertscore = run.get("bertscore") or {}
        if bertscore.get("name"):
            models.setdefault(
                (bertscore["name"], bertscore.get("num_layers"), bertscore.get("comparable_to_paper")), []
            ).append(label)
    for (name, layer, comparable), run_labels in models.items():
        remark = "as the paper" if comparable else "not comparable with the paper's roberta-large (layer 17) numbers"
        notes.append(f"BERT Score: {name} layer {layer} ({', '.join(run_labels)}); {remark}.")
    notes.append("Metrics in %; tasks: unweighted mean over subtasks.")
    return "\n".join(lines) + "\n\n" + "\n".join(f"- {note}" for note in notes) + "\n"
