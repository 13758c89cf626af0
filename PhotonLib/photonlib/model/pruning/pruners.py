"""One small interface for every way of choosing visual tokens, so benchmarks can swap them by name.

A :class:`TokenPruner` acts at one ``stage``:

* ``"language"``: inside the language model after decoder layer k (ITS, random-k); it sees that
  layer's queries/keys and returns a keep decision per visual token.
* ``"vision"``: before the language model, on the vision encoder's output (fixed-budget
  VisionZip- and HiPrune-style pruning).

Whatever the stage, a pruner returns a :class:`TokenSelection`: the keep probability and the
keep decision of every visual token, in the (t, h, w) order of the token grid. That is what the
model reports per sample and what the Slicer heatmap shows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

import torch

from photonlib.model.pruning.its import ThresholdPredictor, instruction_weighted_scores, keep_probability

Stage = Literal["language", "vision"]


@dataclass
class LanguageStageInputs:
    """What a language-stage pruner may look at (all batch-first)."""

    instruction_queries: list[torch.Tensor]  # per sample (heads, T, d): layer k's post-RoPE queries of its instruction
    keys: torch.Tensor  # (B, kv_heads, L, d) of layer k, after RoPE (grouped-query: not repeated)
    instruction_mask: torch.Tensor  # (B, L)
    visual_mask: torch.Tensor  # (B, L)

    @classmethod
    def from_queries(
        cls, queries: torch.Tensor, keys: torch.Tensor, instruction_mask: torch.Tensor, visual_mask: torch.Tensor
    ) -> LanguageStageInputs:
        """From every token's queries (B, heads, L, d): the instruction rows are taken out."""
        rows = [queries[sample][:, instruction_mask[sample]] for sample in range(queries.shape[0])]
        return cls(instruction_queries=rows, keys=keys, instruction_mask=instruction_mask, visual_mask=visual_mask)


@dataclass
class VisionStageInputs:
    """What a vision-stage pruner receives after the vision tower ran inside its ``observe``."""

    visual_embeddings: list[torch.Tensor]  # per sample (V, D), merged tokens in (t, h, w) order
    token_grids: torch.Tensor  # (B, 3)


@dataclass
class TokenSelection:
    keep_probability: torch.Tensor  # (B, V) float32; carries gradient for learnable pruners
    keep: torch.Tensor  # (B, V) bool
    # Vision-stage pruners may rewrite the embeddings of kept tokens (VisionZip's merged
    # contextual tokens): per sample (V, D), only the kept rows matter.
    embeddings: list[torch.Tensor] | None = None
    # ITS's raw visual scores (B, V) with their gradient, only when the scheduler was asked for
    # them (``score_gradient``, for a training term on the scores; the release has none).
    scores: torch.Tensor | None = None


@runtime_checkable
class TokenPruner(Protocol):
    """``select`` receives :class:`LanguageStageInputs` or :class:`VisionStageInputs` by stage.

    Vision-stage pruners also provide ``observe(vision_model)``, a context manager active while
    the vision tower runs, to record what they need from inside it (e.g. attention received).
    """

    name: str
    stage: Stage

    def select(self, inputs: LanguageStageInputs | VisionStageInputs) -> TokenSelection: ...


#: ITS score precision: ``model`` rounds the visual scores and the threshold to the model's dtype
#: as the release does; ``float32`` keeps them exact (the same on a float32 model).
SCORE_PRECISIONS = ("model", "float32")


class InstructionTokenScheduler:
    """ITS: the learned, question-dependent, variable-count selection (see ``its.py``)."""

    name = "its"
    stage: Stage = "language"

    def __init__(self, predictor: ThresholdPredictor, temperature: float, score_precision: str = "float32") -> None:
        if score_precision not in SCORE_PRECISIONS:
            raise ValueError(f"ITS score precision must be one of {', '.join(SCORE_PRECISIONS)}, got {score_precision!r}")
        self.predictor = predictor
        self.temperature = temperature
        self.score_precision = score_precision
        # As released the scores carry no gradient. True (a training setting, see
        # training.config.GroundingLoss): the scoring inputs are computed with their gradient
        # and the selection returns the scores with it; the decision itself is unchanged.
        self.score_gradient = False

    def wants_score_gradient(self) -> bool:
        return self.score_gradient and torch.is_grad_enabled()

    def select(self, inputs: LanguageStageInputs) -> TokenSelection:
        with torch.set_grad_enabled(self.wants_score_gradient()):
            scores = instruction_weighted_scores(
                inputs.instruction_queries, inputs.keys, inputs.instruction_mask, inputs.visual_mask
            )
        raw = scores.detach()
        rounding = inputs.keys.dtype if self.score_precision == "model" else torch.float32
        # As released: the fp32 scores are cast back to the model's dtype (bf16) before the
        # threshold and the comparison; tokens close to the threshold can flip against fp32.
        raw = raw.to(rounding).float()
        threshold = self.predictor(raw, sigmoid_dtype=rounding)
        probability = keep_probability(raw, threshold, self.temperature)
        return TokenSelection(
            keep_probability=probability, keep=probability > 0.5, scores=scores if scores.requires_grad else None
        )


class KeepAll:
    """No pruning: every visual token stays (probability 1)."""

    name = "none"
    stage: Stage = "language"

    def select(self, inputs: LanguageStageInputs) -> TokenSelection:
        batch, visual = _visual_shape(inputs.visual_mask)
        ones = torch.ones((batch, visual), dtype=torch.float32, device=inputs.visual_mask.device)
        return TokenSelection(keep_probability=ones, keep=ones.bool())


class RandomTokens:
    """Random-k at the ITS layer: a fixed fraction of visual tokens, chosen uniformly (seeded)."""

    name = "random"
    stage: Stage = "language"

    def __init__(self, budget: float, seed: int = 0) -> None:
        if not 0 < budget <= 1:
            raise ValueError(f"random pruning needs a kept fraction in (0, 1], got {budget}")
        self.budget = budget
        self.generator = torch.Generator().manual_seed(seed)

    def select(self, inputs: LanguageStageInputs) -> TokenSelection:
        batch, visual = _visual_shape(inputs.visual_mask)
        kept = max(1, round(visual * self.budget))
        ranks = torch.rand((batch, visual), generator=self.generator).argsort(dim=1).argsort(dim=1)
        keep = (ranks < kept).to(inputs.visual_mask.device)
        return TokenSelection(keep_probability=keep.float(), keep=keep)


def _visual_shape(visual_mask: torch.Tensor) -> tuple[int, int]:
    counts = visual_mask.sum(dim=1)
    return visual_mask.shape[0], int(counts.max()) if counts.numel() else 0


PRUNER_NAMES = ("its", "none", "random", "visionzip", "hiprune")


def build_pruner(
    name: str, predictor: ThresholdPredictor, temperature: float, budget: float | None, score_precision: str = "float32"
) -> TokenPruner:
    """The pruner called ``name``; fixed-budget pruners need ``budget`` (kept fraction)."""
    if name == "its":
        return InstructionTokenScheduler(predictor, temperature, score_precision)
    if name == "none":
        return KeepAll()
    if name == "random":
        if budget is None:
            raise ValueError("the random pruner needs pruning_budget (kept fraction of visual tokens)")
        return RandomTokens(budget)
    if name in ("visionzip", "hiprune"):
        # Imported here: the baselines module builds on the types defined above.
        from photonlib.model.pruning.baselines import HiPrunePruner, VisionZipPruner

        if budget is None:
            raise ValueError(f"the {name} pruner needs pruning_budget (kept fraction of visual tokens, e.g. 0.5)")
        return VisionZipPruner(budget) if name == "visionzip" else HiPrunePruner(budget)
    raise ValueError(f"unknown pruner {name!r}; known: {', '.join(PRUNER_NAMES)}")
