"""The language-stage pruners: ITS (Photon's method), no pruning, and random-k at the ITS layer."""

from __future__ import annotations

import torch

from photonlib.errors import ConfigurationError
from photonlib.model.pruning.budget import check_budget, kept_count
from photonlib.model.pruning.interface import LanguageStageInputs, Stage, TokenSelection
from photonlib.model.pruning.its import ThresholdPredictor, instruction_weighted_scores, keep_probability

#: ITS score precision: ``model`` rounds the visual scores and the threshold to the model's dtype
#: as the release does; ``float32`` keeps them exact (the same on a float32 model).
SCORE_PRECISIONS = ("model", "float32")


class InstructionTokenScheduler:
    """ITS: the learned, question-dependent, variable-count selection (see ``its.py``)."""

    name = "its"
    stage: Stage = "language"

    def __init__(self, predictor: ThresholdPredictor, temperature: float, score_precision: str = "float32") -> None:
        if score_precision not in SCORE_PRECISIONS:
            raise ConfigurationError(f"ITS score precision must be one of {', '.join(SCORE_PRECISIONS)}, got {score_precision!r}")
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
        self.budget = check_budget("the random pruner", budget)
        self.generator = torch.Generator().manual_seed(seed)

    def select(self, inputs: LanguageStageInputs) -> TokenSelection:
        batch, visual = _visual_shape(inputs.visual_mask)
        kept = kept_count(visual, self.budget)
        ranks = torch.rand((batch, visual), generator=self.generator).argsort(dim=1).argsort(dim=1)
        keep = (ranks < kept).to(inputs.visual_mask.device)
        return TokenSelection(keep_probability=keep.float(), keep=keep)


def _visual_shape(visual_mask: torch.Tensor) -> tuple[int, int]:
    counts = visual_mask.sum(dim=1)
    return visual_mask.shape[0], int(counts.max()) if counts.numel() else 0
