"""``PhotonConfig``: a Qwen2.5-VL configuration with a one-channel 3D patch embedding and ITS.

Photon is Qwen2.5-VL whose vision patch embedding is a one-channel Conv3d with a cubic
14 x 14 x 14 kernel (in Qwen2.5-VL terms: ``in_channels=1``, ``temporal_patch_size=14``,
``patch_size=14``), so a 140 x 280 x 280 volume becomes 10 x 20 x 20 patches and, after the 2 x 2
spatial merger, 1,000 language-model tokens. Instruction-conditioned Token Scheduling (ITS) sits
after decoder layer ``its_layer`` and drops the visual tokens the question does not need.

Named presets (``PhotonConfig.from_preset``):

* ``tiny``: for tests; a forward pass takes well under a second on a CPU.
* ``small``: CPU demos and benchmarks.
* ``demo``: the phantom demo model shipped with the package (pair it with a compact tokenizer).
* ``qwen2.5-vl-3b``: the exact Qwen2.5-VL-3B-Instruct shapes (docs/method.md section 2).
"""

from __future__ import annotations

import importlib.util
from typing import Any

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, Qwen2_5_VLConfig

from photonlib.errors import ConfigurationError
from photonlib.model.pruning.budget import check_budget
from photonlib.model.pruning.pruners import SCORE_PRECISIONS
from photonlib.model.tokens import merged_grid, patch_grid

PRUNING_MODES = ("none", "soft", "hard")
SURROGATE_GRADIENTS = ("sgp", "straight_through")
ATTENTION_IMPLEMENTATIONS = ("sdpa", "eager", "flash_attention_2")

#: The released Photon feeds volumes as a video at FPS=1 (test_photon_s2.sh).
RELEASED_VOLUME_FPS = 1.0

#: Qwen2.5-VL's vocabulary size (the tokenizer has 151,665 entries; the embedding is padded).
QWEN_VOCAB_SIZE = 151936


@strict
class PhotonConfig(Qwen2_5_VLConfig):
    """Everything a Photon model needs, saved in ``config.json`` with ``save_pretrained``.

    Photon-specific fields (the rest are Qwen2.5-VL's):

    * ``its_layer``: decoder layer after which ITS prunes (default ``int(L / 4) - 1``).
    * ``its_temperature``: temperature of the keep probability ``sigmoid((s - theta) / T)``.
    * ``its_threshold_scale``: ``theta = scale * sigmoid(MLP(stats))``.
    * ``pruning_mode``: ``none`` (keep everything; keep probabilities are still reported),
      ``soft`` (scale visual hidden states by their keep probability) or ``hard`` (drop).
    * ``surrogate_gradient``: ``sgp`` (the released surrogate) or ``straight_through``.
    * ``pruner``: which token pruner runs (see ``photonlib.model.pruning``): ``its`` or a baseline.
    * ``pruning_budget``: kept fraction of visual tokens for fixed-budget pruners.
    * ``im_end_token_id``: ``<|im_end|>``, where the instruction ITS reads ends.
    * ``its_answer_sees_dropped``: see the field (False: training matches decoding exactly).
    * ``volume_fps``: the frame rate the volume is fed at as a video (the release: 1). With
      ``vision_config.tokens_per_second`` it spaces the M-RoPE temporal positions of visual
      tokens: token t sits at ``t * temporal_patch_size / volume_fps * tokens_per_second``
      (28 t for Photon). ``None``: one position per token (PhotonLib models saved before this
      field existed, e.g. the demo model, keep answering as they were trained).
    * ``its_score_precision``: ``model`` rounds ITS's visual scores and threshold to the model's
      dtype before comparing, as the release does; ``float32`` keeps them exact.
    """

    model_type = "photon"

    its_layer: int | None = None
    its_temperature: float = 0.2
    its_threshold_scale: float = 0.9
    pruning_mode: str = "hard"
    surrogate_gradient: str = "sgp"
    pruner: str = "its"
    pruning_budget: float | None = None
    # The chat template's turn end: ITS's instruction runs from <|vision_end|> to here. Not the
    # EOS id, which is <|endoftext|> in base (non-Instruct) Qwen2.5-VL checkpoints.
    im_end_token_id: int = 151645
    # Teacher forcing under hard pruning: the released training lets answer tokens see every
    # visual token in layers 0..its_layer, which decoding cannot (its cache keeps only the kept
    # tokens). False hides the dropped ones from them, so training computes what decoding will.
    its_answer_sees_dropped: bool = False
    # None (absent from older config.json files) keeps their one-step temporal positions; the
    # presets and converted checkpoints use the release's FPS=1.
    volume_fps: float | None = None
    # "model" (the release): ITS's visual scores and threshold rounded to the model's dtype (bf16
    # on a GPU); "float32" (absent from older config.json files): exact. Equal on float32 models.
    its_score_precision: str = "float32"

    def __post_init__(self, **kwargs: Any) -> None:
        if self.vision_config is None:
            # PhotonConfig() is a valid Photon (3B vision tower with the one-channel 3D patch
            # embedding), not Qwen's three-channel default: transformers builds one to compare
            # against when it saves a configuration.
            self.vision_config = _PRESETS["qwen2.5-vl-3b"]()["vision_config"]
        super().__post_init__(**kwargs)
        layers = self.text_config.num_hidden_layers
        if self.its_layer is None:
            self.its_layer = max(0, int(layers / 4) - 1)
        if not 0 <= self.its_layer < layers - 1:
            raise ConfigurationError(f"its_layer must be in [0, {layers - 2}] for {layers} decoder layers, got {self.its_layer}")
        if self.pruning_mode not in PRUNING_MODES:
            raise ConfigurationError(f"pruning_mode must be one of {PRUNING_MODES}, got {self.pruning_mode!r}")
        if self.surrogate_gradient not in SURROGATE_GRADIENTS:
            raise ConfigurationError(f"surrogate_gradient must be one of {SURROGATE_GRADIENTS}, got {self.surrogate_gradient!r}")
        if not self.its_temperature > 0:
            raise ConfigurationError(f"its_temperature must be positive, got {self.its_temperature}")
        if self.pruning_budget is not None:
            check_budget("pruning_budget", self.pruning_budget)
        if self.its_score_precision not in SCORE_PRECISIONS:
            raise ConfigurationError(f"its_score_precision must be one of {SCORE_PRECISIONS}, got {self.its_score_precision!r}")
        if self.volume_fps is not None and not self.volume_fps > 0:
            raise ConfigurationError(f"volume_fps must be positive (frames per second), got {self.volume_fps}")
        if self.vision_config.in_channels != 1:
            raise ConfigurationError("Photon's 3D patch embedding has one input channel (vision_config.in_channels=1)")

    # ------------------------------------------------------------------ grid helpers
    @property
    def patch_size_dhw(self) -> tuple[int, int, int]:
        """Voxels per patch along (D, H, W)."""
        vision = self.vision_config
        return (vision.temporal_patch_size, vision.patch_size, vision.patch_size)

    @property
    def temporal_position_scale(self) -> float:
        """M-RoPE temporal positions per token step: ``temporal_patch_size / volume_fps * tokens_per_second``."""
        if self.volume_fps is None:
            return 1.0
        return self.vision_config.temporal_patch_size / self.volume_fps * self.vision_config.tokens_per_second

    @property
    def spatial_merge_size(self) -> int:
        return self.vision_config.spatial_merge_size

    def patch_grid(self, volume_shape_dhw: tuple[int, int, int]) -> tuple[int, int, int]:
        """Patch grid (t, h, w) of a model-grid volume; refuses shapes that do not tile."""
        return patch_grid(volume_shape_dhw, self.patch_size_dhw, self.spatial_merge_size)

    def token_grid(self, volume_shape_dhw: tuple[int, int, int]) -> tuple[int, int, int]:
        """Language-model token grid (t, h, w) after the spatial merge, e.g. (10, 10, 10)."""
        return merged_grid(self.patch_grid(volume_shape_dhw), self.spatial_merge_size)

    # ------------------------------------------------------------------ presets
    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> PhotonConfig:
        """A named configuration; keyword arguments override top-level fields, and the
        ``text`` / ``vision`` mappings override fields of the sub-configurations."""
        try:
            build = _PRESETS[name]
        except KeyError:
            raise ConfigurationError(f"unknown Photon preset {name!r}; known: {', '.join(_PRESETS)}") from None
        fields = build()
        fields["text_config"].update(overrides.pop("text", None) or {})
        fields["vision_config"].update(overrides.pop("vision", None) or {})
        fields.update(overrides)
        fields.setdefault("attn_implementation", default_attention_implementation())
        fields.setdefault("volume_fps", RELEASED_VOLUME_FPS)
        fields.setdefault("its_score_precision", "model")
        return cls(**fields)


def default_attention_implementation() -> str:
    """flash_attention_2 when it is importable and CUDA is there; sdpa otherwise."""
    if importlib.util.find_spec("flash_attn") is not None:
        import torch

        if torch.cuda.is_available():
            return "flash_attention_2"
    return "sdpa"


def _vision(depth: int, hidden: int, heads: int, intermediate: int, out: int, full_attention: list[int]) -> dict:
    return {
        "depth": depth,
        "hidden_size": hidden,
        "num_heads": heads,
        "intermediate_size": intermediate,
        "out_hidden_size": out,
        "fullatt_block_indexes": full_attention,
        "in_channels": 1,
        "patch_size": 14,
        "temporal_patch_size": 14,
        "spatial_merge_size": 2,
        "window_size": 112,
        "hidden_act": "silu",
        "tokens_per_second": 2,  # Qwen2.5-VL-3B's (the dataclass default is 4)
    }


def _text(hidden: int, layers: int, heads: int, kv_heads: int, intermediate: int, mrope: list[int]) -> dict:
    return {
        "vocab_size": QWEN_VOCAB_SIZE,
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "intermediate_size": intermediate,
        "max_position_embeddings": 128000,
        "rms_norm_eps": 1e-6,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": mrope},
        "tie_word_embeddings": True,
        "bos_token_id": 151643,
        "eos_token_id": 151645,
        "pad_token_id": 151643,
    }


_PRESETS = {
    "tiny": lambda: {
        "vision_config": _vision(depth=2, hidden=32, heads=2, intermediate=64, out=64, full_attention=[1]),
        "text_config": _text(hidden=64, layers=4, heads=4, kv_heads=2, intermediate=128, mrope=[2, 3, 3]),
        "tie_word_embeddings": True,
    },
    "small": lambda: {
        "vision_config": _vision(depth=4, hidden=128, heads=4, intermediate=256, out=256, full_attention=[1, 3]),
        "text_config": _text(hidden=256, layers=8, heads=8, kv_heads=2, intermediate=704, mrope=[4, 6, 6]),
        "tie_word_embeddings": True,
    },
    # The phantom demo model shipped with the package (trained here on a CPU; with a compact
    # tokenizer its vocabulary is small, see photonlib.model.tokenizer). Patches of 7^3 voxels,
    # not Photon's 14^3: on the small grid (56 x 112 x 112) that is 512 tokens of about 45 mm
    # rather than 64 of 91 mm. With 14^3 a phantom lesion is a few per cent of a patch and the
    # from-scratch tower does not learn to see it.
    "demo": lambda: {
        "vision_config": {
            **_vision(depth=2, hidden=64, heads=2, intermediate=128, out=128, full_attention=[1]),
            "patch_size": 7,
            "temporal_patch_size": 7,
        },
        "text_config": _text(hidden=128, layers=4, heads=4, kv_heads=2, intermediate=352, mrope=[4, 6, 6]),
        "tie_word_embeddings": True,
        "its_layer": 1,
    },
    "qwen2.5-vl-3b": lambda: {
        "vision_config": _vision(depth=32, hidden=1280, heads=16, intermediate=3420, out=2048, full_attention=[7, 15, 23, 31]),
        "text_config": _text(hidden=2048, layers=36, heads=16, kv_heads=2, intermediate=11008, mrope=[16, 24, 24]),
        "tie_word_embeddings": True,
    },
}

PRESET_NAMES = tuple(_PRESETS)

# Lets AutoConfig / AutoTokenizer read a saved Photon folder's config.json without a warning.
AutoConfig.register("photon", PhotonConfig, exist_ok=True)
