"""Surrogate Gradient Propagation (SGP): a hard token drop that still trains the threshold.

Forward: the kept tokens are gathered into a shorter, left-padded sequence (the drop is real:
later layers never see the dropped tokens). Backward: the gradient is scattered back to the
kept tokens' original positions, and the keep probabilities get a surrogate gradient
(docs/method.md section 4, as released):

    imp_j = <x_j, g_j>;  z = clip((imp - mean) / std, -1.5, 1.5);  rel = 0.5 + 0.5 tanh(z)
    dir = 0.5 - rel, made zero-mean over visual tokens;  scale = clip(sum_d |x_d g_d| / mean, 0.5, 2)
    sat = max(p (1 - p), 5e-3);  dL/dp = 0.8 * dir * scale * sat

``straight_through`` is the paper's plain form ``M_st = sg(M) - sg(p) + p``: ``dL/dp_j =
<x_j, g_j>`` for kept tokens (a dropped token has no output, so no gradient).
"""

from __future__ import annotations

import torch

from photonlib.model.compaction import gather_positions

Z_CLIP = 1.5
MIN_SIGMA = 3e-3
SCALE_RANGE = (0.5, 2.0)
BETA = 0.8
SATURATION_FLOOR = 5e-3
EPS = 1e-6


class SurrogateTokenGather(torch.autograd.Function):
    """Hard gather of kept tokens whose backward also yields a gradient for keep probabilities."""

    @staticmethod
    def forward(ctx, hidden, positions, keep_probability, visual_mask, straight_through: bool):  # noqa: D401
        ctx.save_for_backward(hidden, positions, keep_probability, visual_mask)
        ctx.straight_through = straight_through
        return gather_positions(hidden, positions)

    @staticmethod
    def backward(ctx, grad_output):
        hidden, positions, keep_probability, visual_mask = ctx.saved_tensors
        grad_hidden32 = torch.zeros(hidden.shape, dtype=torch.float32, device=hidden.device)
        index = positions.clamp_min(0).unsqueeze(-1).expand(-1, -1, hidden.shape[-1])
        real_slots = (positions >= 0).unsqueeze(-1)
        grad_hidden32.scatter_add_(1, index, grad_output.float() * real_slots)
        grad_hidden = grad_hidden32.to(hidden.dtype) if ctx.needs_input_grad[0] else None

        grad_probability = None
        if ctx.needs_input_grad[2]:
            visual = visual_mask.float()
            importance = (hidden.float() * grad_hidden32).sum(dim=-1) * visual  # <x_j, g_j>
            if ctx.straight_through:
                grad_probability = importance
            else:
                count = visual.sum(dim=1, keepdim=True).clamp_min(1)
                mean = importance.sum(dim=1, keepdim=True) / count
                sigma = (((importance - mean) ** 2 * visual).sum(dim=1, keepdim=True) / count).sqrt().clamp_min(MIN_SIGMA)
                relevance = 0.5 + 0.5 * torch.tanh(((importance - mean) / sigma).clamp(-Z_CLIP, Z_CLIP))
                direction = 0.5 - relevance  # important tokens (high relevance) get a negative gradient: p goes up
                direction = direction - (direction * visual).sum(dim=1, keepdim=True) / count
                # As released: the magnitude sums |x_d g_d| over the hidden dimension (not |<x, g>|).
                magnitude = (hidden.float() * grad_hidden32).abs().sum(dim=-1) * visual
                row_mean = ((magnitude * visual).sum(dim=1, keepdim=True) / count).clamp_min(EPS)
                scale = (magnitude / row_mean).clamp(*SCALE_RANGE)
                probability = keep_probability.detach().float()
                saturation = (probability * (1 - probability)).clamp_min(SATURATION_FLOOR)
                grad_probability = BETA * direction * scale * saturation
            grad_probability = (grad_probability * visual).to(keep_probability.dtype)
        return grad_hidden, None, grad_probability, None, None


def gather_kept_tokens(
    hidden: torch.Tensor,
    positions: torch.Tensor,
    keep_probability: torch.Tensor | None = None,
    visual_mask: torch.Tensor | None = None,
    *,
    straight_through: bool = False,
) -> torch.Tensor:
    """Compact ``hidden`` (B, L, D) to (B, M, D); with ``keep_probability`` (B, L) the drop is trainable."""
    if keep_probability is None or not (torch.is_grad_enabled() and keep_probability.requires_grad):
        return gather_positions(hidden, positions)
    return SurrogateTokenGather.apply(hidden, positions, keep_probability, visual_mask, straight_through)
