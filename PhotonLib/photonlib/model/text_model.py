"""Photon's language model: Qwen2.5-VL's decoder layers in a loop that ITS can cut into.

After decoder layer ``its_layer`` a token pruner decides which visual tokens stay. In ``hard``
mode the others are removed from the hidden states, the KV cache of layers 0..k, the rotary
cos/sin, the 3D position ids and the attention mask (:mod:`photonlib.model.compaction`), and the
causal mask is rebuilt for the remaining layers. ``soft`` scales visual hidden states by their
keep probability; ``none`` only reports the scores.

Semantics of a drop: the prompt's own tokens in layers 0..k saw every visual token (ITS had not
decided yet); after layer k, and for every generated token in every layer, a dropped token no
longer exists. In a teacher-forced forward (``answer_mask``) the answer tokens are kept blind to
the dropped tokens in layers 0..k too, so training computes what decoding will
(``PhotonConfig.its_answer_sees_dropped``; docs/model.md).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial

import torch
from torch import nn

from photonlib.model import transformers_adapter as qwen
from photonlib.model.compaction import (
    answer_blind_mask,
    gather_position_rows,
    gather_positions,
    kept_positions,
    scatter_visual,
)
from photonlib.model.configuration import PRUNING_MODES
from photonlib.model.prompt_prefix import PromptPrefix
from photonlib.model.pruning.interface import LanguageStageInputs, TokenPruner, TokenSelection
from photonlib.model.pruning.its import ThresholdPredictor
from photonlib.model.pruning.sgp import gather_kept_tokens


@dataclass
class PhotonTextOutput:
    """What the language model returns (a plain dataclass: transformers' ModelOutput renames fields)."""

    last_hidden_state: torch.Tensor
    cache: qwen.KVCache | None = None
    attention_mask: torch.Tensor | None = None  # (B, M) after pruning
    position_ids: torch.Tensor | None = None  # (3, B, M) after pruning
    kept_positions: torch.Tensor | None = None  # (B, M) original index of each slot, -1 = padding
    selection: TokenSelection | None = None
    prefix: PromptPrefix | None = None  # recorded with record_prefix


class PhotonTextModel(qwen.QwenTextModel):
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
            qwen.xavier_uniform_(module.weight)
            qwen.constant_(module.bias, ThresholdPredictor.INITIAL_BIAS if module is scheduler.mlp[2] else 0.0)
            return
        super()._init_weights(module)

    def forward(
        self,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        cache: qwen.KVCache | None = None,
        use_cache: bool = False,
        visual_mask: torch.Tensor | None = None,
        instruction_mask: torch.Tensor | None = None,
        pruner: TokenPruner | None = None,
        pruning_mode: str = "hard",
        straight_through: bool = False,
        answer_mask: torch.Tensor | None = None,
        frozen_keep: torch.Tensor | None = None,
        flipped_keep: torch.Tensor | None = None,
        prefix: PromptPrefix | None = None,
        record_prefix: torch.Tensor | None = None,
    ) -> PhotonTextOutput:
        """Run the decoder layers; ``pruner`` (language stage) decides after layer ``its_layer``.

        ``answer_mask`` (B, L): answer tokens in the input (teacher forcing). In hard mode they
        do not see dropped visual tokens in any layer, as in decoding, whose cache has lost them.
        Training only, as released: ``frozen_keep`` (B,) samples whose keep probabilities get no
        gradient (perturbed or flipped samples); ``flipped_keep`` (B,) samples whose keep decision
        is inverted (hard mode: they see exactly the visual tokens ITS would drop).

        Follow-up questions (:mod:`photonlib.model.prompt_prefix`, a batch of one with a cache):
        with ``prefix``, ``inputs_embeds`` holds only the tokens after it (masks and positions
        stay the whole prompt's) and layers 0..k run on those alone; ``record_prefix`` (the
        prefix's ids) returns that state of this prompt in ``PhotonTextOutput.prefix``.
        """
        if pruning_mode not in PRUNING_MODES:
            raise ValueError(f"pruning_mode must be one of {PRUNING_MODES}, got {pruning_mode!r}")
        if use_cache and cache is None:
            cache = qwen.new_cache(self.config)
        if prefix is not None:
            if cache is None:
                raise ValueError("a saved prompt prefix needs the KV cache (use_cache=True)")
            qwen.seed_cache(cache, prefix.layers)
        hidden = inputs_embeds
        mask = qwen.causal_mask(self.config, hidden, attention_mask, cache)
        rotary = qwen.rotary_embeddings(self, hidden, position_ids)
        start = prefix.length if prefix is not None else 0  # rows of the prompt that layers 0..k run on
        early_rotary = tuple(part[:, start:] for part in rotary) if start else rotary
        scheduling = (
            pruner is not None and visual_mask is not None and hidden.shape[1] + start > 1 and bool(visual_mask.any())
        )
        selection = kept = recorded = None
        early_mask = mask  # layers 0..k
        if scheduling and pruning_mode == "hard" and answer_mask is not None and bool(answer_mask.any()):
            # ITS decides from the prompt alone (attention is causal: answer tokens cannot change
            # the decision), so decide first, then run layers 0..k with the answer blind to the
            # tokens about to be dropped.
            with torch.set_grad_enabled(_scores_need_gradient(pruner)):
                scoring_inputs = self._prompt_scoring_inputs(hidden, mask, rotary, instruction_mask, visual_mask)
            selection = pruner.select(scoring_inputs)
            selection = _adjust_for_training(selection, frozen_keep, flipped_keep if pruning_mode == "hard" else None)
            dropped = visual_mask & ~scatter_visual(visual_mask, selection.keep)
            early_mask = answer_blind_mask(attention_mask, answer_mask.bool(), dropped, hidden.dtype)

        for index, layer in enumerate(self.layers):
            early = index <= self.its_layer
            layer_input = hidden
            hidden = qwen.run_decoder_layer(
                layer, hidden, early_mask if early else mask, early_rotary if early else rotary, cache, use_cache
            )
            if index != self.its_layer:
                continue
            if record_prefix is not None:
                recorded = self._prefix_state(record_prefix, hidden, cache)
            if prefix is not None:
                hidden = torch.cat([prefix.hidden, hidden], dim=1)
            if scheduling:
                if selection is None:
                    with torch.set_grad_enabled(_scores_need_gradient(pruner)):
                        scoring_inputs = self._scoring_inputs(
                            layer, index, layer_input, early_rotary, cache, instruction_mask, visual_mask, start
                        )
                    selection = pruner.select(scoring_inputs)
                    selection = _adjust_for_training(
                        selection, frozen_keep, flipped_keep if pruning_mode == "hard" else None
                    )
                probability_full = scatter_visual(visual_mask, selection.keep_probability.float())
                if pruning_mode == "soft":
                    factor = torch.where(visual_mask, probability_full, torch.ones_like(probability_full))
                    hidden = hidden * factor.unsqueeze(-1).to(hidden.dtype)
                elif pruning_mode == "hard":
                    presence = attention_mask.bool() & (~visual_mask | scatter_visual(visual_mask, selection.keep))
                    kept = kept_positions(presence)
                    hidden = gather_kept_tokens(
                        hidden, kept, probability_full if self.training else None, visual_mask,
                        straight_through=straight_through,
                    )  # fmt: skip
                    attention_mask = (kept >= 0).long()
                    position_ids = gather_position_rows(position_ids, kept)
                    rotary = tuple(gather_positions(part, kept) for part in rotary)
                    if cache is not None:
                        qwen.compact_cache(cache, index + 1, partial(gather_positions, positions=kept))
            if prefix is not None and prefix.leading_layers:
                # The text before the volume attends only to itself, in every layer: the later
                # layers take its keys and values from the prefix and run on the rest.
                qwen.seed_cache(cache, prefix.leading_layers, first_layer=index + 1)
                hidden = hidden[:, prefix.leading :]
                rotary = tuple(part[:, prefix.leading :] for part in rotary)
            if kept is not None or prefix is not None:
                # Size the mask from the next layer's cache, not layer 0's (pruned or seeded) one.
                mask = qwen.causal_mask(
                    self.config, hidden, attention_mask, cache, layer_idx=index + 1 if cache is not None else None
                )

        if recorded is not None:
            recorded.leading_layers = self._leading_state(visual_mask, cache)
        return PhotonTextOutput(
            last_hidden_state=self.norm(hidden),
            cache=cache,
            attention_mask=attention_mask,
            position_ids=position_ids,
            kept_positions=kept,
            selection=selection,
            prefix=recorded,
        )

    def decode_step(
        self, inputs_embeds: torch.Tensor, attention_mask, position_embeddings: tuple[torch.Tensor, torch.Tensor], cache
    ) -> torch.Tensor:
        """One new token per row through every layer on the (pruned) cache: the normed hidden (B, 1, D).

        ``attention_mask`` is what the attention kernels take (None: every cached token is
        visible); the rotary cos/sin are the new token's. Nothing here depends on the cache's length.
        """
        hidden = inputs_embeds
        for layer in self.layers:
            hidden = qwen.run_decoder_layer(layer, hidden, attention_mask, position_embeddings, cache, use_cache=True)
        return self.norm(hidden)

    def _prefix_state(self, prefix_ids: torch.Tensor, hidden: torch.Tensor, cache) -> PromptPrefix:
        """Layers 0..k's keys and values and layer k's output for the first ``len(prefix_ids)`` tokens."""
        length = prefix_ids.shape[0]
        layers = []
        for index in range(self.its_layer + 1):
            keys, values = qwen.cached_layer(cache, index)
            layers.append((keys[:, :, :length].clone(), values[:, :, :length].clone()))
        return PromptPrefix(input_ids=prefix_ids.clone(), layers=layers, hidden=hidden[:, :length].clone())

    def _leading_state(self, visual_mask: torch.Tensor, cache) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Layers k+1..L-1's keys and values of the text before the volume (always kept, first)."""
        leading = int(visual_mask[0].int().argmax())  # the first visual token's index
        layers = []
        for index in range(self.its_layer + 1, len(self.layers)):
            keys, values = qwen.cached_layer(cache, index)
            layers.append((keys[:, :, :leading].clone(), values[:, :, :leading].clone()))
        return layers

    def _prompt_scoring_inputs(self, hidden, mask, rotary, instruction_mask, visual_mask) -> LanguageStageInputs:
        """Layer k's scoring inputs from a first pass through layers 0..k-1 (the caller runs it
        without gradient unless the scheduler asks for its scores' gradient)."""
        for layer in self.layers[: self.its_layer]:
            hidden = qwen.run_decoder_layer(layer, hidden, mask, rotary)
        queries, keys = qwen.attention_queries_keys(self.layers[self.its_layer], hidden, rotary)
        return LanguageStageInputs.from_queries(queries, keys, instruction_mask, visual_mask)

    def _scoring_inputs(
        self, layer, index, layer_input, rotary, cache, instruction_mask, visual_mask, start
    ) -> LanguageStageInputs:
        """Layer k's post-RoPE keys (from its KV cache when there is one) and the instruction's queries.

        ``layer_input`` holds the prompt's rows from ``start`` on (all of them without a prefix);
        the instruction always lies among them.
        """
        if cache is None:
            queries, keys = qwen.attention_queries_keys(layer, layer_input, rotary)
            return LanguageStageInputs.from_queries(queries, keys, instruction_mask, visual_mask)
        rows = instruction_mask[:, start:]
        queries = qwen.selected_queries(layer, layer_input, rotary, rows)  # (heads, N, d), batch then position
        counts = rows.sum(dim=1).tolist()
        return LanguageStageInputs(
            instruction_queries=list(torch.split(queries, counts, dim=1)),
            keys=qwen.cached_keys(cache, index, instruction_mask.shape[1]),
            instruction_mask=instruction_mask,
            visual_mask=visual_mask,
        )


def _scores_need_gradient(pruner) -> bool:
    """As released the scoring inputs carry no gradient; a scheduler may ask for it (ITS's ``score_gradient``)."""
    wants = getattr(pruner, "wants_score_gradient", None)
    return bool(wants()) if wants is not None else False


def _adjust_for_training(
    selection: TokenSelection, frozen: torch.Tensor | None, flipped: torch.Tensor | None
) -> TokenSelection:
    """The release's training variants of a selection: detached probabilities, inverted decisions."""
    probability, keep = selection.keep_probability, selection.keep
    if frozen is not None and bool(frozen.any()):
        probability = torch.where(frozen.view(-1, 1), probability.detach(), probability)
    if flipped is not None and bool(flipped.any()):
        keep = torch.where(flipped.view(-1, 1), ~keep, keep)
        probability = torch.where(flipped.view(-1, 1), probability.detach(), probability)
    return replace(selection, keep_probability=probability, keep=keep)
