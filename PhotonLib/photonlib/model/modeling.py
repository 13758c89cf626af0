"""Photon as a transformers model: Qwen2.5-VL classes, a 3D patch embedding, ITS in the loop.

How ITS is wired in (see also ``docs/model.md``):

* ``PhotonForConditionalGeneration`` and ``PhotonModel`` subclass the Qwen2.5-VL classes and keep
  their module names (``model.visual``, ``model.language_model``, ``lm_head``), so Qwen2.5-VL
  checkpoints load with the same keys. The vision tower is Qwen2.5-VL's own, configured with
  ``in_channels=1`` and a 14^3 kernel; its attention is split per depth slab, only the language
  model mixes across depth.
* ``PhotonTextModel`` subclasses ``Qwen2_5_VLTextModel`` and owns the decoder-layer loop (the
  5.x loop has no per-layer callback). After layer ``its_layer`` it asks a token pruner which
  visual tokens to keep, then removes the others from the hidden states, the KV cache of layers
  0..k, the rotary cos/sin, the 3D position ids and the attention mask, and rebuilds the causal
  mask for the remaining layers. Samples of a batch keep different counts: the shorter ones are
  left-padded, so the newest token of every sample is always at index -1.
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
from transformers import initialization as init
from transformers.cache_utils import DynamicCache
from transformers.masking_utils import create_causal_mask
from transformers.modeling_outputs import ModelOutput
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import (
    Qwen2_5_VisionTransformerPretrainedModel,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLModel,
    Qwen2_5_VLPreTrainedModel,
    Qwen2_5_VLTextModel,
    apply_rotary_pos_emb,
    repeat_kv,
)

from photonlib.model.configuration import PhotonConfig
from photonlib.model.pruning.its import ThresholdPredictor
from photonlib.model.pruning.pruners import (
    LanguageStageInputs,
    TokenPruner,
    TokenSelection,
    VisionStageInputs,
    build_pruner,
)
from photonlib.model.pruning.sgp import gather_kept_tokens, gather_positions, kept_positions

IGNORE_INDEX = -100


# ----------------------------------------------------------------------------- outputs
@dataclass
class PhotonTextOutput(ModelOutput):
    last_hidden_state: torch.Tensor | None = None
    past_key_values: DynamicCache | None = None
    attention_mask: torch.Tensor | None = None  # (B, M) after pruning
    position_ids: torch.Tensor | None = None  # (3, B, M) after pruning
    kept_positions: torch.Tensor | None = None  # (B, M) original index of each slot, -1 = padding
    selection: TokenSelection | None = None


@dataclass
class PhotonOutput(ModelOutput):
    """Model output; ``keep_probability``/``keep_mask`` are (B, V) in (t, h, w) token-grid order."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    past_key_values: DynamicCache | None = None
    attention_mask: torch.Tensor | None = None
    position_ids: torch.Tensor | None = None
    kept_positions: torch.Tensor | None = None
    keep_probability: torch.Tensor | None = None
    keep_mask: torch.Tensor | None = None
    token_grids: torch.Tensor | None = None  # (B, 3) language-model token grid (t, h, w)


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

    def token_maps(self, sample: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Keep probability and decision of one sample as (t, h, w) grids: the heatmap."""
        t, h, w = (int(v) for v in self.token_grids[sample])
        return self.keep_probability[sample].view(t, h, w), self.keep_mask[sample].view(t, h, w)


# ----------------------------------------------------------------------------- helpers
def instruction_mask_from_ids(input_ids: torch.Tensor, vision_end_id: int, im_end_id: int) -> torch.Tensor:
    """True on the instruction: tokens after the last ``<|vision_end|>`` up to the next ``<|im_end|>``."""
    batch, length = input_ids.shape
    positions = torch.arange(length, device=input_ids.device).expand(batch, length)
    is_end = input_ids == vision_end_id
    last_end = torch.where(is_end, positions, torch.full_like(positions, -1)).amax(dim=1, keepdim=True)
    after = (positions > last_end) & (last_end >= 0)
    closing = (input_ids == im_end_id) & after
    first_close = torch.where(closing, positions, torch.full_like(positions, length)).amin(dim=1, keepdim=True)
    return after & (positions < first_close)


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


def _compose_kept(first: torch.Tensor | None, second: torch.Tensor | None) -> torch.Tensor | None:
    """Original positions after two successive compactions (either may be absent)."""
    if first is None or second is None:
        return second if first is None else first
    return gather_positions(first.unsqueeze(-1), second, -1).squeeze(-1)


def _gather_rows(position_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Gather (3, B, L) position ids at (B, M) slots (padding slots get 0)."""
    return torch.stack([gather_positions(row.unsqueeze(-1), positions).squeeze(-1) for row in position_ids])


# ----------------------------------------------------------------------------- sub-models
# transformers initialises each sub-model with its own _init_weights, so the Photon-specific
# initialisations live on the sub-models that own the modules.
class PhotonVisionModel(Qwen2_5_VisionTransformerPretrainedModel):
    """Qwen2.5-VL's vision tower; its patch embedding is the one-channel 14^3 Conv3d."""

    def _init_weights(self, module: nn.Module) -> None:
        # Each init function skips a tensor already initialised in this pass, so Photon's own
        # choices must replace the generic ones rather than follow them.
        if isinstance(module, nn.Conv3d):
            init.trunc_normal_(module.weight, std=0.02)  # as the released 3D patch embedding
            return
        super()._init_weights(module)


class PhotonTextModel(Qwen2_5_VLTextModel):
    """Qwen2.5-VL's language model with the decoder loop owned here, so ITS can prune after layer k."""

    def __init__(self, config, its_layer: int = 0, threshold_scale: float = 0.9) -> None:
        super().__init__(config)
        self.its_layer = its_layer
        self.token_scheduler = ThresholdPredictor(config.hidden_size, threshold_scale)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        # As released: Xavier-uniform weights and zero biases, the output bias at -5 so ITS starts
        # by keeping nearly everything.
        scheduler = self._modules.get("token_scheduler")
        if scheduler is not None and isinstance(module, nn.Linear) and any(module is layer for layer in scheduler.mlp):
            init.xavier_uniform_(module.weight)
            init.constant_(module.bias, ThresholdPredictor.INITIAL_BIAS if module is scheduler.mlp[2] else 0.0)
            return
        super()._init_weights(module)

    def forward(
        self,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        past_key_values: DynamicCache | None = None,
        use_cache: bool = False,
        visual_mask: torch.Tensor | None = None,
        instruction_mask: torch.Tensor | None = None,
        pruner: TokenPruner | None = None,
        pruning_mode: str = "hard",
        straight_through: bool = False,
        answer_mask: torch.Tensor | None = None,
    ) -> PhotonTextOutput:
        """``answer_mask`` (B, L): answer tokens in the input (teacher forcing). In hard mode they
        do not see dropped visual tokens in any layer, as in decoding, whose cache has lost them."""
        if use_cache and past_key_values is None:
            past_key_values = DynamicCache(config=self.config)
        hidden = inputs_embeds
        mask = create_causal_mask(self.config, hidden, attention_mask, past_key_values)
        cos, sin = self.rotary_emb(hidden, position_ids)
        scheduling = (
            pruner is not None and visual_mask is not None and hidden.shape[1] > 1 and bool(visual_mask.any())
        )
        selection = kept = None
        early_mask = mask  # layers 0..k
        if scheduling and pruning_mode == "hard" and answer_mask is not None and bool(answer_mask.any()):
            # ITS decides from the prompt alone (attention is causal: answer tokens cannot change
            # the decision), so decide first, then run layers 0..k with the answer blind to the
            # tokens about to be dropped.
            selection = pruner.select(self._prompt_scoring_inputs(hidden, mask, cos, sin, instruction_mask, visual_mask))
            keep_full = torch.zeros_like(visual_mask).masked_scatter(visual_mask, selection.keep)
            early_mask = answer_blind_mask(attention_mask, answer_mask.bool(), visual_mask & ~keep_full, hidden.dtype)

        for index, layer in enumerate(self.layers):
            if scheduling and index == self.its_layer and selection is None:
                scoring_inputs = self._scoring_inputs(layer, hidden, cos, sin, instruction_mask, visual_mask)
            hidden = layer(
                hidden,
                attention_mask=early_mask if index <= self.its_layer else mask,
                position_embeddings=(cos, sin),
                past_key_values=past_key_values,
                use_cache=use_cache,
            )
            if scheduling and index == self.its_layer:
                selection = selection if selection is not None else pruner.select(scoring_inputs)
                probability_full = torch.zeros(visual_mask.shape, dtype=torch.float32, device=hidden.device)
                probability_full = probability_full.masked_scatter(visual_mask, selection.keep_probability)
                if pruning_mode == "soft":
                    factor = torch.where(visual_mask, probability_full, torch.ones_like(probability_full))
                    hidden = hidden * factor.unsqueeze(-1).to(hidden.dtype)
                elif pruning_mode == "hard":
                    keep_full = torch.zeros_like(visual_mask).masked_scatter(visual_mask, selection.keep)
                    presence = attention_mask.bool() & (~visual_mask | keep_full)
                    kept = kept_positions(presence)
                    hidden = gather_kept_tokens(
                        hidden, kept, probability_full if self.training else None, visual_mask,
                        straight_through=straight_through,
                    )  # fmt: skip
                    attention_mask = (kept >= 0).long()
                    position_ids = _gather_rows(position_ids, kept)
                    cos, sin = gather_positions(cos, kept), gather_positions(sin, kept)
                    if past_key_values is not None:
                        for cached in past_key_values.layers[: index + 1]:
                            cached.keys = gather_positions(cached.keys.transpose(1, 2), kept).transpose(1, 2)
                            cached.values = gather_positions(cached.values.transpose(1, 2), kept).transpose(1, 2)
                    # Size the mask from the next layer's (still empty) cache, not layer 0's pruned one.
                    mask = create_causal_mask(
                        self.config, hidden, attention_mask, past_key_values,
                        layer_idx=index + 1 if past_key_values is not None else None,
                    )  # fmt: skip

        return PhotonTextOutput(
            last_hidden_state=self.norm(hidden),
            past_key_values=past_key_values,
            attention_mask=attention_mask,
            position_ids=position_ids,
            kept_positions=kept,
            selection=selection,
        )

    @torch.no_grad()
    def _prompt_scoring_inputs(self, hidden, mask, cos, sin, instruction_mask, visual_mask) -> LanguageStageInputs:
        """Layer k's scoring inputs from a first, gradient-free pass through layers 0..k-1."""
        for layer in self.layers[: self.its_layer]:
            hidden = layer(hidden, attention_mask=mask, position_embeddings=(cos, sin))
        return self._scoring_inputs(self.layers[self.its_layer], hidden, cos, sin, instruction_mask, visual_mask)

    @torch.no_grad()
    def _scoring_inputs(self, layer, hidden, cos, sin, instruction_mask, visual_mask) -> LanguageStageInputs:
        """Layer k's post-RoPE queries and keys, recomputed from its input (cheap: two projections)."""
        attention = layer.self_attn
        batch, length, _ = hidden.shape
        normed = layer.input_layernorm(hidden)
        queries = attention.q_proj(normed).view(batch, length, -1, attention.head_dim).transpose(1, 2)
        keys = attention.k_proj(normed).view(batch, length, -1, attention.head_dim).transpose(1, 2)
        queries, keys = apply_rotary_pos_emb(queries, keys, cos, sin)
        keys = repeat_kv(keys, attention.num_key_value_groups)
        return LanguageStageInputs(queries=queries, keys=keys, instruction_mask=instruction_mask, visual_mask=visual_mask)


# ----------------------------------------------------------------------------- full model
class PhotonPreTrainedModel(Qwen2_5_VLPreTrainedModel):
    config_class = PhotonConfig
    config: PhotonConfig


class PhotonModel(PhotonPreTrainedModel, Qwen2_5_VLModel):
    """Vision tower + Photon language model; module names as in ``Qwen2_5_VLModel``."""

    def __init__(self, config: PhotonConfig) -> None:
        PhotonPreTrainedModel.__init__(self, config)  # not Qwen2_5_VLModel.__init__: it would build a plain LM
        self.visual = PhotonVisionModel._from_config(config.vision_config)
        self.language_model = PhotonTextModel._from_config(
            config.text_config, its_layer=config.its_layer, threshold_scale=config.its_threshold_scale
        )
        self.rope_deltas = None
        self.post_init()

    def encode_volumes(self, pixel_values: torch.Tensor, video_grid_thw: torch.Tensor) -> list[torch.Tensor]:
        """Question-independent work: the vision tower's merged tokens, one (V, D) tensor per volume."""
        output = self.visual(pixel_values.to(self.visual.dtype), grid_thw=video_grid_thw)
        sizes = (video_grid_thw.prod(-1) // self.config.spatial_merge_size**2).tolist()
        return list(torch.split(output.pooler_output, sizes))


class PhotonForConditionalGeneration(PhotonPreTrainedModel, Qwen2_5_VLForConditionalGeneration):
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
        """The pruner named by ``config.pruner`` (rebuilt when the configuration changes)."""
        key = (self.config.pruner, self.config.its_temperature, self.config.pruning_budget)
        if self._pruner is None or self._pruner_key != key:
            self._pruner = build_pruner(
                self.config.pruner, self.model.language_model.token_scheduler,
                self.config.its_temperature, self.config.pruning_budget,
            )  # fmt: skip
            self._pruner_key = key
        return self._pruner

    def token_grids(self, video_grid_thw: torch.Tensor) -> torch.Tensor:
        merge = self.config.spatial_merge_size
        grids = video_grid_thw.clone()
        grids[:, 1:] //= merge
        return grids

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        video_grid_thw: torch.Tensor | None = None,
        visual_embeddings: list[torch.Tensor] | None = None,
        labels: torch.Tensor | None = None,
        past_key_values: DynamicCache | None = None,
        use_cache: bool = False,
        logits_to_keep: int = 0,
        answer_mask: torch.Tensor | None = None,
        **_: object,
    ) -> PhotonOutput:
        """Prefill (or training) forward over whole prompts with their volumes.

        ``visual_embeddings`` (from :meth:`PhotonModel.encode_volumes`) skip the vision tower, so
        several questions about one volume pay for it once. ``answer_mask`` marks the answer
        tokens of a teacher-forced input (default: where ``labels`` are set); with
        ``config.its_answer_sees_dropped`` False (the default) hard pruning hides the dropped
        visual tokens from them in every layer, exactly as decoding does.
        """
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        config = self.config
        embeddings = self.model.language_model.embed_tokens(input_ids)
        visual_mask = (input_ids == config.video_token_id) & attention_mask.bool()
        pruner = self.pruner
        grids = vision_selection = vision_kept = None
        if visual_mask.any():
            if video_grid_thw is None:
                raise ValueError("the prompt has visual tokens but no video_grid_thw was given")
            grids = self.token_grids(video_grid_thw)
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
        position_ids = build_position_ids(input_ids, attention_mask, grids, config.video_token_id)
        instruction_mask = instruction_mask_from_ids(input_ids, config.vision_end_token_id, config.im_end_token_id)

        if vision_selection is not None:
            # Fixed-budget baselines drop tokens before the language model: one gather for everything.
            keep_full = torch.zeros_like(visual_mask).masked_scatter(visual_mask, vision_selection.keep)
            vision_kept = kept_positions(attention_mask.bool() & (~visual_mask | keep_full))
            embeddings = gather_positions(embeddings, vision_kept)
            position_ids = _gather_rows(position_ids, vision_kept)
            instruction_mask = gather_positions(instruction_mask.unsqueeze(-1), vision_kept, False).squeeze(-1)
            attention_mask = (vision_kept >= 0).long()
            visual_mask = torch.zeros_like(attention_mask, dtype=torch.bool)  # nothing left for ITS to do

        text = self.model.language_model(
            inputs_embeds=embeddings,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            use_cache=use_cache,
            visual_mask=visual_mask,
            instruction_mask=instruction_mask,
            pruner=pruner if pruner.stage == "language" else None,
            pruning_mode=config.pruning_mode,
            straight_through=config.surrogate_gradient == "straight_through",
            answer_mask=self._answer_mask(answer_mask, labels, vision_kept),
        )
        kept = _compose_kept(vision_kept, text.kept_positions)
        text.kept_positions = kept
        if vision_selection is not None:
            text.selection = vision_selection
        hidden = text.last_hidden_state
        if logits_to_keep:
            hidden = hidden[:, -logits_to_keep:]
        logits = self.lm_head(hidden)

        loss = None
        if labels is not None:
            if text.kept_positions is not None:
                labels = gather_positions(labels.unsqueeze(-1), text.kept_positions, IGNORE_INDEX).squeeze(-1)
            loss = F.cross_entropy(
                logits[:, :-1].float().reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=IGNORE_INDEX
            )
        selection = text.selection
        return PhotonOutput(
            loss=loss,
            logits=logits,
            past_key_values=text.past_key_values,
            attention_mask=text.attention_mask,
            position_ids=text.position_ids,
            kept_positions=text.kept_positions,
            keep_probability=selection.keep_probability if selection is not None else None,
            keep_mask=selection.keep if selection is not None else None,
            token_grids=grids,
        )

    def _answer_mask(self, answer_mask, labels, vision_kept) -> torch.Tensor | None:
        if self.config.its_answer_sees_dropped or self.config._attn_implementation == "flash_attention_2":
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
        do_sample: bool = False,
        temperature: float = 1.0,
        top_p: float = 1.0,
        eos_token_id: int | list[int] | None = None,
        pad_token_id: int | None = None,
        generator: torch.Generator | None = None,
        on_token: Callable[[torch.Tensor], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        output_logits: bool = False,
        **_: object,
    ) -> PhotonGeneration:
        """Greedy or sampled decoding on the pruned KV cache.

        ``on_token`` is called with each new (B,) token tensor (streaming); ``should_stop`` is
        polled between tokens (cancellation). Every call starts from a fresh cache.
        """
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        eos_ids = eos_token_id if eos_token_id is not None else self.config.text_config.eos_token_id
        eos_ids = torch.tensor(eos_ids if isinstance(eos_ids, list) else [eos_ids], device=input_ids.device)
        pad_id = pad_token_id if pad_token_id is not None else self.config.text_config.pad_token_id
        if pad_id is None:  # checkpoints without a pad token: finished rows repeat an EOS id
            pad_id = int(eos_ids[0])
        timings = {"vision": 0.0, "prefill": 0.0, "decode": 0.0}
        synchronize = torch.cuda.synchronize if input_ids.is_cuda else (lambda: None)

        # A vision-stage pruner must watch the tower run, so the prefill encodes the volume itself
        # (its vision time is then counted in "prefill").
        vision_stage = self.pruner.stage == "vision"
        if visual_embeddings is None and pixel_values is not None and not vision_stage:
            started = time.perf_counter()
            visual_embeddings = self.model.encode_volumes(pixel_values, video_grid_thw)
            synchronize()
            timings["vision"] = time.perf_counter() - started

        started = time.perf_counter()
        prefill = self(
            input_ids, attention_mask, pixel_values=pixel_values if vision_stage else None,
            video_grid_thw=video_grid_thw, visual_embeddings=visual_embeddings, use_cache=True, logits_to_keep=1,
        )  # fmt: skip
        synchronize()
        timings["prefill"] = time.perf_counter() - started

        started = time.perf_counter()
        cache, mask = prefill.past_key_values, prefill.attention_mask
        real = mask.bool().unsqueeze(0)
        next_position = torch.where(real, prefill.position_ids, torch.zeros_like(prefill.position_ids)).amax(dim=(0, 2)) + 1
        logits = prefill.logits[:, -1]
        finished = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        generated: list[torch.Tensor] = []
        step_logits: list[torch.Tensor] = []
        stopped = False
        for _step in range(max_new_tokens):
            if output_logits:
                step_logits.append(logits.float())
            token = self._next_token(logits, do_sample, temperature, top_p, generator)
            token = torch.where(finished, torch.full_like(token, pad_id), token)
            generated.append(token)
            if on_token is not None:
                on_token(token)
            finished |= torch.isin(token, eos_ids)
            if bool(finished.all()) or len(generated) == max_new_tokens:
                break
            if should_stop is not None and should_stop():
                stopped = True
                break
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            positions = next_position.view(1, -1, 1).expand(3, -1, 1)
            text = self.model.language_model(
                inputs_embeds=self.model.language_model.embed_tokens(token.unsqueeze(1)),
                attention_mask=mask, position_ids=positions, past_key_values=cache, use_cache=True,
            )  # fmt: skip
            logits = self.lm_head(text.last_hidden_state[:, -1])
            next_position = next_position + 1
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
        )

    @staticmethod
    def _next_token(logits, do_sample, temperature, top_p, generator) -> torch.Tensor:
        if not do_sample:
            return logits.argmax(dim=-1)
        probabilities = torch.softmax(logits.float() / max(temperature, 1e-5), dim=-1)
        if top_p < 1.0:
            sorted_probabilities, order = probabilities.sort(dim=-1, descending=True)
            outside = sorted_probabilities.cumsum(dim=-1) - sorted_probabilities > top_p
            sorted_probabilities = sorted_probabilities.masked_fill(outside, 0.0)
            probabilities = torch.zeros_like(probabilities).scatter(-1, order, sorted_probabilities)
        return torch.multinomial(probabilities, 1, generator=generator).squeeze(-1)
