"""The interface every way of choosing visual tokens implements, so benchmarks and evaluation
can swap them by name (:mod:`photonlib.model.pruning.registry`).

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
