"""Build one benchmark method: its model (random weights, the spec's shape, device and dtype) and inputs.

* Weights are random (timings do not depend on weight values) and created where they will
  run, in the run's dtype: the model is constructed under ``torch.device(spec.device)`` with the
  default dtype set to ``spec.dtype``, so the 3B shapes go straight to the GPU in bf16 and never
  exist in fp32 on the CPU. Only ITS's threshold MLP (12 -> hidden/8 -> 1) is kept in fp32, so
  the threshold it outputs is exact (see :func:`calibrate_its`).
* ``qwen2.5-vl``: the vision tower cuts the volume with Qwen2.5-VL's temporal patch of 2 and
  its three-channel patch embedding (the grey volume repeated on three channels, as Qwen sees a
  grey video), computed as a matmul like Photon's; the rest of the model is the same.
* ``photon`` and ``qwen2.5-vl`` run without any pruner (not even the scoring of ITS).
* ``photon-its``: ITS as shipped (scores, threshold MLP, hard drop after ``its_layer``), its
  MLP set to a constant threshold that keeps ``round(keep_ratio * V)`` of this prompt's V visual
  tokens: the budget a trained model has (paper: 0.39K of 1.0K), not whatever random weights keep.
* ``visionzip`` / ``hiprune``: the project's pruners with ``pruning_budget = kept / V``, so they
  keep exactly as many tokens as ITS.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from photonlib.benchmarks.spec import BenchSpec
from photonlib.model import PhotonConfig, PhotonForConditionalGeneration, PhotonProcessor
from photonlib.model.pruning.budget import kept_count
from photonlib.model.pruning.interface import LanguageStageInputs, TokenPruner, TokenSelection
from photonlib.model.pruning.its import instruction_weighted_scores, min_max_normalize
from photonlib.model.transformers_adapter import LinearPatchEmbed
from photonlib.volume import PreprocessConfig

QWEN_TEMPORAL_PATCH = 2
QWEN_CHANNELS = 3
# The compact tokenizer's own size: enough merges that the prompt has about as many tokens as with Qwen's (42 vs 44).
COMPACT_VOCAB = 512


class NoPruner:
    """No pruner at all: the language model runs without ITS's scoring (unlike the ``none`` pruner)."""

    name = "off"
    stage = "off"

    def select(self, inputs):  # pragma: no cover - never called: the model skips stage "off"
        raise RuntimeError("NoPruner.select must not be called")


class RecordingPruner:
    """Wraps a language-stage pruner and keeps the inputs of its last call (for calibration)."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.name, self.stage = inner.name, inner.stage
        self.last_inputs: LanguageStageInputs | None = None

    def select(self, inputs: LanguageStageInputs) -> TokenSelection:
        self.last_inputs = inputs
        return self.inner.select(inputs)


@dataclass
class MethodSetup:
    model: PhotonForConditionalGeneration
    inference: dict[str, torch.Tensor]  # input_ids, attention_mask, pixel_values, video_grid_thw
    training: dict[str, torch.Tensor]  # the same with the answer appended and labels
    follow_up: dict[str, torch.Tensor]  # inference inputs of the follow-up question (same volume)
    visual_tokens: int  # V: visual tokens in the prompt
    kept_tokens: int  # the pruning budget: round(keep_ratio * V) of Photon's tokens
    patches: int  # vision patches per volume
    pruner: TokenPruner | NoPruner  # passed to every forward and generate of this method
    its_threshold: dict | None = None

    @property
    def pruning(self) -> dict:
        """Keyword arguments choosing this method's pruning in a forward or generate call."""
        return {"pruner": self.pruner, "pruning_mode": "hard"}


def photon_token_count(spec: BenchSpec, config: PhotonConfig) -> int:
    t, h, w = config.token_grid(spec.volume_shape)
    return t * h * w


def budget_count(spec: BenchSpec, photon_tokens: int) -> int:
    """Visual tokens ITS and the fixed budgets keep: ``round(keep_ratio * V)``, in [1, V - 1]."""
    return kept_count(photon_tokens, spec.keep_ratio, drop_at_least_one=True)


def build_tokenizer(spec: BenchSpec):
    if spec.tokenizer == "qwen":
        return None  # PhotonProcessor.for_config uses the bundled Qwen tokenizer
    from photonlib.model.tokenizer import train_compact_tokenizer

    return train_compact_tokenizer([spec.question, spec.answer, spec.follow_up_question], vocab_size=COMPACT_VOCAB)


def model_config(spec: BenchSpec, method: str, tokenizer=None) -> PhotonConfig:
    """The configuration of ``method`` (the same shapes for every method but the patch size)."""
    overrides: dict = {"text": dict(spec.text), "vision": dict(spec.vision)}
    if tokenizer is not None:
        from photonlib.model.tokenizer import token_id_settings

        ids = token_id_settings(tokenizer)
        text_ids = ids.pop("text")
        if spec.vocab_size is not None:
            if spec.vocab_size < text_ids["vocab_size"]:
                raise ValueError(f"vocab_size {spec.vocab_size} is smaller than the tokenizer ({text_ids['vocab_size']})")
            text_ids["vocab_size"] = spec.vocab_size
        overrides["text"].update(text_ids)
        overrides.update(ids)
    if method == "qwen2.5-vl":
        overrides["vision"]["temporal_patch_size"] = QWEN_TEMPORAL_PATCH
    if spec.attn_implementation is not None:
        overrides["attn_implementation"] = spec.attn_implementation
    return PhotonConfig.from_preset(spec.model_preset, **overrides)


def torch_dtype(spec: BenchSpec) -> torch.dtype:
    return {"float32": torch.float32, "bfloat16": torch.bfloat16}[spec.dtype]


def build_model(spec: BenchSpec, config: PhotonConfig, qwen_input: bool) -> PhotonForConditionalGeneration:
    """Random weights created directly on ``spec.device`` in ``spec.dtype`` (seeded)."""
    torch.manual_seed(spec.seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch_dtype(spec))
    try:
        with torch.device(spec.device):
            model = PhotonForConditionalGeneration(config)
            if qwen_input:
                vision = model.model.visual
                vision.patch_embed = LinearPatchEmbed(
                    patch_size=config.vision_config.patch_size, temporal_patch_size=QWEN_TEMPORAL_PATCH,
                    in_channels=QWEN_CHANNELS, embed_dim=config.vision_config.hidden_size,
                )  # fmt: skip
                torch.nn.init.trunc_normal_(vision.patch_embed.proj.weight, std=0.02)
    finally:
        torch.set_default_dtype(previous)
    model.model.language_model.token_scheduler.float()
    return model.eval()


def volume(spec: BenchSpec) -> np.ndarray:
    """A seeded (D, H, W) volume in [0, 1] (values do not change any timing)."""
    return np.random.default_rng(spec.seed).random(spec.volume_shape, dtype=np.float32)


def build_inputs(spec: BenchSpec, config: PhotonConfig, tokenizer, qwen_input: bool) -> tuple[dict, dict, dict]:
    """Inference inputs (prompt only), training inputs (prompt + answer + labels) and the
    follow-up question's inference inputs, on the device."""
    # The configuration's patch size: 2 x 14 x 14 for the Qwen2.5-VL input, 14^3 for Photon.
    processor = PhotonProcessor.for_config(config, PreprocessConfig(model_grid=spec.volume_shape), tokenizer)
    array = volume(spec)
    inference = processor([array], [spec.question])
    training = processor([array], [spec.question], answers=[spec.answer])
    follow_up = processor([array], [spec.follow_up_question])
    batches = []
    for batch in (inference, training, follow_up):
        if qwen_input:  # (N, 2*14*14) one channel -> (N, 3*2*14*14), channel-major like Qwen's patches
            pixels = batch["pixel_values"]
            batch["pixel_values"] = pixels.unsqueeze(1).expand(-1, QWEN_CHANNELS, -1).reshape(pixels.shape[0], -1)
        batch = {key: value.to(spec.device) for key, value in batch.items()}
        batch["pixel_values"] = batch["pixel_values"].to(torch_dtype(spec))
        batches.append(batch)
    return batches[0], batches[1], batches[2]


def setup_method(spec: BenchSpec, method: str) -> MethodSetup:
    """Model and inputs of one method, with its pruner in place (ITS calibrated to the budget)."""
    tokenizer = build_tokenizer(spec)
    qwen_input = method == "qwen2.5-vl"
    config = model_config(spec, method, tokenizer)
    photon_config = model_config(spec, "photon", tokenizer)
    photon_tokens = photon_token_count(spec, photon_config)
    kept = budget_count(spec, photon_tokens)
    model = build_model(spec, config, qwen_input)
    inference, training, follow_up = build_inputs(spec, config, tokenizer, qwen_input)
    visual = int((inference["input_ids"] == config.video_token_id).sum())
    patches = int(inference["video_grid_thw"].prod(-1).sum())
    if method in ("visionzip", "hiprune"):
        pruner = model.build_pruner(method, kept / photon_tokens)
    elif method == "photon-its":
        pruner = model.build_pruner("its")
    else:  # qwen2.5-vl, photon
        pruner = NoPruner()
    setup = MethodSetup(model, inference, training, follow_up, visual, kept, patches, pruner)
    if method == "photon-its":
        setup.its_threshold = calibrate_its(model, inference, kept)
    return setup


@torch.no_grad()
def calibrate_its(model: PhotonForConditionalGeneration, batch: dict, kept: int) -> dict:
    """Set ITS's threshold MLP to the constant threshold that keeps ``kept`` visual tokens of ``batch``.

    The last layer's weights become 0 and its bias ``logit(theta / scale)``, with theta midway
    between the ``kept``-th and the next visual score ``s`` of this prompt (one scoring pass with
    the real ITS). Everything else of ITS runs as shipped, so its cost is measured as is.
    """
    scheduler = model.model.language_model.token_scheduler
    recorder = RecordingPruner(model.build_pruner("its"))
    model(**batch, logits_to_keep=1, pruner=recorder, pruning_mode="none")
    inputs = recorder.last_inputs
    raw = instruction_weighted_scores(inputs.instruction_queries, inputs.keys, inputs.instruction_mask, inputs.visual_mask)
    scores = min_max_normalize(raw.float())[0].double()
    ordered = torch.sort(scores, descending=True).values
    theta = float((ordered[kept - 1] + ordered[kept]) / 2)
    scale = scheduler.threshold_scale
    if not 0 < theta < scale:
        raise ValueError(
            f"ITS cannot keep {kept} of {scores.numel()} tokens: the threshold would be {theta:.4f}, outside (0, {scale})"
        )
    bias = math.log(theta / scale) - math.log1p(-theta / scale)
    last = scheduler.mlp[2]
    last.weight.zero_()
    last.bias.fill_(bias)
    return {
        "theta": theta,
        "mlp_output_bias": bias,
        "score_gap": float(ordered[kept - 1] - ordered[kept]),
        "how": "threshold MLP set to a constant: theta midway between the kept-th and next visual score",
    }
