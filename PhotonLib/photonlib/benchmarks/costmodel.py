"""What the token counts alone allow: floating-point operations and bytes read per stage, from the shapes.

The limit of a ratio is the ratio of these counts: what a method would achieve if its time were
exactly proportional to its arithmetic (no fixed costs, no launch or Python overheads, the same
efficiency at every size), or, for decoding, to the bytes it reads. One multiply-add is 2 FLOPs.

* Decoder layer, per token it sees: ``2 (h q + 2 h kv + q h + 3 h I)`` (q/k/v/o projections and
  the gated MLP); attention over n tokens: ``4 n^2 q`` (scores and weighted sum, the full square
  as the math/SDPA kernels compute it with a mask).
* ITS: layers 0..k see every token; layers k+1..L-1 see the text and the kept visual tokens;
  the scoring adds layer k's query and key projections over every token.
* Fixed-budget pruners: every layer sees the text and the kept tokens; the vision tower sees
  every patch (their scoring inside the tower is not counted: it is their overhead).
* Prefill computes logits for the last position only; training computes them everywhere
  (``2 h vocab`` per position) and costs three forwards (forward + backward).
* Vision tower, per patch: patch embedding ``2 c pt ph pw hv``; per block ``2 (4 hv^2 + 3 hv Iv)``;
  attention ``4 s^2 hv`` per segment of s patches (a depth slab in full-attention blocks, a
  window otherwise); merger ``2 (16 hv^2 + 4 hv out)`` per merged token.
* Decoding, per new token, FLOPs: every layer's linear part, attention over its cache (text +
  kept visual + half the generated tokens on average), the lm_head. Bytes: every decoder weight
  and bias, the norms and the lm_head read once, plus every layer's KV cache
  ``2 kv_heads head_dim`` values per cached token (the same cache length), in the run's dtype;
  the embedding row is negligible. Batch-1 decoding is memory-bound (a matrix-vector product
  does 2 FLOPs per weight it reads, far below any CPU's or GPU's FLOP/byte balance), so its
  limit is the ratio of bytes; the FLOP ratio is kept as ``decode_flop_limit``.
* Whole answer (TTFT + decode): the baseline's measured TTFT scaled by the TTFT limit plus its
  measured decode time scaled by the decode (bytes) limit (:func:`end_to_end_limit`); the pure
  FLOP ratio is kept as ``end_to_end_flop_limit``.
* Peak memory above the weights: proportional to the most tokens alive at once (the larger of
  the vision patches' and the language model's widest ratio to the baseline).
"""

from __future__ import annotations

import math

from photonlib.model import PhotonConfig


def decoder_linear_per_token(config: PhotonConfig) -> float:
    text = config.text_config
    hidden = text.hidden_size
    head_dim = getattr(text, "head_dim", None) or hidden // text.num_attention_heads
    query = text.num_attention_heads * head_dim
    key_value = text.num_key_value_heads * head_dim
    return 2.0 * (hidden * query + 2 * hidden * key_value + query * hidden + 3 * hidden * text.intermediate_size)


def _query_width(config: PhotonConfig) -> int:
    text = config.text_config
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    return text.num_attention_heads * head_dim


def _key_value_width(config: PhotonConfig) -> int:
    text = config.text_config
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    return text.num_key_value_heads * head_dim


def _layer(config: PhotonConfig, tokens: float) -> float:
    return tokens * decoder_linear_per_token(config) + 4.0 * tokens * tokens * _query_width(config)


def its_scoring(config: PhotonConfig, tokens: float) -> float:
    text = config.text_config
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    return 2.0 * tokens * text.hidden_size * (text.num_attention_heads + text.num_key_value_heads) * head_dim


def vision_tower(config: PhotonConfig, patch_grid: tuple[int, int, int], channels: int) -> float:
    vision = config.vision_config
    t, gh, gw = patch_grid
    patches = t * gh * gw
    hidden, merge = vision.hidden_size, vision.spatial_merge_size
    voxels = channels * vision.temporal_patch_size * vision.patch_size**2
    flops = 2.0 * patches * voxels * hidden
    per_block = 2.0 * patches * (4 * hidden * hidden + 3 * hidden * vision.intermediate_size)
    full_segments = [gh * gw] * t
    window = max(1, vision.window_size // (vision.patch_size * merge))  # merged tokens per window side
    mh, mw = gh // merge, gw // merge
    window_segments = []
    for _ in range(t):
        for row in range(0, mh, window):
            for column in range(0, mw, window):
                window_segments.append(min(window, mh - row) * min(window, mw - column) * merge * merge)
    full_blocks = set(vision.fullatt_block_indexes or [])
    for block in range(vision.depth):
        segments = full_segments if block in full_blocks else window_segments
        flops += per_block + 4.0 * hidden * sum(s * s for s in segments)
    merged = patches // (merge * merge)
    wide = hidden * merge * merge
    flops += 2.0 * merged * (wide * wide + wide * vision.out_hidden_size)
    return flops


def language_forward(config: PhotonConfig, full: float, after: float, its: bool, logits_positions: float) -> float:
    """One forward of the decoder: ``full`` tokens in layers 0..k, ``after`` in k+1..L-1 when ``its``."""
    layers = config.text_config.num_hidden_layers
    if its:
        k = config.its_layer
        flops = (k + 1) * _layer(config, full) + (layers - k - 1) * _layer(config, after) + its_scoring(config, full)
    else:
        flops = layers * _layer(config, full)
    return flops + 2.0 * logits_positions * config.text_config.hidden_size * config.text_config.vocab_size


#: Bytes per value of a run's dtype (weights and KV cache).
DTYPE_BYTES = {"float32": 4, "bfloat16": 2}


def _decode_context(cache: float, new_tokens: int) -> float:
    """Average cached tokens over the decode steps: the cache after the prefill plus half the new tokens."""
    return cache + (new_tokens - 1) / 2


def decode_per_token(config: PhotonConfig, cache: float, new_tokens: int) -> float:
    text = config.text_config
    context = _decode_context(cache, new_tokens)
    per_layer = decoder_linear_per_token(config) + 4.0 * context * _query_width(config)
    return text.num_hidden_layers * per_layer + 2.0 * text.hidden_size * text.vocab_size


def decode_weight_values(config: PhotonConfig) -> float:
    """Values read from the weights at one decode step: every decoder layer, the final norm, the lm_head.

    Per layer: q/k/v projections with their biases (Qwen2's attention has them), the output
    projection, the gated MLP and the two RMSNorms. A tied lm_head is read once, as the lm_head
    (the embedding row of the new token is negligible).
    """
    text = config.text_config
    hidden = text.hidden_size
    query, key_value = _query_width(config), _key_value_width(config)
    attention = hidden * query + query + 2 * (hidden * key_value + key_value) + query * hidden
    per_layer = attention + 3 * hidden * text.intermediate_size + 2 * hidden
    return text.num_hidden_layers * per_layer + hidden + text.vocab_size * hidden


def decode_bytes_per_token(config: PhotonConfig, cache: float, new_tokens: int, value_bytes: int) -> float:
    """Bytes one decode step reads: the weights once, and every layer's keys and values of its cache."""
    text = config.text_config
    kv_cache = text.num_hidden_layers * 2 * _key_value_width(config) * _decode_context(cache, new_tokens)
    return (decode_weight_values(config) + kv_cache) * value_bytes


def method_cost(
    config: PhotonConfig, tokens: dict, patch_grid: tuple[int, int, int], channels: int, its: bool, value_bytes: int
) -> dict:
    """FLOPs of one method's vision tower, prefill, decode and training step, and the bytes of one
    decode step (``value_bytes`` per weight and cache value: :data:`DTYPE_BYTES`), from its token counts."""
    text = tokens["text"]
    full = text + tokens["visual_entering_llm"]
    after = text + tokens["visual_after_pruning"]
    answer = tokens["text_training"] - text
    vision = vision_tower(config, patch_grid, channels)
    prefill = language_forward(config, full, after, its, logits_positions=1)
    decode = decode_per_token(config, after, tokens["new_tokens"])
    train_full, train_after = full + answer, after + answer
    train = 3.0 * (vision + language_forward(config, train_full, train_after, its, logits_positions=train_after))
    return {
        "vision_flops": vision,
        "llm_prefill_flops": prefill,
        "ttft_flops": vision + prefill,
        "decode_flops_per_token": decode,
        "decode_bytes_per_token": decode_bytes_per_token(config, after, tokens["new_tokens"], value_bytes),
        "answer_flops": vision + prefill + (tokens["new_tokens"] - 1) * decode,
        "train_step_flops": train,
        "widest_llm_tokens": full,
        "vision_patches": patch_grid[0] * patch_grid[1] * patch_grid[2],
    }


def follow_up_flops(config: PhotonConfig, tokens: dict, follow_up: dict, its: bool) -> float:
    """FLOPs of a follow-up question's prefill that reuses the first one's prompt prefix.

    ``follow_up``: ``new`` tokens after the prefix of ``prefix`` tokens, ``leading`` tokens before
    the volume, ``text`` text tokens of the whole follow-up prompt. Layers 0..k run the new tokens
    (attending to the whole prompt); the later layers run the kept visual tokens and the text
    after the leading part (attending to all of it); no vision tower.
    """
    text_config = config.text_config
    layers, k = text_config.num_hidden_layers, config.its_layer
    linear, width = decoder_linear_per_token(config), _query_width(config)
    new, prompt = follow_up["new"], follow_up["prefix"] + follow_up["new"]
    visual = tokens["visual_after_pruning"] if its else tokens["visual_entering_llm"]
    late_keys = visual + follow_up["text"]
    late_queries = late_keys - follow_up["leading"]
    early = (k + 1) * (new * linear + 4.0 * new * prompt * width)
    late = (layers - k - 1) * (late_queries * linear + 4.0 * late_queries * late_keys * width)
    return early + late + 2.0 * text_config.hidden_size * text_config.vocab_size


#: figure -> (cost key, "time" if lower is better and proportional to cost, "rate" if inverse).
#: ``decode_flop_limit`` and ``end_to_end_flop_limit`` are the FLOP-only ratios of the two
#: figures whose limit is not a FLOP ratio (decode: bytes; whole answer: see :func:`end_to_end_limit`).
LIMITED_FIGURES = {
    "vision_s": ("vision_flops", "time"),
    "llm_prefill_s": ("llm_prefill_flops", "time"),
    "ttft_s": ("ttft_flops", "time"),
    "decode_tokens_per_s": ("decode_bytes_per_token", "rate"),
    "decode_flop_limit": ("decode_flops_per_token", "rate"),
    "end_to_end_flop_limit": ("answer_flops", "rate"),
    "train_samples_per_s": ("train_step_flops", "rate"),
}

#: What each figure's limit is the ratio of (in the report next to the limit).
LIMIT_BASIS = {
    "vision_s": "flops",
    "llm_prefill_s": "flops",
    "ttft_s": "flops",
    "decode_tokens_per_s": "bytes read per decode step",
    "end_to_end_tokens_per_s": "baseline TTFT x TTFT limit + baseline decode time / decode limit",
    "train_samples_per_s": "flops",
    "inference_increase_mib": "most tokens alive",
    "inference_peak_mib": "resident + baseline increase x its limit",
    "train_increase_mib": "most tokens alive",
}


def limit_ratios(cost: dict, baseline: dict) -> dict[str, float]:
    """Best ratio (method / baseline) each figure could reach if it followed its cost exactly.

    The whole answer's limit needs the baseline's measured times: :func:`end_to_end_limit`.
    """
    limits = {}
    for figure, (key, kind) in LIMITED_FIGURES.items():
        limits[figure] = cost[key] / baseline[key] if kind == "time" else baseline[key] / cost[key]
    limits["inference_increase_mib"] = max(
        cost["vision_patches"] / baseline["vision_patches"], cost["widest_llm_tokens"] / baseline["widest_llm_tokens"]
    )
    limits["train_increase_mib"] = limits["inference_increase_mib"]
    return limits


def end_to_end_limit(
    ttft_limit: float, decode_limit: float, baseline_ttft_s: float | None, baseline_decode_s: float | None
) -> float | None:
    """Whole-answer tokens/s limit: the baseline's TTFT and decode time, each shrunk by its own limit.

    Prefill follows the FLOPs and decoding the bytes, which have no common unit; the baseline's
    measured split between the two phases weighs them. None without the baseline's times.
    """
    if not baseline_ttft_s or not baseline_decode_s or ttft_limit <= 0 or decode_limit <= 0:
        return None
    return (baseline_ttft_s + baseline_decode_s) / (baseline_ttft_s * ttft_limit + baseline_decode_s / decode_limit)


def fraction_of_limit(achieved: float | None, limit: float | None, kind: str) -> float | None:
    """1.0 = the figure moved exactly as far as the token counts allow; below 1 = less than that."""
    if achieved is None or limit is None or achieved <= 0 or limit <= 0 or not math.isfinite(achieved):
        return None
    return limit / achieved if kind == "time" else achieved / limit
