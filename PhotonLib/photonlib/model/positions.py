"""Explicit 3D M-RoPE position ids for prompts with one volume each.

Positions are always passed explicitly (never derived from sequence lengths), because pruning
removes tokens from the middle of the sequence and decoding continues on the pruned cache.
"""

from __future__ import annotations

import torch


def build_position_ids(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    token_grids: torch.Tensor | None,
    video_token_id: int,
    temporal_scale: float = 1.0,
) -> torch.Tensor:
    """Explicit 3D M-RoPE positions (3, B, L), as Qwen2.5-VL places a video.

    Text tokens count up on all three rows; the visual block starting at position s gets
    ``(s + floor(t * temporal_scale), s + h, s + w)`` for its (t, h, w) token (the released
    Photon: ``temporal_scale`` 28, see ``PhotonConfig.temporal_position_scale``); text after it
    continues one past the block's largest position, so positions never overlap. Padding gets
    position 0 (it is masked).
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
        device = input_ids.device
        # As Qwen2.5-VL: float seconds times tokens per second, truncated to an integer position.
        temporal = (torch.arange(t, device=device) * temporal_scale).long()
        grid = torch.stack(
            torch.meshgrid(temporal, torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
        ).reshape(3, -1)
        position_ids[:, sample, visual_index] = start + grid
        text_start = start + int(grid.max()) + 1
        position_ids[:, sample, after] = text_start + torch.arange(after.numel(), device=input_ids.device)
    return position_ids


def next_positions(position_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(B,) position of the token that follows each row: one past its largest real position."""
    real = attention_mask.bool().unsqueeze(0)
    return torch.where(real, position_ids, torch.zeros_like(position_ids)).amax(dim=(0, 2)) + 1
