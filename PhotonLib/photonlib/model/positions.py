"""Explicit 3D M-RoPE position ids for prompts with one volume each.

Positions are always passed explicitly (never derived from sequence lengths), because pruning
removes tokens from the middle of the sequence and decoding continues on the pruned cache.
"""

from __future__ import annotations

import torch


def build_position_ids(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, token_grids: torch.Tensor | None, video_token_id: int
) -> torch.Tensor:
    """Explicit 3D M-RoPE positions (3, B, L).

    Text tokens count up on all three rows; the visual block starting at position s gets
    ``(s + t, s + h, s + w)`` for its (t, h, w) token; text after it continues at
    ``s + max(T, H, W)`` so positions never overlap. Padding gets position 0 (it is masked).
    """
    batch, length = input_ids.shape
    position_ids = torch.zeros((3, batch, length), dtype=torch.long, device=input_ids.device)
    for sample in range(batch):
        real = attention_mask[sample].bool()
        visual = (input_ids[sample] == video_token_id) & real
        real_index = torch.nonzero(real).squeeze(1)
        if not visual.any():
            position_ids[:, sample, real_index] = torch.arange(real_index.numel(), device=input_ids.device)
            continue
        t, h, w = (int(v) for v in token_grids[sample])
        visual_index = torch.nonzero(visual).squeeze(1)
        if visual_index.numel() != t * h * w or visual_index[-1] - visual_index[0] + 1 != t * h * w:
            raise ValueError(
                f"sample {sample}: expected one block of {t * h * w} visual tokens for grid {(t, h, w)}, "
                f"found {visual_index.numel()}"
            )
        before = real_index[real_index < visual_index[0]]
        after = real_index[real_index > visual_index[-1]]
        start = before.numel()
        position_ids[:, sample, before] = torch.arange(start, device=input_ids.device)
        grid = torch.stack(
            torch.meshgrid(*(torch.arange(n, device=input_ids.device) for n in (t, h, w)), indexing="ij")
        ).reshape(3, -1)
        position_ids[:, sample, visual_index] = start + grid
        text_start = start + max(t, h, w)
        position_ids[:, sample, after] = text_start + torch.arange(after.numel(), device=input_ids.device)
    return position_ids


def next_positions(position_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(B,) position of the token that follows each row: one past its largest real position."""
    real = attention_mask.bool().unsqueeze(0)
    return torch.where(real, position_ids, torch.zeros_like(position_ids)).amax(dim=(0, 2)) + 1
