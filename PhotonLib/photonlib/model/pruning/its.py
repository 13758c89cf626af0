"""Instruction-conditioned Token Scheduling (ITS): which visual tokens this question needs.

After decoder layer k, ITS scores every visual token by how strongly the instruction's queries
attend to it (docs/method.md section 3):

* instruction tokens T are the text between ``<|vision_end|>`` and the next ``<|im_end|>``;
* with layer k's queries q and keys k after RoPE (fp32, no gradient, averaged over heads, scale
  1/sqrt(d); the keys are read from layer k's KV cache, the queries computed for T only): ``logits_tt = q_T k_T^T`` with the diagonal zeroed; ``c_t = sum_t' max(logit, 0)``;
  ``w = c / max(sum c, 1)`` (the released code clamps the denominator at 1);
* visual score ``u_j = sum_t w_t q_t . k_j``; ``s`` = per-sample min-max of ``u``;
* threshold ``theta = 0.9 * sigmoid(MLP(z))`` from 12 statistics ``z`` of ``s`` and ``u``;
* keep probability ``p_j = sigmoid((s_j - theta) / 0.2)``; token kept when ``p_j > 0.5``.

Only the threshold MLP has parameters; it learns through the surrogate gradient of the hard
drop (:mod:`photonlib.model.pruning.sgp`), since the scores are computed without gradient.
"""

from __future__ import annotations

import math

import torch
from torch import nn

STATISTICS = 12  # see threshold_features


def instruction_weighted_scores(
    instruction_queries: list[torch.Tensor], keys: torch.Tensor, instruction_mask: torch.Tensor, visual_mask: torch.Tensor
) -> torch.Tensor:
    """Raw visual scores ``u`` (B, V) from one layer's post-RoPE queries and keys.

    Args:
        instruction_queries: per sample (heads, T, d), the queries of its T instruction tokens.
        keys: (B, kv_heads, L, d); each key head serves ``heads / kv_heads`` query heads (GQA).
        instruction_mask: (B, L) True on instruction tokens.
        visual_mask: (B, L) True on visual tokens; every sample has the same count V.
    """
    batch, kv_heads, length, dim = keys.shape
    counts = visual_mask.sum(dim=1)
    if not torch.all(counts == counts[0]):
        raise ValueError(f"every sample must have the same number of visual tokens, got {counts.tolist()}")
    visual_count = int(counts[0])
    scale = 1.0 / math.sqrt(dim)
    scores = keys.new_zeros((batch, visual_count), dtype=torch.float32)
    for sample in range(batch):  # instruction lengths differ per sample; B is small
        q_text = instruction_queries[sample].float()  # (heads, T, d)
        heads, text = q_text.shape[0], q_text.shape[1]
        if text == 0:
            continue  # no instruction: every visual token scores 0 (then kept or dropped alike)
        # One product against every key of the sample, grouped by key head (no repeated keys),
        # then the instruction and visual columns.
        grouped = q_text.view(kv_heads, heads // kv_heads, text, dim)
        logits = (grouped @ keys[sample].float().transpose(1, 2).unsqueeze(1)).view(heads, text, length) * scale
        logits_tt = logits[:, :, instruction_mask[sample]]  # (heads, T, T)
        logits_tt.diagonal(dim1=-2, dim2=-1).zero_()
        centrality = logits_tt.clamp_min(0).sum(dim=-1).mean(dim=0)  # (T,)
        weights = centrality / centrality.sum().clamp_min(1.0)
        logits_tv = logits[:, :, visual_mask[sample]]  # (heads, T, V)
        scores[sample] = (logits_tv * weights[None, :, None]).sum(dim=1).mean(dim=0)
    return scores


def min_max_normalize(values: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    low = values.amin(dim=-1, keepdim=True)
    high = values.amax(dim=-1, keepdim=True)
    return (values - low) / (high - low + eps)


def threshold_features(raw_scores: torch.Tensor) -> torch.Tensor:
    """The 12 statistics (B, 12) the threshold MLP sees, computed in fp32."""
    u = torch.nan_to_num(raw_scores.float(), nan=0.0, posinf=1e8, neginf=-1e8)
    s = min_max_normalize(u)
    signed_log = torch.sign(u) * torch.log1p(u.abs())
    quartile, median = torch.quantile(s, torch.tensor([0.25, 0.5], device=s.device), dim=1)  # one sort
    features = [
        s.mean(dim=1), s.std(dim=1, unbiased=False), s.amin(dim=1), s.amax(dim=1),
        quartile, median,
        u.mean(dim=1), u.std(dim=1, unbiased=False), u.amin(dim=1), u.amax(dim=1),
        signed_log.mean(dim=1), signed_log.amax(dim=1),
    ]  # fmt: skip
    return torch.stack(features, dim=1)


class ThresholdPredictor(nn.Module):
    """theta = scale * sigmoid(MLP(z)); MLP = Linear(12 -> hidden/8) -> GELU -> Linear(-> 1).

    The last bias starts at -5 so that theta starts near 0 and ITS keeps nearly everything.
    """

    INITIAL_BIAS = -5.0

    def __init__(self, hidden_size: int, threshold_scale: float = 0.9) -> None:
        super().__init__()
        self.threshold_scale = threshold_scale
        self.mlp = nn.Sequential(nn.Linear(STATISTICS, max(1, hidden_size // 8)), nn.GELU(), nn.Linear(max(1, hidden_size // 8), 1))

    def forward(self, raw_scores: torch.Tensor, sigmoid_dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Threshold (B, 1) in [0, scale], with gradient to the MLP only.

        ``sigmoid_dtype``: the release takes the sigmoid in the model's dtype (bf16), which
        rounds theta; float32 keeps it exact.
        """
        features = threshold_features(raw_scores.detach())
        weight = self.mlp[0].weight
        logit = self.mlp(features.to(weight.dtype))
        return self.threshold_scale * torch.sigmoid(logit.to(sigmoid_dtype)).float()


def keep_probability(raw_scores: torch.Tensor, threshold: torch.Tensor, temperature: float) -> torch.Tensor:
    """p_j = sigmoid((s_j - theta) / T), fp32, (B, V); gradient flows to theta only."""
    normalized = min_max_normalize(raw_scores.detach().float())
    return torch.sigmoid((normalized - threshold) / temperature)
