"""Attention received per visual token inside Qwen2.5-VL's vision tower, for vision-stage pruners.

VisionZip and HiPrune rank visual tokens by how much attention they *receive* inside the vision
encoder. Qwen2.5-VL's tower never returns its attention probabilities (and flash attention never
forms them), so :class:`VisionAttentionRecorder` recomputes them from each chosen block's input,
with forward pre-hooks, while the tower runs:

* block input -> ``norm1`` -> ``attn.qkv`` -> rotary (the block's ``position_embeddings``) ->
  ``softmax(q k^T / sqrt(d))`` within each attention segment given by the block's ``cu_seqlens``
  (full-attention blocks: one segment per depth slab t of a volume; the other blocks: windows),
  one segment at a time so memory stays at one ``heads x n x n`` matrix;
* attention received by a patch = mean over heads and over the queries of its segment (so the
  received scores of one segment sum to 1);
* the tower permutes patches into window order (``window_index``, whole 2 x 2 merge groups);
  scores are put back in patch order and averaged over each 2 x 2 merge group, giving one score
  per merged (language-model) token in (t, h, w) order, per volume.

It also records, per merged token, the L2-normalised mean of its four patches' keys (all heads
concatenated) for similarity. These keys are taken *before* rotary: rotary turns a key by its
(h, w) position, so two tokens with the same content at different places would look dissimilar,
and similarity is meant to group tokens by content.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from photonlib.model.transformers_adapter import vision_block_inputs, vision_block_queries_keys, vision_window_index


@dataclass
class VisionAttentionRecord:
    """What one :meth:`VisionAttentionRecorder.observe` saw, per volume, in merged (t, h, w) order.

    ``received[block][sample]`` is (V,) float32 attention received; ``keys[block][sample]`` is
    (V, hidden) float32, L2-normalised. ``token_grids`` holds each volume's merged grid (t, h, w).
    Blocks are keyed by their non-negative index; use :meth:`received_at` / :meth:`keys_at` to
    look them up with negative indices too.
    """

    depth: int
    received: dict[int, list[torch.Tensor]] = field(default_factory=dict)
    keys: dict[int, list[torch.Tensor]] = field(default_factory=dict)
    token_grids: list[tuple[int, int, int]] = field(default_factory=list)

    def received_at(self, block: int) -> list[torch.Tensor]:
        return self._lookup(self.received, block)

    def keys_at(self, block: int) -> list[torch.Tensor]:
        return self._lookup(self.keys, block)

    def _lookup(self, table: dict[int, list[torch.Tensor]], block: int) -> list[torch.Tensor]:
        resolved = resolve_block(block, self.depth)
        if resolved not in table:
            raise KeyError(f"vision block {block} was not recorded; recorded: {sorted(table)}")
        return table[resolved]


@dataclass
class _TowerCall:
    """State of one vision-tower call while it runs (blocks are hooked in window order)."""

    window_index: torch.Tensor  # (G,) merge group in patch order for each window-order group
    group_counts: list[int]  # merged tokens per volume
    token_grids: list[tuple[int, int, int]]
    received: dict[int, torch.Tensor] = field(default_factory=dict)  # block -> (S,) in window order
    keys: dict[int, torch.Tensor] = field(default_factory=dict)  # block -> (G, hidden) in window order


class VisionAttentionRecorder:
    """Records attention received (and keys) at chosen blocks of a Qwen2.5-VL vision tower.

    Use as ``with recorder.observe(vision_model) as record: vision_model(pixels, grid_thw=grid)``;
    the hooks are removed on exit, also when the tower raises. Every tower call inside one
    ``observe`` appends its volumes to the same record.
    """

    def __init__(self, blocks: Sequence[int]) -> None:
        if not blocks:
            raise ValueError("name at least one vision block to record (negative indices count from the end)")
        self.blocks = tuple(int(block) for block in blocks)

    @contextmanager
    def observe(self, vision_model: nn.Module) -> Iterator[VisionAttentionRecord]:
        depth = len(vision_model.blocks)
        resolved = sorted({resolve_block(block, depth) for block in self.blocks})
        record = VisionAttentionRecord(depth=depth)
        for block in resolved:
            record.received[block], record.keys[block] = [], []
        state: dict[str, _TowerCall | None] = {"call": None}

        def before_tower(module, args, kwargs):
            grid_thw = kwargs["grid_thw"] if "grid_thw" in kwargs else args[1]
            window_index = vision_window_index(module, grid_thw, kwargs)
            merge = module.spatial_merge_size
            grids = [(int(t), int(h) // merge, int(w) // merge) for t, h, w in grid_thw.tolist()]
            state["call"] = _TowerCall(
                window_index=window_index,
                group_counts=[t * h * w for t, h, w in grids],
                token_grids=grids,
            )

        def after_tower(module, args, kwargs, output):
            call, state["call"] = state["call"], None
            record.token_grids.extend(call.token_grids)
            unit = module.spatial_merge_size**2
            for block in resolved:
                groups = len(call.window_index)
                received = call.received[block].view(groups, unit).mean(dim=1)
                record.received[block].extend(_unpermute(received, call.window_index).split(call.group_counts))
                keys = F.normalize(_unpermute(call.keys[block], call.window_index), dim=-1)
                record.keys[block].extend(keys.split(call.group_counts))

        def block_hook(index: int):
            def before_block(module, args, kwargs):
                hidden, cu_seqlens, position_embeddings = vision_block_inputs(args, kwargs)
                unit = vision_model.spatial_merge_size**2
                received, keys = attention_received(module, hidden, cu_seqlens, position_embeddings)
                call = state["call"]
                call.received[index] = received
                call.keys[index] = keys.view(-1, unit, keys.shape[-1]).mean(dim=1)

            return before_block

        handles = []
        try:
            handles.append(vision_model.register_forward_pre_hook(before_tower, with_kwargs=True))
            handles.append(vision_model.register_forward_hook(after_tower, with_kwargs=True))
            for block in resolved:
                handles.append(
                    vision_model.blocks[block].register_forward_pre_hook(block_hook(block), with_kwargs=True)
                )
            yield record
        finally:
            for handle in handles:
                handle.remove()


@torch.no_grad()
def attention_received(
    block: nn.Module,
    hidden: torch.Tensor,
    cu_seqlens: torch.Tensor,
    position_embeddings: tuple[torch.Tensor, torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor]:
    """One vision block's attention received per patch, recomputed from the block's input.

    ``hidden`` is the block input (S, hidden) in the tower's (window) order. Returns the attention
    received (S,) float32 (mean over heads and over the queries of each patch's segment) and the
    pre-rotary keys (S, hidden) float32 with all heads concatenated.
    """
    length = hidden.shape[0]
    queries, keys, content_keys, scaling = vision_block_queries_keys(block, hidden, position_embeddings)
    content_keys = content_keys.float().reshape(length, -1)
    queries, keys = queries.float().transpose(0, 1), keys.float().transpose(0, 1)  # (heads, S, d)
    received = torch.zeros(length, dtype=torch.float32, device=hidden.device)
    bounds = cu_seqlens.tolist()
    for start, end in zip(bounds[:-1], bounds[1:]):
        if end <= start:
            continue
        logits = queries[:, start:end] @ keys[:, start:end].transpose(1, 2) * scaling
        received[start:end] = logits.softmax(dim=-1).mean(dim=(0, 1))
    return received, content_keys


def resolve_block(block: int, depth: int) -> int:
    """A vision block index in [0, depth); negative indices count from the end."""
    resolved = block + depth if block < 0 else block
    if not 0 <= resolved < depth:
        raise ValueError(f"vision block {block} does not exist in a tower of {depth} blocks")
    return resolved


def middle_vision_block(vision_model: nn.Module) -> int:
    """The full-attention block closest to the middle of the tower (the earlier one on a tie).

    Full-attention blocks see a whole depth slab, so their scores compare across the slab; in
    windowed blocks a small edge window hands out as much attention as a full window. A tower
    without full-attention blocks gives ``depth // 2``.
    """
    depth = len(vision_model.blocks)
    full_attention = [int(block) for block in getattr(vision_model, "fullatt_block_indexes", []) or []]
    if not full_attention:
        return depth // 2
    return min(full_attention, key=lambda block: (abs(block - (depth - 1) / 2), block))


def _unpermute(window_ordered: torch.Tensor, window_index: torch.Tensor) -> torch.Tensor:
    """Rows in window order -> patch (t, h, w) order: window row i is merge group window_index[i]."""
    patch_ordered = torch.empty_like(window_ordered)
    patch_ordered[window_index.to(window_ordered.device)] = window_ordered
    return patch_ordered
