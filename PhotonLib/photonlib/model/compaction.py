"""Token compaction: removing dropped tokens from a batch of sequences.

A hard drop gathers the tokens that stay into a shorter sequence. Samples of a batch keep
different counts, so shorter rows are left-padded: the newest token of every sample is always at
index -1, where decoding appends. Every per-token tensor of the language model (hidden states,
position ids, rotary cos/sin, masks, labels, the KV cache) is compacted with the same
``kept`` index, a (B, M) tensor of source positions with -1 on padding slots.
"""

from __future__ import annotations

import torch


def kept_positions(presence: torch.Tensor) -> torch.Tensor:
    """Source position of every slot of the compacted, left-padded sequence; -1 on padding.

    ``presence`` (B, L) is True for tokens that stay. The result is (B, M) with M the largest
    kept count; each row keeps its tokens' order and ends with its last kept token.
    """
    batch, length = presence.shape
    kept_count = presence.sum(dim=1)
    width = int(kept_count.max()) if batch else 0
    positions = torch.arange(length, device=presence.device).expand(batch, length)
    # Sort kept tokens to the end, in order; dropped ones go first and become padding.
    order_key = torch.where(presence, positions + length, positions)
    ordered = torch.sort(order_key, dim=1).values[:, length - width :]
    source = ordered - length
    return torch.where(source >= 0, source, torch.full_like(source, -1))


def gather_positions(values: torch.Tensor, positions: torch.Tensor, fill: float | int = 0) -> torch.Tensor:
    """``values`` (B, L, ...) at ``positions`` (B, M); ``fill`` where the position is -1."""
    index = positions.clamp_min(0)
    expanded = index.view(*index.shape, *([1] * (values.dim() - 2))).expand(*index.shape, *values.shape[2:])
    gathered = torch.gather(values, 1, expanded)
    padding = (positions < 0).view(*positions.shape, *([1] * (values.dim() - 2)))
    return gathered.masked_fill(padding, fill)


def gather_position_rows(position_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Gather (3, B, L) M-RoPE position ids at (B, M) slots (padding slots get 0), all rows at once."""
    index = positions.clamp_min(0).unsqueeze(0).expand(position_ids.shape[0], -1, -1)
    return torch.gather(position_ids, 2, index).masked_fill(positions.unsqueeze(0) < 0, 0)


def compose_kept(first: torch.Tensor | None, second: torch.Tensor | None) -> torch.Tensor | None:
    """Original positions after two successive compactions (either may be absent)."""
    if first is None or second is None:
        return second if first is None else first
    return gather_positions(first.unsqueeze(-1), second, -1).squeeze(-1)


def scatter_visual(visual_mask: torch.Tensor, visual_values: torch.Tensor) -> torch.Tensor:
    """(B, L) tensor holding ``visual_values`` (the visual tokens' values, in order) on the visual
    slots of ``visual_mask`` and zero/False elsewhere."""
    return torch.zeros(visual_mask.shape, dtype=visual_values.dtype, device=visual_mask.device).masked_scatter(
        visual_mask, visual_values
    )


def answer_blind_mask(
    attention_mask: torch.Tensor, answer_mask: torch.Tensor, dropped: torch.Tensor, dtype: torch.dtype
) -> torch.Tensor:
    """(B, 1, L, L) additive mask: causal, padding, and answer tokens blind to ``dropped`` tokens.

    Additive floats (not booleans) so eager and SDPA attention read it alike; a fully masked
    (padding) row stays finite.
    """
    length = attention_mask.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=attention_mask.device).tril()
    allowed = causal[None] & attention_mask.bool()[:, None, :] & ~(answer_mask[:, :, None] & dropped[:, None, :])
    blocked = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed, torch.finfo(dtype).min)
    return blocked[:, None]
