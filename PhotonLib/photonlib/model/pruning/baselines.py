"""The paper's fixed-budget baselines, VisionZip and HiPrune, as vision-stage token pruners.

Both rank the merged visual tokens by the attention they receive inside the vision tower
(:mod:`photonlib.model.pruning.vision_attention`: head-averaged, mean over the queries of each
attention segment, averaged over each 2 x 2 merge group) and keep ``round(V * budget)`` of the V
tokens of every volume (at least one); the rest never reach the language model. ``budget`` is
the kept fraction: the paper's 2.1K / 3.5K / 4.9K of 7.0K tokens are 0.3 / 0.5 / 0.7. A kept
token keeps its own (t, h, w) grid position, hence its M-RoPE position.

* :class:`VisionZipPruner` (scored at the last vision block): ``dominant`` tokens = the highest
  attention received; the remaining tokens are merged into ``contextual`` tokens. Targets are
  picked at a uniform stride among the remaining tokens (in (t, h, w) order, the i-th of C
  targets is remaining token ``floor(i * R / C)``); every other remaining token goes to its most
  cosine-similar target (L2-normalised pre-rotary keys of the last block, ties to the earlier
  target). The contextual token sits at its target's position and, as in the VisionZip release,
  its embedding is ``target + mean(assigned)`` (just the target when nothing was assigned);
  ``contextual_merge="mean"`` uses the mean over the target and its assigned tokens instead,
  which keeps the embedding's scale. Merging happens on the merger's output embeddings (the
  language model's input), the only place a merged token can be handed on.
  ``C = round(kept * contextual_fraction)`` (default 10/64, VisionZip's 54 dominant + 10
  contextual split of 64 tokens), at most ``kept - 1`` so at least one token is dominant.
* :class:`HiPrunePruner`: ``anchors`` = the top ``max(1, round(kept * anchor_fraction))`` tokens
  at a middle vision block (default: the full-attention block closest to the middle, block 15 of
  Qwen2.5-VL-3B's 32); ``buffers`` = their 4-neighbours in the token grid (same depth slab t,
  h +- 1 or w +- 1) that are not anchors, the highest middle-block scores first if they do not
  all fit; ``registers`` = the rest of the budget, filled with the top tokens at the last block.
  ``anchor_fraction`` defaults to 0.1 (our choice): anchors and buffers then take at most half
  of the budget, registers the other half or more.

Ranking is deterministic: scores sort descending with ties to the lower (t, h, w) index.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from photonlib.model.pruning.budget import check_budget, kept_count
from photonlib.model.pruning.interface import Stage, TokenSelection, VisionStageInputs
from photonlib.model.pruning.vision_attention import (
    VisionAttentionRecord,
    VisionAttentionRecorder,
    middle_vision_block,
)

CONTEXTUAL_MERGES = ("target_plus_mean", "mean")


def _ranked(scores: torch.Tensor, allowed: torch.Tensor | None = None) -> torch.Tensor:
    """Indices of the allowed tokens, highest score first, ties to the lower index."""
    scores = scores.float()
    if allowed is not None:
        scores = scores.masked_fill(~allowed, float("-inf"))
    order = torch.sort(scores, descending=True, stable=True).indices
    return order if allowed is None else order[: int(allowed.sum())]


# ----------------------------------------------------------------------------- VisionZip
@dataclass
class VisionZipChoice:
    """One volume's VisionZip selection (indices in (t, h, w) order)."""

    keep: torch.Tensor  # (V,) bool: dominant and contextual (target) tokens
    embeddings: torch.Tensor  # (V, D): contextual rows replaced by the merged embedding
    dominant: torch.Tensor  # (D_count,) token indices
    targets: torch.Tensor  # (C,) token indices of the contextual tokens
    merged: torch.Tensor  # (R - C,) remaining non-target token indices
    assignment: torch.Tensor  # (R - C,) position in ``targets`` each merged token went to


def visionzip_choice(
    embeddings: torch.Tensor,
    scores: torch.Tensor,
    keys: torch.Tensor,
    kept: int,
    contextual: int,
    contextual_merge: str = "target_plus_mean",
) -> VisionZipChoice:
    """Keep ``kept - contextual`` dominant tokens and merge the rest into ``contextual`` tokens.

    ``embeddings`` (V, D), ``scores`` (V,) attention received, ``keys`` (V, K) L2-normalised.
    """
    visual = embeddings.shape[0]
    if not 0 <= contextual < kept <= visual:
        raise ValueError(f"need 0 <= contextual ({contextual}) < kept ({kept}) <= visual tokens ({visual})")
    if contextual_merge not in CONTEXTUAL_MERGES:
        raise ValueError(f"contextual_merge must be one of {CONTEXTUAL_MERGES}, got {contextual_merge!r}")
    device = embeddings.device
    dominant = _ranked(scores)[: kept - contextual]
    keep = torch.zeros(visual, dtype=torch.bool, device=device)
    keep[dominant] = True
    remaining = torch.nonzero(~keep).squeeze(1)  # ascending (t, h, w) order
    merged_embeddings = embeddings.clone()
    empty = remaining.new_zeros(0)
    if contextual == 0:
        return VisionZipChoice(keep, merged_embeddings, dominant, empty, empty, empty)

    stride_positions = torch.arange(contextual, device=device) * remaining.numel() // contextual
    is_target = torch.zeros(remaining.numel(), dtype=torch.bool, device=device)
    is_target[stride_positions] = True
    targets, merged = remaining[is_target], remaining[~is_target]
    keep[targets] = True

    similarity = keys[merged].float() @ keys[targets].float().T  # (R - C, C) cosine
    assignment = similarity.argmax(dim=1) if merged.numel() else empty
    dimension = embeddings.shape[1]
    sums = torch.zeros((contextual, dimension), dtype=torch.float32, device=device)
    sums.index_add_(0, assignment, embeddings[merged].float())
    counts = torch.zeros(contextual, dtype=torch.float32, device=device)
    counts.index_add_(0, assignment, torch.ones(merged.numel(), device=device))
    target_embeddings = embeddings[targets].float()
    if contextual_merge == "target_plus_mean":
        combined = target_embeddings + sums / counts.clamp(min=1).unsqueeze(1)
    else:
        combined = (target_embeddings + sums) / (counts + 1).unsqueeze(1)
    merged_embeddings[targets] = combined.to(embeddings.dtype)
    return VisionZipChoice(keep, merged_embeddings, dominant, targets, merged, assignment)


class VisionZipPruner:
    """VisionZip: dominant tokens by attention received at the last vision block + merged contextual tokens."""

    name = "visionzip"
    stage: Stage = "vision"

    def __init__(
        self, budget: float, contextual_fraction: float = 10 / 64, contextual_merge: str = "target_plus_mean"
    ) -> None:
        self.budget = check_budget("the visionzip pruner", budget)
        if not 0 <= contextual_fraction < 1:
            raise ValueError(f"contextual_fraction must be in [0, 1), got {contextual_fraction}")
        if contextual_merge not in CONTEXTUAL_MERGES:
            raise ValueError(f"contextual_merge must be one of {CONTEXTUAL_MERGES}, got {contextual_merge!r}")
        self.contextual_fraction = contextual_fraction
        self.contextual_merge = contextual_merge
        self.recorder = VisionAttentionRecorder(blocks=[-1])
        self._record: VisionAttentionRecord | None = None

    def contextual_count(self, kept: int) -> int:
        return min(kept - 1, round(kept * self.contextual_fraction))

    @contextmanager
    def observe(self, vision_model: nn.Module) -> Iterator[VisionAttentionRecord]:
        with self.recorder.observe(vision_model) as record:
            self._record = record
            yield record

    def select(self, inputs: VisionStageInputs) -> TokenSelection:
        record = _take_record(self)
        scores, keys = record.received_at(-1), record.keys_at(-1)
        _check_counts(self.name, inputs, scores)
        keeps, embeddings = [], []
        for sample, sample_embeddings in enumerate(inputs.visual_embeddings):
            kept = kept_count(sample_embeddings.shape[0], self.budget)
            device = sample_embeddings.device
            choice = visionzip_choice(
                sample_embeddings, scores[sample].to(device), keys[sample].to(device), kept,
                self.contextual_count(kept), self.contextual_merge,
            )  # fmt: skip
            keeps.append(choice.keep)
            embeddings.append(choice.embeddings)
        keep = torch.stack(keeps)
        return TokenSelection(keep_probability=keep.float(), keep=keep, embeddings=embeddings)


# ----------------------------------------------------------------------------- HiPrune
@dataclass
class HiPruneChoice:
    """One volume's HiPrune selection (indices in (t, h, w) order)."""

    keep: torch.Tensor  # (V,) bool
    anchors: torch.Tensor
    buffers: torch.Tensor
    registers: torch.Tensor


def hiprune_choice(
    middle_scores: torch.Tensor,
    last_scores: torch.Tensor,
    token_grid: tuple[int, int, int],
    kept: int,
    anchors: int,
) -> HiPruneChoice:
    """Anchors (middle block), their 4-neighbour buffers, registers (last block) up to ``kept`` tokens."""
    t, h, w = token_grid
    visual = t * h * w
    if middle_scores.shape != (visual,) or last_scores.shape != (visual,):
        raise ValueError(f"scores must have {visual} entries for token grid {token_grid}")
    if not 1 <= anchors <= kept <= visual:
        raise ValueError(f"need 1 <= anchors ({anchors}) <= kept ({kept}) <= visual tokens ({visual})")
    device = middle_scores.device
    anchor_index = _ranked(middle_scores)[:anchors]
    is_anchor = torch.zeros(visual, dtype=torch.bool, device=device)
    is_anchor[anchor_index] = True

    grid = is_anchor.view(t, h, w)
    near = torch.zeros_like(grid)  # 4-neighbourhood within each depth slab
    near[:, 1:] |= grid[:, :-1]
    near[:, :-1] |= grid[:, 1:]
    near[:, :, 1:] |= grid[:, :, :-1]
    near[:, :, :-1] |= grid[:, :, 1:]
    candidates = near.view(-1) & ~is_anchor
    buffer_index = _ranked(middle_scores, candidates)[: kept - anchors]

    keep = is_anchor.clone()
    keep[buffer_index] = True
    register_index = _ranked(last_scores, ~keep)[: kept - int(keep.sum())]
    keep[register_index] = True
    return HiPruneChoice(keep, anchor_index, buffer_index, register_index)


class HiPrunePruner:
    """HiPrune: anchors at a middle vision block, their spatial neighbours, registers at the last block."""

    name = "hiprune"
    stage: Stage = "vision"

    def __init__(self, budget: float, anchor_fraction: float = 0.1, middle_layer: int | None = None) -> None:
        self.budget = check_budget("the hiprune pruner", budget)
        if not 0 < anchor_fraction <= 1:
            raise ValueError(f"anchor_fraction must be in (0, 1], got {anchor_fraction}")
        self.anchor_fraction = anchor_fraction
        self.middle_layer = middle_layer
        self._record: VisionAttentionRecord | None = None
        self._middle: int | None = None

    def anchor_count(self, kept: int) -> int:
        return min(kept, max(1, round(kept * self.anchor_fraction)))

    @contextmanager
    def observe(self, vision_model: nn.Module) -> Iterator[VisionAttentionRecord]:
        middle = middle_vision_block(vision_model) if self.middle_layer is None else self.middle_layer
        recorder = VisionAttentionRecorder(blocks=[middle, -1])
        with recorder.observe(vision_model) as record:
            self._record, self._middle = record, middle
            yield record

    def select(self, inputs: VisionStageInputs) -> TokenSelection:
        record = _take_record(self)
        middle_scores, last_scores = record.received_at(self._middle), record.received_at(-1)
        _check_counts(self.name, inputs, last_scores)
        keeps = []
        for sample, sample_embeddings in enumerate(inputs.visual_embeddings):
            kept = kept_count(sample_embeddings.shape[0], self.budget)
            grid = tuple(int(n) for n in inputs.token_grids[sample])
            choice = hiprune_choice(middle_scores[sample], last_scores[sample], grid, kept, self.anchor_count(kept))
            keeps.append(choice.keep.to(sample_embeddings.device))
        keep = torch.stack(keeps)
        return TokenSelection(keep_probability=keep.float(), keep=keep)


# ----------------------------------------------------------------------------- shared
def _take_record(pruner) -> VisionAttentionRecord:
    """The record of the last ``observe``, used once (a stale record must never rank new volumes)."""
    record, pruner._record = pruner._record, None
    if record is None:
        raise RuntimeError(
            f"the {pruner.name} pruner must observe the vision tower first: run it inside pruner.observe(...)"
        )
    return record


def _check_counts(name: str, inputs: VisionStageInputs, scores: list[torch.Tensor]) -> None:
    counts = [int(embedding.shape[0]) for embedding in inputs.visual_embeddings]
    recorded = [int(score.shape[0]) for score in scores]
    if counts != recorded:
        raise ValueError(
            f"the {name} pruner recorded volumes of {recorded} tokens inside observe() but was asked to select "
            f"among {counts}: run the vision tower on exactly these volumes inside observe()"
        )
    if len(set(counts)) > 1:
        # TokenSelection is (B, V): as for ITS, every volume of a batch has the same token grid.
        raise ValueError(
            f"the {name} pruner needs the same number of visual tokens per volume in a batch, got {counts}"
        )
