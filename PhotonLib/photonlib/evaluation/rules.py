"""Named rule sets: which metrics a question gets and how a subtask's number is made, each
reproducing one official scorer on the same predictions (docs/evaluation.md).

- ``photon`` (the default): the Photon release's scripts, which produced the paper's Table 1
  that ``photon eval``'s table is shaped after. Existence Detection and the temporal tasks are
  closed, scored by lower-cased whole-string equality; open tasks get one corpus BLEU-1 per
  subtask, ROUGE-1, BERTScore.
- ``3d-rad``: the 3D-RAD benchmark's own scorer. Existence Detection is scored as an open
  question (BLEU-1, ROUGE-1, BERTScore against "Yes"/"No"); the temporal tasks by the letter
  rule; corpus BLEU-1 per subtask; empty outputs dropped before scoring.
- ``m3d``: M3D's scorer. Every answer scored alone (sentence BLEU-1, ROUGE-1, METEOR, BERTScore,
  then the mean); closed questions by the letter rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from photonlib.errors import ConfigurationError

# What pandas.read_csv reads as NaN by default (pandas' STR_NA_VALUES): the 3D-RAD and Photon
# scorers read predictions back from a CSV with pandas and then take str(value), so such a field
# becomes the text "nan".
PANDAS_NA_STRINGS = frozenset(
    {"", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>", "N/A", "NA",
     "NULL", "NaN", "None", "n/a", "nan", "null"}
)  # fmt: skip


def as_read_back_by_pandas(field: str) -> str:
    """``str(value).strip()`` of a CSV field as ``pandas.read_csv`` returns it: a field that is
    one of pandas' NA strings (compared unstripped, as pandas does) becomes ``"nan"``."""
    return "nan" if field in PANDAS_NA_STRINGS else field.strip()


@dataclass(frozen=True)
class RuleSet:
    """How one official scorer grades answers.

    ``bleu``: ``"corpus"`` is one BLEU-1 over a subtask's pooled counts, ``"sentence"`` the mean
    of per-answer BLEU-1. ``open_scored_tasks``: 3D-RAD tasks whose closed questions this scorer
    grades as open ones. ``closed_rule``: ``"letter"`` (``"B."`` in the output) or ``"photon"``
    (lower-cased whole-string equality on 3D-RAD tasks, exact equality elsewhere).
    ``empty_open``: what happens to an empty answer to an open question: ``"drop"`` (left out),
    ``"nan"`` (read back as the text "nan"), ``"zero"`` (scores 0). ``csv_read_back``: the
    scorer reads answers back with pandas (:func:`as_read_back_by_pandas`).
    """

    name: str
    title: str
    reproduces: str
    sources: tuple[str, ...]
    bleu: Literal["corpus", "sentence"]
    closed_rule: Literal["letter", "photon"]
    empty_open: Literal["drop", "nan", "zero"]
    open_scored_tasks: frozenset[str] = frozenset()
    meteor: bool = False
    csv_read_back: bool = False
    mra: Literal["deeptumorvqa", "photon"] = "deeptumorvqa"
    notes: tuple[str, ...] = ()

    def describe(self) -> dict[str, Any]:
        """JSON-able record of the rule set, for results files."""
        return {
            "name": self.name,
            "title": self.title,
            "default": self.name == DEFAULT_RULE_SET,
            "reproduces": self.reproduces,
            "sources": list(self.sources),
            "bleu": self.bleu,
            "closed_rule": self.closed_rule,
            "empty_open_predictions": self.empty_open,
            "open_scored_tasks": sorted(self.open_scored_tasks),
            "meteor": self.meteor,
            "notes": list(self.notes),
        }


_ROUGE_NOTE = (
    "ROUGE-1 is the mean F-measure over the subtask; evaluate's rouge returns the median of 1000 unseeded "
    "bootstrap means instead, which moves from run to run around this mean."
)

RULE_SETS: dict[str, RuleSet] = {
    rules.name: rules
    for rules in (
        RuleSet(
            name="photon",
            title="Photon release",
            reproduces=(
                "the Photon release's 3D-RAD and DeepTumorVQA scorers: closed 3D-RAD questions (Existence Detection, "
                "temporal diagnosis) by lower-cased whole-string equality with the answer, punctuation kept; open "
                "questions by one corpus BLEU-1 per subtask, ROUGE-1 and BERTScore; DeepTumorVQA by exact equality "
                "and the release's MRA"
            ),
            sources=(
                "alibaba-damo-academy/Photon: evaluation/jsonl_results_to_csv.py",
                "alibaba-damo-academy/Photon: evaluation/evaluation.py",
                "alibaba-damo-academy/Photon: evaluation/multi-choice-evaluation.py",
                "alibaba-damo-academy/Photon: evaluation/free-text-evaluation.py",
            ),
            bleu="corpus",
            closed_rule="photon",
            empty_open="nan",
            csv_read_back=True,
            mra="photon",
            notes=(
                "An empty answer is written as an empty CSV field, which pandas reads back as the text 'nan'.",
                _ROUGE_NOTE,
            ),
        ),
        RuleSet(
            name="3d-rad",
            title="3D-RAD benchmark",
            reproduces=(
                "the 3D-RAD benchmark's scorer: Existence Detection as an open question (BLEU-1, ROUGE-1, BERTScore "
                "against the answer text), the temporal tasks by the letter rule, one corpus BLEU-1 per subtask, "
                "empty outputs dropped"
            ),
            sources=(
                "Tang-xiaoxiao/3D-RAD: evaluate_result.py",
                "Tang-xiaoxiao/3D-RAD: M3D/Bench/eval/eval_3DRAD.py",
                "Tang-xiaoxiao/3D-RAD: M3D/eval_3DRAD.sh",
            ),
            bleu="corpus",
            closed_rule="letter",
            empty_open="drop",
            open_scored_tasks=frozenset({"Existence Detection"}),
            csv_read_back=True,
            notes=(_ROUGE_NOTE,),
        ),
        RuleSet(
            name="m3d",
            title="M3D",
            reproduces=(
                "M3D's scorer: every answer scored alone (sentence BLEU-1, ROUGE-1, METEOR, BERTScore), then the "
                "mean; closed questions by the letter rule"
            ),
            sources=("BAAI-DCAI/M3D: Bench/eval/eval_vqa.py", "BAAI-DCAI/M3D: Bench/eval/eval_caption.py"),
            bleu="sentence",
            closed_rule="letter",
            empty_open="zero",
            meteor=True,
            notes=("An empty answer scores 0 (M3D's scorer would stop: evaluate's bleu divides by zero on it).",),
        ),
    )
}

#: The rule set used when none is named: the one behind the paper's Table 1.
DEFAULT_RULE_SET = "photon"


def get_rule_set(rules: str | RuleSet | None = None) -> RuleSet:
    """A rule set by name (``photon``, ``3d-rad``, ``m3d``; ``None``: the default)."""
    if isinstance(rules, RuleSet):
        return rules
    key = (rules or DEFAULT_RULE_SET).strip().lower().replace("_", "-")
    key = {"3drad": "3d-rad", "rad": "3d-rad"}.get(key, key)
    if key not in RULE_SETS:
        raise ConfigurationError(f"unknown rule set {rules!r}; use one of: {', '.join(RULE_SETS)}")
    return RULE_SETS[key]
