"""Photon as a transformers model: Qwen2.5-VL classes, a 3D patch embedding, ITS in the loop.

* ``PhotonForConditionalGeneration`` and ``PhotonModel`` subclass the Qwen2.5-VL classes and keep
  their module names (``model.visual``, ``model.language_model``, ``lm_head``), so Qwen2.5-VL
  checkpoints load with the same keys. The vision tower is Qwen2.5-VL's own, configured with
  ``in_channels=1`` and a 14^3 kernel; its attention is split per depth slab, only the language
  model mixes across depth.
* The language model (:mod:`photonlib.model.text_model`) owns the decoder loop, so ITS can prune
  after layer ``its_layer``; every transformers internal is reached through
  :mod:`photonlib.model.transformers_adapter`.
* Which pruner runs and how (``pruner``, ``pruning_mode``) are arguments of ``forward`` and
  ``generate``; the configuration's fields are only the saved model's defaults.
* Decoding continues on the pruned cache with explicit 3D position ids (``generate`` here is
  Photon's own loop: transformers' ``generate`` derives positions and cache offsets from
  sequence lengths, which pruning invalidates).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from photonlib.model import transformers_adapter as qwen
from photonlib.model.compaction import (
    compose_kept,
    gather_position_rows,
    gather_positions,
    kept_positions,
    scatter_visual,
)
from photonlib.model.configuration import PhotonConfig
from photonlib.model.decoding import GREEDY, DecodingSettings, next_token, seen_tokens
from photonlib.model.positions import build_position_ids, next_positions
from photonlib.model.prompt_prefix import PrefixCache, prefix_length
from photonlib.model.pruning.interface import TokenPruner, VisionStageInputs
from photonlib.model.pruning.registry import build_pruner
from photonlib.model.text_model import PhotonTextModel
from photonlib.model.tokens import IGNORE_INDEX, instruction_mask_from_ids, merged_grids

#: Decoding steps whose rotary cos/sin are computed together, and the KV cache's first room.
DECODE_CHUNK = 256


# ----------------------------------------------------------------------------- outputs
@dataclass
class PhotonOutput:
    """Model output; ``keep_probability``/``keep_mask`` are (B, V) in (t, h, w) token-grid order.

    A plain dataclass: transformers' ModelOutput renames fields between releases.
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    cache: qwen.KVCache | None = None
    attention_mask: torch.Tensor | None = None
    position_ids: torch.Tensor | None = None
    kept_positions: torch.Tensor | None = None
    keep_probability: torch.Tensor | None = None
    keep_mask: torch.Tensor | None = None
    token_grids: torch.Tensor | None = None  # (B, 3) language-model token grid (t, h, w)
    visual_scores: torch.Tensor | None = None  # (B, V) ITS's raw scores with gradient, when asked for (training)
    prefix_reused: bool = False  # layers 0..k of the prompt's prefix came from a PrefixCache


@dataclass
class PhotonGeneration:
    """What :meth:`PhotonForConditionalGeneration.generate` returns."""

    sequences: torch.Tensor  # (B, N) generated token ids, padded with pad_token_id after EOS
    keep_probability: torch.Tensor | None  # (B, V)
    keep_mask: torch.Tensor | None  # (B, V)
    token_grids: torch.Tensor | None  # (B, 3)
    timings: dict[str, float] = field(default_factory=dict)  # seconds: vision, prefill, decode
    stopped: bool = False  # True when should_stop ended the decoding early
    logits: torch.Tensor | None = None  # (B, N, vocab) with output_logits=True
    prefix_reused: bool = False  # the prefill reused a saved prompt prefix (a follow-up question)

    def token_maps(self, sample: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Keep probability and decision of one sample as (t, h, w) grids: the heatmap."""
        t, h, w = (int(v) for v in self.token_grids[sample])
        return self.keep_probability[sample].view(t, h, w), self.keep_mask[sample].view(t, h, w)


# ----------------------------------------------------------------------------- sub-models
# transformers initialises each sub-model with its own _init_weights, so the Photon-specific
# initialisations live on the sub-models that own the modules.
class PhotonVisionModel(qwen.QwenVisionTower):
    """Qwen2.5-VL's vision tower; its patch embedding is the one-channel 14^3 Conv3d, run as a matmul."""

    def __init__(self, config, *args, **kwargs) -> None:
        super().__init__(config, *args, **kwargs)
        # The same module and weights (already initialised), computed as one matrix product.
        self.patch_embed.__class__ = qwen.LinearPatchEmbed

    def _init_weights(self, module: nn.Module) -> None:
        # Each init function skips a tensor already initialised in this pass, so Photon's own
        # choices must replace the generic ones rather than follow them.
        if isinstance(module, nn.Conv3d):
            qwen.trunc_normal_(module.weight, std=0.02)  # as the released 3D patch embedding
            return
        super()._init_weights(module)


# ----------------------------------------------------------------------------- full model
class PhotonPreTrainedModel(qwen.QwenPreTrainedModel):
    config_class = PhotonConfig
    config: PhotonConfig


class PhotonModel(PhotonPreTrainedModel, qwen.QwenModel):
    """Vision tower + Photon language model; module names as in ``Qwen2_5_VLModel``."""

    def __init__(self, config: PhotonConfig) -> None:
        PhotonPreTrainedModel.__init__(self, config)  # not Qwen2_5_VLModel.__init__: it would build a plain LM
        self.visual = qwen.build_submodel(PhotonVisionModel, config.vision_config)
        self.language_model = qwen.build_submodel(
            PhotonTextModel, config.text_config, its_layer=config.its_layer, threshold_scale=config.its_threshold_scale
        )
        self.rope_deltas = None
        self.post_init()

    def encode_volumes(self, pixel_values: torch.Tensor, video_grid_thw: torch.Tensor) -> list[torch.Tensor]:
        """Question-independent work: the vision tower's merged tokens, one (V, D) tensor per volume."""
        tokens = qwen.vision_tokens(self.visual, pixel_values.to(self.visual.dtype), video_grid_thw)
        sizes = (video_grid_thw.prod(-1) // self.config.spatial_merge_size**2).tolist()
        return list(torch.split(tokens, sizes))


class PhotonForConditionalGeneration(PhotonPreTrainedModel, qwen.QwenForConditionalGeneration):
    """Photon: ask a question about a volume; returns logits and the kept-token map per sample."""

    def __init__(self, config: PhotonConfig) -> None:
        PhotonPreTrainedModel.__init__(self, config)
        self.model = PhotonModel(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self._pruner: TokenPruner | None = None
        self._pruner_key: tuple | None = None  # the config values the cached pruner was built from
        self.post_init()

    # ------------------------------------------------------------------ pruning choice
    @property
    def pruner(self) -> TokenPruner:
        """The pruner ``config.pruner`` names: the saved model's default (rebuilt when the configuration changes)."""
        config = self.config
        key = (config.pruner, config.its_temperature, config.pruning_budget, config.its_score_precision)
        if self._pruner is None or self._pruner_key != key:
            self._pruner = self.build_pruner(self.config.pruner, self.config.pruning_budget)
            self._pruner_key = key
        return self._pruner

    def build_pruner(self, name: str, budget: float | None = None) -> TokenPruner:
        """A pruner by name (``its``, ``none``, ``random``, ``visionzip``, ``hiprune``) on this model's ITS."""
        config = self.config
        scheduler = self.model.language_model.token_scheduler
        return build_pruner(name, scheduler, config.its_temperature, budget, config.its_score_precision)

    def token_grids(self, video_grid_thw: torch.Tensor) -> torch.Tensor:
        """(N, 3) language-model token grids (t, h, w) of the batch's volumes."""
        return merged_grids(video_grid_thw, self.config.spatial_merge_size)

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        video_grid_thw: torch.Tensor | None = None,
        visual_embeddings: list[torch.Tensor] | None = None,
        labels: torch.Tensor | None = None,
        cache: qwen.KVCache | None = None,
        use_cache: bool = False,
        logits_to_keep: int = 0,
        answer_mask: torch.Tensor | None = None,
        pruner: TokenPruner | None = None,
        pruning_mode: str | None = None,
        frozen_keep: torch.Tensor | None = None,
        flipped_keep: torch.Tensor | None = None,
        prefix_cache: PrefixCache | None = None,
        **_: object,
    ) -> PhotonOutput:
        """Prefill (or training) forward over whole prompts with their volumes.

        ``pruner`` and ``pruning_mode`` default to the configuration's (the saved model's
        choice). ``visual_embeddings`` (from :meth:`PhotonModel.encode_volumes`) skip the vision
        tower, so several questions about one volume pay for it once. ``answer_mask`` marks the
        answer tokens of a teacher-forced input (default: where ``labels`` are set); with
        ``config.its_answer_sees_dropped`` False (the default) hard pruning hides the dropped
        visual tokens from them in every layer, exactly as decoding does. ``frozen_keep`` and
        ``flipped_keep`` (B,) are the release's training variants (see ``PhotonTextModel``).
        ``prefix_cache`` (inference with ``use_cache``, a batch of one): reuse its saved prompt
        prefix when this prompt starts with it, else save this prompt's
        (:mod:`photonlib.model.prompt_prefix`); the result is the same either way.
        """
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        config = self.config
        pruner = pruner if pruner is not None else self.pruner
        pruning_mode = pruning_mode if pruning_mode is not None else config.pruning_mode
        reused, record = None, None
        shareable = self._can_share_prefix(input_ids, attention_mask, use_cache, logits_to_keep, pruner, labels, answer_mask)
        if prefix_cache is not None and shareable:
            reused = prefix_cache.lookup(input_ids)
            length = prefix_length(input_ids, config.vision_end_token_id) if reused is None else None
            record = input_ids[0, :length] if length is not None and length < input_ids.shape[1] else None
        embeddings = self.model.language_model.embed_tokens(input_ids[:, reused.length :] if reused else input_ids)
        visual_mask = (input_ids == config.video_token_id) & attention_mask.bool()
        grids = vision_selection = vision_kept = None
        if visual_mask.any():
            if video_grid_thw is None:
                raise ValueError("the prompt has visual tokens but no video_grid_thw was given")
            grids = self.token_grids(video_grid_thw)
        if grids is not None and reused is None:  # a reused prefix's visual tokens are not embedded again
            if pruner.stage == "vision":
                if pixel_values is None:
                    raise ValueError(f"the {pruner.name} pruner looks inside the vision tower: pass pixel_values")
                with pruner.observe(self.model.visual):
                    visual_embeddings = self.model.encode_volumes(pixel_values, video_grid_thw)
                vision_selection = pruner.select(VisionStageInputs(visual_embeddings=visual_embeddings, token_grids=grids))
                if vision_selection.embeddings is not None:
                    visual_embeddings = vision_selection.embeddings
            elif visual_embeddings is None:
                if pixel_values is None:
                    raise ValueError("the prompt has visual tokens but neither pixel_values nor visual_embeddings")
                visual_embeddings = self.model.encode_volumes(pixel_values, video_grid_thw)
            visual = torch.cat(list(visual_embeddings)).to(embeddings.dtype)
            if visual.shape[0] != int(visual_mask.sum()):
                raise ValueError(
                    f"{int(visual_mask.sum())} visual tokens in the prompt but {visual.shape[0]} visual embeddings"
                )
            embeddings = embeddings.masked_scatter(visual_mask.unsqueeze(-1), visual)
        position_ids = build_position_ids(
            input_ids, attention_mask, grids, config.video_token_id, config.temporal_position_scale
        )
        instruction_mask = instruction_mask_from_ids(input_ids, config.vision_end_token_id, config.im_end_token_id)

        if vision_selection is not None:
            # Fixed-budget baselines drop tokens before the language model: one gather for everything.
            vision_kept = kept_positions(attention_mask.bool() & (~visual_mask | scatter_visual(visual_mask, vision_selection.keep)))
            embeddings = gather_positions(embeddings, vision_kept)
            position_ids = gather_position_rows(position_ids, vision_kept)
            instruction_mask = gather_positions(instruction_mask.unsqueeze(-1), vision_kept, False).squeeze(-1)
            attention_mask = (vision_kept >= 0).long()
            visual_mask = torch.zeros_like(attention_mask, dtype=torch.bool)  # nothing left for ITS to do

        text = self.model.language_model(
            inputs_embeds=embeddings,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            use_cache=use_cache,
            visual_mask=visual_mask,
            instruction_mask=instruction_mask,
            pruner=pruner if pruner.stage == "language" else None,
            pruning_mode=pruning_mode,
            straight_through=config.surrogate_gradient == "straight_through",
            answer_mask=self._answer_mask(answer_mask, labels, vision_kept),
            frozen_keep=frozen_keep,
            flipped_keep=flipped_keep,
            prefix=reused,
            record_prefix=record,
        )
        if text.prefix is not None:
            prefix_cache.store(text.prefix)
        kept = compose_kept(vision_kept, text.kept_positions)
        selection = vision_selection if vision_selection is not None else text.selection
        hidden = text.last_hidden_state
        if logits_to_keep:
            hidden = hidden[:, -logits_to_keep:]
        logits = self.lm_head(hidden)

        loss = None
        if labels is not None:
            if kept is not None:
                labels = gather_positions(labels.unsqueeze(-1), kept, IGNORE_INDEX).squeeze(-1)
            loss = F.cross_entropy(
                logits[:, :-1].float().reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=IGNORE_INDEX
            )
        return PhotonOutput(
            loss=loss,
            logits=logits,
            cache=text.cache,
            attention_mask=text.attention_mask,
            position_ids=text.position_ids,
            kept_positions=kept,
            keep_probability=selection.keep_probability if selection is not None else None,
            keep_mask=selection.keep if selection is not None else None,
            token_grids=grids,
            visual_scores=selection.scores if selection is not None else None,
            prefix_reused=reused is not None,
        )

    def _can_share_prefix(self, input_ids, attention_mask, use_cache, logits_to_keep, pruner, labels, answer_mask) -> bool:
        """A prompt prefix is shared by inference prefills of one unpadded prompt whose visual tokens
        all reach the language model (a vision-stage pruner drops some before it) and that want
        the last positions' logits only (the later layers skip the text before the volume)."""
        return (
            use_cache
            and logits_to_keep > 0
            and not self.training
            and labels is None
            and answer_mask is None
            and input_ids.shape[0] == 1
            and pruner.stage != "vision"
            and bool(attention_mask.all())
        )

    def _answer_mask(self, answer_mask, labels, vision_kept) -> torch.Tensor | None:
        if self.config.its_answer_sees_dropped or qwen.attention_implementation(self.config) == "flash_attention_2":
            return None  # the released training (flash attention cannot take the per-token mask)
        if answer_mask is None and labels is not None:
            answer_mask = labels != IGNORE_INDEX
        if answer_mask is not None and vision_kept is not None:  # a vision-stage pruner already dropped tokens
            answer_mask = gather_positions(answer_mask.unsqueeze(-1), vision_kept, False).squeeze(-1)
        return answer_mask

    # ------------------------------------------------------------------ decoding
    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        video_grid_thw: torch.Tensor | None = None,
        visual_embeddings: list[torch.Tensor] | None = None,
        max_new_tokens: int = 64,
        decoding: DecodingSettings | None = None,
        eos_token_id: int | list[int] | None = None,
        pad_token_id: int | None = None,
        generator: torch.Generator | None = None,
        on_token: Callable[[torch.Tensor], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        output_logits: bool = False,
        pruner: TokenPruner | None = None,
        pruning_mode: str | None = None,
        prefix_cache: PrefixCache | None = None,
        **_: object,
    ) -> PhotonGeneration:
        """Decoding on the pruned KV cache.

        ``decoding`` defaults to the model's generation config (a checkpoint's
        ``generation_config.json``: the release samples with a repetition penalty; a model without
        sampling settings decodes greedily). ``on_token`` is called with each new (B,) token tensor (streaming); ``should_stop`` is
        polled between tokens (cancellation). Every call starts from a fresh KV cache;
        ``prefix_cache`` (as in :meth:`forward`) lets a follow-up question about the same volume
        skip the question-independent part of the prefill. ``pruner``/``pruning_mode`` as in
        :meth:`forward`.

        Each decoding step costs the model's work and nothing that grows with the answer: the
        KV cache is pre-allocated (no concatenation per token; it doubles when full), the rotary
        cos/sin are computed for ``DECODE_CHUNK`` steps at a time, the attention mask is one
        buffer (none at all without padding) and the repetition penalty keeps a running set of
        seen ids.
        """
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        pruner = pruner if pruner is not None else self.pruner
        generation_config = getattr(self, "generation_config", None)
        if decoding is None:
            decoding = DecodingSettings.from_generation_config(generation_config) if generation_config else GREEDY
        if eos_token_id is None and generation_config is not None:
            eos_token_id = generation_config.eos_token_id
        eos_ids = eos_token_id if eos_token_id is not None else self.config.text_config.eos_token_id
        eos_ids = torch.tensor(eos_ids if isinstance(eos_ids, list) else [eos_ids], device=input_ids.device)
        pad_id = pad_token_id if pad_token_id is not None else self.config.text_config.pad_token_id
        if pad_id is None:  # checkpoints without a pad token: finished rows repeat an EOS id
            pad_id = int(eos_ids[0])
        timings = {"vision": 0.0, "prefill": 0.0, "decode": 0.0}
        synchronize = torch.cuda.synchronize if input_ids.is_cuda else (lambda: None)

        # A vision-stage pruner must watch the tower run, so the prefill encodes the volume itself
        # (its vision time is then counted in "prefill").
        vision_stage = pruner.stage == "vision"
        if visual_embeddings is None and pixel_values is not None and not vision_stage:
            started = time.perf_counter()
            visual_embeddings = self.model.encode_volumes(pixel_values, video_grid_thw)
            synchronize()
            timings["vision"] = time.perf_counter() - started

        started = time.perf_counter()
        prefill = self(
            input_ids, attention_mask, pixel_values=pixel_values if vision_stage else None,
            video_grid_thw=video_grid_thw, visual_embeddings=visual_embeddings, use_cache=True, logits_to_keep=1,
            pruner=pruner, pruning_mode=pruning_mode, prefix_cache=prefix_cache,
        )  # fmt: skip
        synchronize()
        timings["prefill"] = time.perf_counter() - started

        started = time.perf_counter()
        language_model = self.model.language_model
        cache, mask = prefill.cache, prefill.attention_mask
        # Once per call: a transformers release that stopped filling the cache fails here, loudly.
        qwen.check_cache_filled(cache, len(language_model.layers), mask.shape[1])
        steps = max_new_tokens - 1  # the first token comes from the prefill's logits
        cached = mask.shape[1]
        if steps > 0:
            qwen.preallocate_cache(cache, min(steps, DECODE_CHUNK))
            step_mask = qwen.decoding_masks(language_model.config, mask, steps, prefill.logits.dtype, cache)
            first = next_positions(prefill.position_ids, mask).view(1, -1, 1)
        logits = prefill.logits[:, -1]
        seen = seen_tokens(input_ids, logits.shape[-1]) if decoding.repetition_penalty != 1.0 else None
        finished = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        generated: list[torch.Tensor] = []
        step_logits: list[torch.Tensor] = []
        stopped = False
        for step in range(max_new_tokens):
            if output_logits:
                step_logits.append(logits.float())
            token = next_token(logits, seen, decoding, generator)
            token = torch.where(finished, torch.full_like(token, pad_id), token)
            generated.append(token)
            if seen is not None:
                seen.scatter_(1, token.unsqueeze(1), True)
            if on_token is not None:
                on_token(token)
            finished |= torch.isin(token, eos_ids)
            if bool(finished.all()) or step == steps:
                break
            if should_stop is not None and should_stop():
                stopped = True
                break
            offset = step % DECODE_CHUNK
            if offset == 0:  # the rotary cos/sin of the next DECODE_CHUNK steps, in one call
                chunk = torch.arange(step, min(step + DECODE_CHUNK, steps), device=first.device)
                # The logits only tell the rotary embedding the dtype and device to return.
                cos, sin = qwen.rotary_embeddings(language_model, prefill.logits, (first + chunk).expand(3, -1, -1))
            hidden = language_model.decode_step(
                language_model.embed_tokens(token.unsqueeze(1)), step_mask(cached),
                (cos[:, offset : offset + 1], sin[:, offset : offset + 1]), cache,
            )  # fmt: skip
            cached += 1
            logits = self.lm_head(hidden[:, -1])
        synchronize()
        timings["decode"] = time.perf_counter() - started
        sequences = torch.stack(generated, dim=1) if generated else input_ids.new_zeros((input_ids.shape[0], 0))
        return PhotonGeneration(
            sequences=sequences,
            keep_probability=prefill.keep_probability,
            keep_mask=prefill.keep_mask,
            token_grids=prefill.token_grids,
            timings=timings,
            stopped=stopped,
            logits=torch.stack(step_logits, dim=1) if step_logits else None,
            prefix_reused=prefill.prefix_reused,
        )
