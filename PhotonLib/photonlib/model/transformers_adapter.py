"""The one place PhotonLib reaches into transformers' Qwen2.5-VL internals.

Photon runs its own decoder-layer loop (ITS prunes between layers), recomputes attention inside
the vision tower for the baselines and edits the KV cache in place. None of that is public
transformers API, and releases rename keywords, reorder positional arguments or change return
types without notice; some changes are silent (a layer that takes ``**kwargs`` swallows a
renamed keyword and never fills the cache). So:

* every call into those internals goes through a function of this module, and nothing else in
  PhotonLib imports ``transformers.models.qwen2_5_vl``, ``masking_utils``, ``cache_utils``,
  ``vision_utils`` or ``initialization``;
* the right call for the installed release is chosen once, at import, from the signatures
  themselves (not per token, and not from version numbers);
* :data:`CONTRACT` lists every signature and attribute relied on. Importing this module checks
  it and stops with one message naming what is incompatible and the supported range
  (:class:`IncompatibleTransformersError`); ``Testing/photonlib_tests/model/test_transformers_contract.py``
  prints the same list;
* :func:`check_cache_filled` verifies after every prefill that each decoder layer really wrote
  its keys and values.

Supported releases: :data:`SUPPORTED_TRANSFORMERS` (the same range as ``pyproject.toml``; CI
tests its lower bound, the lock file's release and the newest release it allows). Raising the
upper bound is a change of that range in both places plus a green CI run.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import transformers
from packaging.specifiers import SpecifierSet
from packaging.version import Version
from torch import nn
from transformers import cache_utils as _cache_utils
from transformers import initialization as _init
from transformers import masking_utils as _masking
from transformers.cache_utils import DynamicCache
from transformers.models.qwen2_5_vl import modeling_qwen2_5_vl as _qwen
from transformers.utils import logging as _logging

from photonlib.errors import PhotonEnvironmentError

#: The releases this adapter is written and tested for (keep equal to pyproject.toml's range).
#: 5.17 is the floor: from that release Qwen2.5-VL's rotary embedding returns the combined
#: M-RoPE cos/sin (before, each layer combined three rows itself) and the vision tower takes its
#: window order from ``transformers.vision_utils``.
SUPPORTED_RANGE = ">=5.17,<5.25"
SUPPORTED_TRANSFORMERS = SpecifierSet(SUPPORTED_RANGE)
#: Set to 1 to run on a release outside the range when no incompatibility is detected.
ALLOW_UNTESTED_ENV = "PHOTON_ALLOW_UNTESTED_TRANSFORMERS"
TRANSFORMERS_VERSION = Version(transformers.__version__)

# ----------------------------------------------------------------------------- base classes
# Photon subclasses these so Qwen2.5-VL checkpoints load with the same module names.
QwenPreTrainedModel = _qwen.Qwen2_5_VLPreTrainedModel
QwenTextModel = _qwen.Qwen2_5_VLTextModel
QwenModel = _qwen.Qwen2_5_VLModel
QwenForConditionalGeneration = _qwen.Qwen2_5_VLForConditionalGeneration
QwenVisionTower = _qwen.Qwen2_5_VisionTransformerPretrainedModel
QwenVisionPatchEmbed = _qwen.Qwen2_5_VisionPatchEmbed
KVCache = DynamicCache


class LinearPatchEmbed(QwenVisionPatchEmbed):
    """Qwen's patch embedding computed as one matrix product.

    The Conv3d's kernel equals its stride and the patches arrive flattened, so the convolution is
    a matmul with the same weights (the same result up to summation order; on a CPU about 3x
    faster than the convolution kernel). Parameter names and shapes stay Qwen's.
    """

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        weight = self.proj.weight
        flat = hidden_states.reshape(-1, weight[0].numel()).to(weight.dtype)
        return nn.functional.linear(flat, weight.flatten(1), self.proj.bias)


class IncompatibleTransformersError(PhotonEnvironmentError, ImportError):
    """The installed transformers lacks, or changed, internals Photon relies on."""


# ----------------------------------------------------------------------------- the contract
@dataclass(frozen=True)
class Requirement:
    """One thing the adapter relies on: ``check()`` returns None when it holds, else what differs."""

    piece: str
    check: Callable[[], str | None]


def _parameters(function: Callable) -> list[str]:
    return list(inspect.signature(inspect.unwrap(function)).parameters)


def _has_parameters(target: Callable[[], Callable], *names: str) -> Callable[[], str | None]:
    def check() -> str | None:
        found = _parameters(target())
        missing = [name for name in names if name not in found]
        return f"missing parameter(s) {', '.join(missing)}; signature is ({', '.join(found)})" if missing else None

    return check


def _has_attributes(target: Callable[[], object], *names: str) -> Callable[[], str | None]:
    def check() -> str | None:
        owner = target()
        missing = [name for name in names if not hasattr(owner, name)]
        return f"missing attribute(s) {', '.join(missing)}" if missing else None

    return check


def _positional_prefix(target: Callable[[], Callable], *names: str) -> Callable[[], str | None]:
    """The first parameters are exactly ``names`` in this order (they are passed positionally)."""

    def check() -> str | None:
        found = _parameters(target())[: len(names)]
        return (
            None
            if tuple(found) == names
            else f"expected leading parameters ({', '.join(names)}), found ({', '.join(found)})"
        )

    return check


def _one_of(target: Callable[[], Callable], *names: str) -> Callable[[], str | None]:
    def check() -> str | None:
        found = _parameters(target())
        return (
            None
            if any(name in found for name in names)
            else f"has none of {', '.join(names)}; signature is ({', '.join(found)})"
        )

    return check


def _init_functions() -> str | None:
    missing = [name for name in ("trunc_normal_", "xavier_uniform_", "constant_") if not hasattr(_init, name)]
    return f"missing {', '.join(missing)}" if missing else None


def _attention_projections() -> str | None:
    source = inspect.getsource(_qwen.Qwen2_5_VLAttention.__init__)
    missing = [
        name for name in ("q_proj", "k_proj", "head_dim", "num_key_value_groups") if f"self.{name}" not in source
    ]
    return f"no longer sets {', '.join(missing)}" if missing else None


def _rotary_before_cache() -> str | None:
    # ITS reads layer k's post-RoPE keys from the KV cache instead of recomputing them.
    source = inspect.getsource(_qwen.Qwen2_5_VLAttention.forward)
    rotary, update = source.find("apply_rotary_pos_emb("), source.find(".update(")
    if rotary < 0 or update < 0:
        return "no longer applies apply_rotary_pos_emb and then updates the cache"
    return None if rotary < update else "updates the cache before applying RoPE (cached keys are not post-RoPE)"


def _cache_update_delegates() -> str | None:
    # The pre-allocated decoding cache replaces the per-layer objects that Cache.update calls.
    source = inspect.getsource(DynamicCache.update)
    return None if "self.layers[layer_idx].update(" in source else "Cache.update no longer calls self.layers[layer_idx].update"


def _patch_embed_projection() -> str | None:
    source = inspect.getsource(_qwen.Qwen2_5_VisionPatchEmbed.__init__)
    missing = [name for name in ("proj", "in_channels", "embed_dim") if f"self.{name}" not in source]
    return f"no longer sets {', '.join(missing)}" if missing else None


def _vision_attention_layout() -> str | None:
    source = inspect.getsource(_VISION_ATTENTION.__init__)
    missing = [name for name in ("qkv", "num_heads", "scaling") if f"self.{name}" not in source]
    return f"no longer sets {', '.join(missing)}" if missing else None


def _vision_tower_attributes() -> str | None:
    source = inspect.getsource(QwenVisionTower.__init__)
    names = ("spatial_merge_size", "window_size", "patch_size", "fullatt_block_indexes", "blocks", "patch_embed", "merger")
    missing = [name for name in names if f"self.{name}" not in source]
    return f"no longer sets {', '.join(missing)}" if missing else None


def _dynamic_layer_tensors() -> str | None:
    cache = DynamicCache()
    if not hasattr(cache, "layers"):
        return "DynamicCache has no per-layer list .layers"
    source = inspect.getsource(_DYNAMIC_LAYER)
    missing = [name for name in ("self.keys", "self.values") if name not in source]
    return f"{_DYNAMIC_LAYER.__name__} no longer holds {', '.join(missing)}" if missing else None


_VISION_BLOCK = _qwen.Qwen2_5_VLVisionBlock
_VISION_ATTENTION = _qwen.Qwen2_5_VLVisionAttention
_DECODER_LAYER = _qwen.Qwen2_5_VLDecoderLayer
_DYNAMIC_LAYER = getattr(_cache_utils, "DynamicLayer", object)
_CACHE_NAMES = ("cache", "past_key_values")  # 5.24 renamed past_key_values to cache


def _vision_window_function():
    from transformers import vision_utils

    return vision_utils.get_vision_window_index


def build_contract() -> tuple[Requirement, ...]:
    """The contract, read from transformers' classes and functions as they are now."""
    return (
        Requirement(
            "Qwen2_5_VLDecoderLayer.forward",
            _has_parameters(
                lambda: _qwen.Qwen2_5_VLDecoderLayer.forward,
                "hidden_states",
                "attention_mask",
                "position_embeddings",
                "use_cache",
            ),
        ),
        Requirement(
            "Qwen2_5_VLDecoderLayer.forward cache keyword",
            _one_of(lambda: _qwen.Qwen2_5_VLDecoderLayer.forward, *_CACHE_NAMES),
        ),
        Requirement("Qwen2_5_VLAttention projections", _attention_projections),
        Requirement("Qwen2_5_VLAttention caches post-RoPE keys", _rotary_before_cache),
        Requirement("Cache.update delegates to its layers", _cache_update_delegates),
        Requirement(
            "PreTrainedModel construction",
            _has_attributes(lambda: QwenPreTrainedModel, "_from_config", "post_init", "_init_weights"),
        ),
        Requirement(
            "Qwen2_5_VLRotaryEmbedding.forward",
            _positional_prefix(lambda: _qwen.Qwen2_5_VLRotaryEmbedding.forward, "self", "x", "position_ids"),
        ),
        Requirement(
            "apply_rotary_pos_emb", _positional_prefix(lambda: _qwen.apply_rotary_pos_emb, "q", "k", "cos", "sin")
        ),
        Requirement("repeat_kv", _positional_prefix(lambda: _qwen.repeat_kv, "hidden_states", "n_rep")),
        Requirement(
            "create_causal_mask",
            _has_parameters(lambda: _masking.create_causal_mask, "config", "attention_mask", "layer_idx"),
        ),
        Requirement(
            "create_causal_mask embeddings keyword",
            _has_parameters(lambda: _masking.create_causal_mask, "inputs_embeds"),
        ),
        Requirement("create_causal_mask cache keyword", _one_of(lambda: _masking.create_causal_mask, *_CACHE_NAMES)),
        Requirement("DynamicCache(config=...)", _has_parameters(lambda: DynamicCache.__init__, "config")),
        Requirement("DynamicCache per-layer keys/values", _dynamic_layer_tensors),
        Requirement(
            "Qwen2_5_VisionTransformerPretrainedModel.forward",
            _positional_prefix(lambda: QwenVisionTower.forward, "self", "hidden_states", "grid_thw"),
        ),
        Requirement("Qwen2_5_VisionTransformerPretrainedModel attributes", _vision_tower_attributes),
        Requirement(
            "Qwen2_5_VLVisionBlock.forward",
            _positional_prefix(lambda: _VISION_BLOCK.forward, "self", "hidden_states", "cu_seqlens"),
        ),
        Requirement(
            "Qwen2_5_VLVisionBlock.forward rotary keyword",
            _has_parameters(lambda: _VISION_BLOCK.forward, "position_embeddings"),
        ),
        Requirement(
            "vision_utils.get_vision_window_index",
            _has_parameters(
                lambda: _vision_window_function(),
                "grid_thw",
                "spatial_merge_size",
                "window_size",
                "patch_size",
                "kwargs",
            ),
        ),
        Requirement("Qwen2_5_VLVisionAttention layout", _vision_attention_layout),
        Requirement(
            "apply_rotary_pos_emb_vision",
            _positional_prefix(lambda: _qwen.apply_rotary_pos_emb_vision, "q", "k", "cos", "sin"),
        ),
        Requirement(
            "Qwen2_5_VisionPatchEmbed",
            _has_parameters(
                lambda: _qwen.Qwen2_5_VisionPatchEmbed.__init__,
                "patch_size",
                "temporal_patch_size",
                "in_channels",
                "embed_dim",
            ),
        ),
        Requirement("Qwen2_5_VisionPatchEmbed.proj", _patch_embed_projection),
        Requirement("transformers.initialization", _init_functions),
    )


CONTRACT = build_contract()


def check_contract(requirements: tuple[Requirement, ...] = CONTRACT) -> list[str]:
    """What the installed transformers breaks of the contract, one readable line per piece."""
    problems = []
    for requirement in requirements:
        try:
            problem = requirement.check()
        except Exception as error:  # a missing class or an unreadable source is a break too
            problem = f"{type(error).__name__}: {error}"
        if problem:
            problems.append(f"{requirement.piece}: {problem}")
    return problems


def incompatibility_message(problems: list[str]) -> str:
    lines = [
        f"transformers {TRANSFORMERS_VERSION} is not compatible with PhotonLib (supported: transformers{SUPPORTED_RANGE})"
    ]
    lines += [f"  - {problem}" for problem in problems]
    lines.append("Install a supported release, e.g. pip install -c PhotonLib/constraints/lock.txt -e ./PhotonLib")
    return "\n".join(lines)


def _verify_installed_release() -> None:
    problems = check_contract()
    in_range = TRANSFORMERS_VERSION.release and SUPPORTED_TRANSFORMERS.contains(TRANSFORMERS_VERSION, prereleases=True)
    if problems:
        raise IncompatibleTransformersError(incompatibility_message(problems))
    if not in_range and os.environ.get(ALLOW_UNTESTED_ENV) != "1":
        raise IncompatibleTransformersError(
            incompatibility_message(
                [
                    f"release outside the tested range (no incompatible piece detected; set {ALLOW_UNTESTED_ENV}=1 to try it)"
                ]
            )
        )


_verify_installed_release()

# ----------------------------------------------------------------------------- calls chosen once
_LAYER_CACHE_KEYWORD = next(name for name in _CACHE_NAMES if name in _parameters(_DECODER_LAYER.forward))
_MASK_CACHE_KEYWORD = next(name for name in _CACHE_NAMES if name in _parameters(_masking.create_causal_mask))

# Initialisers that mark a tensor as done, so post_init does not overwrite Photon's choices.
trunc_normal_ = _init.trunc_normal_
xavier_uniform_ = _init.xavier_uniform_
constant_ = _init.constant_


# ----------------------------------------------------------------------------- language model
def new_cache(config) -> DynamicCache:
    """An empty KV cache for a text configuration."""
    return DynamicCache(config=config)


def cache_length(cache: DynamicCache, layer: int) -> int:
    """Cached tokens of one decoder layer (0 when the layer has not written yet)."""
    layers = cache.layers
    if layer >= len(layers) or not getattr(layers[layer], "is_initialized", True):
        return 0
    keys = layers[layer].keys
    return 0 if keys is None or keys.numel() == 0 else int(keys.shape[-2])


def compact_cache(cache: DynamicCache, layers: int, gather: Callable[[torch.Tensor], torch.Tensor]) -> None:
    """Replace the keys and values of layers ``0..layers-1`` by ``gather`` of them.

    ``gather`` takes and returns (B, L, ...) tensors (sequence on dim 1); the cache stores
    (B, heads, L, head_dim).
    """
    for cached in cache.layers[:layers]:
        if cached.keys is None:  # never written: check_cache_filled reports it after the prefill
            continue
        cached.keys = gather(cached.keys.transpose(1, 2)).transpose(1, 2)
        cached.values = gather(cached.values.transpose(1, 2)).transpose(1, 2)


class CacheNotFilledError(RuntimeError):
    """A decoder layer did not write its keys and values: the transformers call is not what it seems."""


def check_cache_filled(cache: DynamicCache, num_layers: int, length: int) -> None:
    """After a prefill of ``length`` tokens (after pruning), layers ``0..num_layers-1`` hold exactly that many."""
    lengths = [cache_length(cache, layer) for layer in range(num_layers)]
    wrong = [layer for layer, found in enumerate(lengths) if found != length]
    if wrong:
        raise CacheNotFilledError(
            f"in the prefill the KV cache of decoder layer(s) {wrong} holds {[lengths[i] for i in wrong]} tokens, "
            f"expected {length}: transformers {TRANSFORMERS_VERSION}'s decoder layer did not take the cache "
            f"through the {_LAYER_CACHE_KEYWORD!r} keyword (supported: transformers{SUPPORTED_RANGE})"
        )


def causal_mask(
    config,
    inputs_embeds: torch.Tensor,
    attention_mask: torch.Tensor,
    cache: DynamicCache | None,
    layer_idx: int | None = None,
):
    """transformers' causal + padding mask for the current attention implementation.

    ``layer_idx`` sizes the mask from that layer's cache (after pruning, layer 0's cache is
    shorter than the prompt still to be written by the later layers).
    """
    arguments = {
        "config": config,
        "inputs_embeds": inputs_embeds,
        "attention_mask": attention_mask,
        _MASK_CACHE_KEYWORD: cache,
    }
    if layer_idx is not None:
        arguments["layer_idx"] = layer_idx
    return _masking.create_causal_mask(**arguments)


def rotary_embeddings(
    text_model: nn.Module, hidden: torch.Tensor, position_ids: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """M-RoPE cos/sin (B, L, head_dim), the three sections already interleaved, for (3, B, L) positions."""
    return text_model.rotary_emb(hidden, position_ids)


def run_decoder_layer(
    layer,
    hidden: torch.Tensor,
    attention_mask,
    position_embeddings: tuple[torch.Tensor, torch.Tensor],
    cache: DynamicCache | None = None,
    use_cache: bool = False,
) -> torch.Tensor:
    """One Qwen2.5-VL decoder layer; returns its output hidden states."""
    output = layer(
        hidden,
        attention_mask=attention_mask,
        position_embeddings=position_embeddings,
        use_cache=use_cache,
        **{_LAYER_CACHE_KEYWORD: cache},
    )
    return output


def attention_queries_keys(
    layer, hidden: torch.Tensor, position_embeddings: tuple[torch.Tensor, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """A decoder layer's post-RoPE queries (B, heads, L, head_dim) and keys (B, kv_heads, L,
    head_dim) from its input ``hidden``, recomputed (where no KV cache holds the keys)."""
    attention = layer.self_attn
    batch, length, _ = hidden.shape
    normed = layer.input_layernorm(hidden)
    queries = attention.q_proj(normed).view(batch, length, -1, attention.head_dim).transpose(1, 2)
    keys = attention.k_proj(normed).view(batch, length, -1, attention.head_dim).transpose(1, 2)
    cos, sin = position_embeddings
    return _qwen.apply_rotary_pos_emb(queries, keys, cos, sin)


def selected_queries(
    layer, hidden: torch.Tensor, position_embeddings: tuple[torch.Tensor, torch.Tensor], rows: torch.Tensor
) -> torch.Tensor:
    """A decoder layer's post-RoPE queries (heads, N, head_dim) of only the ``rows`` (B, L) bool
    tokens of its input ``hidden`` (N = ``rows.sum()``, in batch-then-position order).

    ITS needs the queries of the instruction tokens alone: a few dozen rows, not the whole prompt.
    """
    attention = layer.self_attn
    normed = layer.input_layernorm(hidden[rows])  # (N, D)
    queries = attention.q_proj(normed).view(1, normed.shape[0], -1, attention.head_dim).transpose(1, 2)
    cos, sin = (part[rows].unsqueeze(0) for part in position_embeddings)
    queries, _ = _qwen.apply_rotary_pos_emb(queries, queries, cos, sin)
    return queries[0]


def key_groups(layer) -> int:
    """Query heads per key/value head (grouped-query attention)."""
    return int(layer.self_attn.num_key_value_groups)


def cached_keys(cache: DynamicCache, layer: int, length: int) -> torch.Tensor:
    """The post-RoPE keys (B, kv_heads, L, head_dim) decoder layer ``layer`` has cached.

    Layers ``0..layer`` must hold ``length`` tokens each (else :class:`CacheNotFilledError`).
    """
    check_cache_filled(cache, layer + 1, length)
    return cache.layers[layer].keys


def cached_layer(cache: DynamicCache, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys and values (B, kv_heads, L, head_dim) of one decoder layer's cache."""
    return cache.layers[layer].keys, cache.layers[layer].values


def seed_cache(cache: DynamicCache, layers: list[tuple[torch.Tensor, torch.Tensor]], first_layer: int = 0) -> None:
    """Start layers ``first_layer..`` (one per entry) of an empty cache with the given keys and values.

    The tensors are not written to afterwards (appending concatenates into new tensors), so a
    saved prompt prefix can seed any number of caches.
    """
    for index, (keys, values) in enumerate(layers, start=first_layer):
        cache.update(keys, values, index)


class _PreallocatedLayer(_DYNAMIC_LAYER):
    """A cache layer whose keys and values live in buffers with room for more tokens.

    ``DynamicLayer`` concatenates at every token, copying the whole cache of every layer per
    decoded token; here a new token is written in place and the layer exposes a view. A full
    buffer doubles (one copy), so any answer length stays correct at amortised constant cost.
    """

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, room: int) -> None:
        super().__init__()
        self.length = 0
        self._key_buffer = self._value_buffer = None
        self._allocate(keys, values, keys.shape[-2] + room)
        self.dtype, self.device = keys.dtype, keys.device
        self.is_initialized = True

    def _allocate(self, keys: torch.Tensor, values: torch.Tensor, capacity: int) -> None:
        batch, heads, length, _ = keys.shape
        key_buffer = keys.new_empty((batch, heads, capacity, keys.shape[-1]))
        value_buffer = values.new_empty((batch, heads, capacity, values.shape[-1]))
        key_buffer[:, :, :length].copy_(keys)
        value_buffer[:, :, :length].copy_(values)
        self._key_buffer, self._value_buffer, self.length = key_buffer, value_buffer, length
        self._expose()

    def _expose(self) -> None:
        self.keys = self._key_buffer[:, :, : self.length]
        self.values = self._value_buffer[:, :, : self.length]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        end = self.length + key_states.shape[-2]
        if end > self._key_buffer.shape[-2]:
            self._allocate(self.keys, self.values, max(end, 2 * self._key_buffer.shape[-2]))
        self._key_buffer[:, :, self.length : end].copy_(key_states)
        self._value_buffer[:, :, self.length : end].copy_(value_states)
        self.length = end
        self._expose()
        return self.keys, self.values


def preallocate_cache(cache: DynamicCache, room: int) -> None:
    """Give every layer of a filled cache room for ``room`` more tokens (one copy, before decoding)."""
    for index, cached in enumerate(cache.layers):
        if cached.keys is not None:
            cache.layers[index] = _PreallocatedLayer(cached.keys, cached.values, room)


def decoding_masks(
    config, attention_mask: torch.Tensor, room: int, dtype: torch.dtype, cache: DynamicCache
) -> Callable[[int], object]:
    """The attention mask of each decoding step, as a function of the tokens already cached.

    ``attention_mask`` (B, M) is the prefill's (0 on padding slots). A decoded token sees every
    cached token of its row, so without padding no mask is needed at all (None: SDPA, eager and
    flash attention then attend to every key). With padding, SDPA and eager take an additive
    (B, 1, 1, length) mask: one buffer, sliced per step. Other kernels get transformers' mask.
    """
    if bool(attention_mask.all()):
        return lambda _cached: None
    batch = attention_mask.shape[0]
    grown = torch.cat([attention_mask, attention_mask.new_ones((batch, room))], dim=1)
    if attention_implementation(config) in ("sdpa", "eager"):
        blocked = torch.zeros(grown.shape, dtype=dtype, device=grown.device)
        blocked = blocked.masked_fill(grown == 0, torch.finfo(dtype).min)[:, None, None, :]
        return lambda cached: blocked[..., : cached + 1]
    probe = torch.zeros((batch, 1, 1), dtype=dtype, device=grown.device)
    return lambda cached: causal_mask(config, probe, grown[:, : cached + 1], cache)


def attention_implementation(config) -> str:
    """The attention kernel a configuration runs with (``sdpa``, ``eager``, ``flash_attention_2``)."""
    return config._attn_implementation


def build_submodel(model_class, config, **kwargs):
    """A sub-model built the way transformers builds its own (dtype and attention from ``config``)."""
    return model_class._from_config(config, **kwargs)


# ----------------------------------------------------------------------------- vision tower
def vision_tokens(tower, pixel_values: torch.Tensor, grid_thw: torch.Tensor) -> torch.Tensor:
    """The tower's merged (language-model) tokens for all volumes, concatenated (V, D)."""
    return tower(pixel_values, grid_thw=grid_thw).pooler_output


def vision_window_index(tower, grid_thw: torch.Tensor, call_kwargs: dict) -> torch.Tensor:
    """The tower's window order: window-order merge group i is patch-order group ``window_index[i]``."""
    # A copy: get_vision_window_index pops precomputed entries, the tower still needs them.
    window_index, _ = _vision_window_function()(
        grid_thw, spatial_merge_size=tower.spatial_merge_size, window_size=tower.window_size,
        patch_size=tower.patch_size, kwargs=dict(call_kwargs),
    )  # fmt: skip
    return window_index


def vision_block_inputs(
    args: tuple, kwargs: dict
) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """(hidden, cu_seqlens, rotary cos/sin) of a vision block call, seen from a forward pre-hook."""
    hidden = args[0] if args else kwargs["hidden_states"]
    cu_seqlens = kwargs["cu_seqlens"] if "cu_seqlens" in kwargs else args[1]
    rotary = kwargs["position_embeddings"] if "position_embeddings" in kwargs else args[2]
    return hidden, cu_seqlens, rotary


def vision_block_queries_keys(
    block, hidden: torch.Tensor, rotary: tuple[torch.Tensor, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """A vision block's (post-rotary queries, post-rotary keys, pre-rotary keys, scaling), each (S, heads, d)."""
    attention = block.attn
    length = hidden.shape[0]
    normed = block.norm1(hidden)
    queries, keys, _ = attention.qkv(normed).reshape(length, 3, attention.num_heads, -1).permute(1, 0, 2, 3).unbind(0)
    cos, sin = rotary
    rotated_queries, rotated_keys = _qwen.apply_rotary_pos_emb_vision(queries, keys, cos, sin)
    return rotated_queries, rotated_keys, keys, attention.scaling


# ----------------------------------------------------------------------------- loading
@contextmanager
def quiet_loading() -> Iterator[None]:
    """No load report or progress bar from transformers: PhotonLib checks keys itself, and a
    command's output is its answer."""
    verbosity = _logging.get_verbosity()
    bar = _logging.is_progress_bar_enabled()
    _logging.set_verbosity_error()
    _logging.disable_progress_bar()
    try:
        yield
    finally:
        _logging.set_verbosity(verbosity)
        if bar:
            _logging.enable_progress_bar()
