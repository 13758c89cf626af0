"""Weights from other checkpoints into Photon: Qwen2.5-VL, and the released Photon-S1/S2.

Both sources are local folders with a ``config.json`` and safetensors weights
(``model.safetensors``, or shards listed in ``model.safetensors.index.json``), plus the
tokenizer files. Nothing is downloaded.

**Qwen2.5-VL** (:func:`from_qwen2_5_vl`): the language model, the vision transformer blocks and
the merger are kept as they are; the config keeps every text and vision shape but the patch
embedding becomes Photon's one-channel cubic Conv3d (``in_channels=1``,
``temporal_patch_size=patch_size=14``). Two things are new: the 3D patch embedding and the ITS
threshold MLP (output bias -5, so ITS starts by keeping nearly everything). The 3D embedding is
either ``released`` (truncated normal, std 0.02: how the authors started stage 1) or
``from_2d``, derived from Qwen's 2D kernel ``W2`` (hidden, 3, 2, 14, 14)::

    W3[o, 0, d, i, j] = sum_c W2[o, c, d % 2, i, j] / 7        (14 slices = 7 frame pairs)

so a volume whose 14 slices repeat a two-frame grey video (the same values in the three
channels, after Qwen's normalisation) gets exactly the patch embedding Qwen gives that video,
and therefore the same vision-tower output for the same (1, h, w) grid.

**Released Photon** (:func:`convert_released_state_dict`, :func:`convert_released_checkpoint`):
ms-swift / transformers 4.x checkpoints of the authors' own modeling files. Their vision tower
owns only ``vision_patch_embed`` (the one-channel 14^3 Conv3d): its forward calls
``self.vision_patch_embed``, and it has no 2D ``patch_embed`` module. A 2D
``visual.patch_embed.proj.weight`` found in such a checkpoint is a leftover of the Qwen
initialisation and is dropped. ITS lives in decoder layer ``k = int(L/4) - 1`` as
``model.layers.<k>.atp``; its ``pos_proj`` (Linear(1 -> hidden), no bias) is created but never
used in the released forward (only ``atp.predictor`` is called), so it is dropped too.
Photon-S1 checkpoints have no ``atp`` at all: the threshold MLP is then initialised as new.

Key rules for released checkpoints (:data:`RELEASED_KEY_RULES`, first match wins; ``N`` must be
the config's ``its_layer``, else ``its_layer`` is taken from the checkpoint)::

    released key                                 photonlib key
    -------------------------------------------  ----------------------------------------------------
    model.layers.N.atp.pos_proj.weight           dropped (never used in the released forward)
    model.layers.N.atp.predictor.mlp.I.P         model.language_model.token_scheduler.mlp.I.P
                                                     (I = 0 or 2, P = weight or bias)
    visual.vision_patch_embed.proj.weight        model.visual.patch_embed.proj.weight
    visual.patch_embed.proj.weight               dropped (2D Qwen kernel; not in the released model)
    visual.X                                     model.visual.X
    model.X                                      model.language_model.X
    lm_head.weight                               lm_head.weight (absent when tied to embed_tokens;
                                                     then the embedding is used)

The 5.x nesting of the same names (``model.visual.*``, ``model.language_model.*``) is accepted
as well.

Qwen2.5-VL checkpoints use the same last three rules (:data:`QWEN_KEY_RULES`): transformers
writes the 4.x layout (``visual.*``, ``model.*``) even in 5.x, whose in-memory names
(``model.visual.*``, ``model.language_model.*``, also accepted) are photonlib's. Any key that
matches no rule, lands on no Photon parameter or has the wrong shape is refused with the list
of offending keys; so is a checkpoint that misses anything but the patch embedding (Qwen) or
the threshold MLP (Photon-S1).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from transformers import AutoTokenizer, GenerationConfig, Qwen2_5_VLConfig

from photonlib.errors import PhotonInputError
from photonlib.model.checkpoint_formats import PATCH_INITS, SOURCE_FORMATS
from photonlib.model.configuration import RELEASED_VOLUME_FPS, PhotonConfig, default_attention_implementation
from photonlib.model.decoding import GENERATION_CONFIG_FILE, DecodingSettings
from photonlib.model.modeling import PhotonForConditionalGeneration
from photonlib.model.processing import PhotonProcessor
from photonlib.model.transformers_adapter import quiet_loading
from photonlib.volume.preprocess import PreprocessConfig

logger = logging.getLogger(__name__)

PATCH_EMBEDDING = "model.visual.patch_embed.proj.weight"
THRESHOLD_MLP_PREFIX = "model.language_model.token_scheduler."
LM_HEAD = "lm_head.weight"
EMBED_TOKENS = "model.language_model.embed_tokens.weight"
THRESHOLD_MLP_KEYS = tuple(
    f"{THRESHOLD_MLP_PREFIX}mlp.{layer}.{name}" for layer in (0, 2) for name in ("weight", "bias")
)

SAFETENSORS_FILE = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "tokenizer_config.json")
#: Fields of PhotonConfig that ``preset_overrides`` may set (the rest come from the checkpoint).
OVERRIDABLE_FIELDS = (
    "its_layer", "its_temperature", "its_threshold_scale", "pruning_mode", "surrogate_gradient",
    "pruner", "pruning_budget", "attn_implementation", "volume_fps",
    "its_score_precision",
)  # fmt: skip


class CheckpointError(PhotonInputError):
    """A folder or state dict that cannot become a Photon model; the message says why."""


class KeyRule(NamedTuple):
    """One renaming rule: keys matching ``pattern`` become ``target`` (``re.sub``), or are dropped (None)."""

    pattern: str
    target: str | None
    note: str


_COMMON_RULES = (
    KeyRule(r"^(?:model\.)?visual\.(.+)$", r"model.visual.\1", "vision tower blocks and merger"),
    KeyRule(r"^model\.(?:language_model\.)?(.+)$", r"model.language_model.\1", "language model"),
    KeyRule(r"^lm_head\.weight$", LM_HEAD, "output head (absent when tied to embed_tokens)"),
)

#: Released Photon-S1/S2 key names -> photonlib key names (see the module docstring).
RELEASED_KEY_RULES: tuple[KeyRule, ...] = (
    KeyRule(
        r"^model\.(?:language_model\.)?layers\.(\d+)\.atp\.pos_proj\.weight$", None,
        "ITS pos_proj: created but never used in the released forward",
    ),
    KeyRule(
        r"^model\.(?:language_model\.)?layers\.(\d+)\.atp\.predictor\.mlp\.([02])\.(weight|bias)$",
        r"model.language_model.token_scheduler.mlp.\2.\3", "ITS threshold MLP of decoder layer N = its_layer",
    ),
    KeyRule(r"^(?:model\.)?visual\.vision_patch_embed\.proj\.weight$", PATCH_EMBEDDING, "one-channel 14^3 patch embedding"),
    KeyRule(
        r"^(?:model\.)?visual\.patch_embed\.proj\.weight$", None,
        "2D Qwen patch embedding: not a module of the released model (replaced by vision_patch_embed)",
    ),
    *_COMMON_RULES,
)  # fmt: skip

#: Qwen2.5-VL key names (4.x on-disk layout or 5.x in-memory layout) -> photonlib key names.
QWEN_KEY_RULES: tuple[KeyRule, ...] = (
    KeyRule(
        r"^(?:model\.)?visual\.patch_embed\.proj\.weight$", None,
        "2D patch embedding: replaced by the 3D one (read by patch_init='from_2d')",
    ),
    *_COMMON_RULES,
)  # fmt: skip

_ATP_LAYER = re.compile(r"^model\.(?:language_model\.)?layers\.(\d+)\.atp\.")
_QWEN_2D_PATCH_EMBEDDING = re.compile(QWEN_KEY_RULES[0].pattern)


@dataclass
class ConversionReport:
    """What a conversion kept, dropped and initialised."""

    source_format: str
    source: Path
    destination: Path | None = None
    loaded_tensors: int = 0
    its_layer: int = 0
    initialized: dict[str, str] = field(default_factory=dict)  # photonlib key (or prefix*) -> how
    dropped: dict[str, str] = field(default_factory=dict)  # source key -> why
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"converted {self.source_format} checkpoint {self.source}"]
        if self.destination is not None:
            lines.append(f"wrote Photon model folder {self.destination}")
        lines.append(f"loaded {self.loaded_tensors} tensors; ITS after decoder layer {self.its_layer}")
        lines += [f"initialised {key}: {how}" for key, how in self.initialized.items()]
        lines += [f"dropped {key}: {why}" for key, why in self.dropped.items()]
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)


# ----------------------------------------------------------------------------- key renaming
def rename_keys(keys: Iterable[str], rules: Iterable[KeyRule]) -> tuple[dict[str, str], dict[str, str], list[str]]:
    """Apply ``rules`` (first match wins) to checkpoint keys.

    Returns ``(renamed, dropped, unmatched)``: source key -> photonlib key, source key -> why it
    was dropped, and the keys no rule matches.
    """
    compiled = [(re.compile(rule.pattern), rule) for rule in rules]
    renamed: dict[str, str] = {}
    dropped: dict[str, str] = {}
    unmatched: list[str] = []
    for key in keys:
        for pattern, rule in compiled:
            if pattern.match(key):
                if rule.target is None:
                    dropped[key] = rule.note
                else:
                    renamed[key] = pattern.sub(rule.target, key)
                break
        else:
            unmatched.append(key)
    targets: dict[str, str] = {}
    for source, target in renamed.items():
        if target in targets:
            raise CheckpointError(f"checkpoint keys {targets[target]!r} and {source!r} both map to {target!r}")
        targets[target] = source
    return renamed, dropped, unmatched


def _examples(keys: Iterable[str], limit: int = 6) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f" (+{len(keys) - limit} more)" if len(keys) > limit else "")


def _expected_tensors(config: PhotonConfig) -> dict[str, torch.Size]:
    """Every state-dict key of a Photon model with this config and its shape (built on the meta device)."""
    with torch.device("meta"):
        skeleton = PhotonForConditionalGeneration(config)
    return {key: tensor.shape for key, tensor in skeleton.state_dict().items()}


def _check_against_model(
    state_dict: Mapping[str, torch.Tensor],
    config: PhotonConfig,
    may_be_missing: Iterable[str],
    what: str,
    renamed: Mapping[str, str] | None = None,
) -> list[str]:
    """Refuse unexpected keys, wrong shapes and missing keys; return the (allowed) missing ones.

    ``renamed`` (source key -> photonlib key) lets the messages name the checkpoint's own keys.
    """
    expected = _expected_tensors(config)
    origin = {target: source for source, target in (renamed or {}).items()}

    def named(key: str) -> str:
        source = origin.get(key, key)
        return key if source == key else f"{source} (as {key})"

    optional = set(may_be_missing)
    if config.tie_word_embeddings:
        optional.add(LM_HEAD)
    unexpected = [named(key) for key in state_dict if key not in expected]
    wrong_shape = [
        f"{named(key)} {tuple(state_dict[key].shape)} (Photon expects {tuple(expected[key])})"
        for key in state_dict
        if key in expected and state_dict[key].shape != expected[key]
    ]
    missing = [key for key in expected if key not in state_dict]
    required_missing = [key for key in missing if key not in optional]
    problems = []
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys: {_examples(unexpected)}")
    if wrong_shape:
        problems.append(f"{len(wrong_shape)} tensors of the wrong shape: {_examples(wrong_shape, 3)}")
    if required_missing:
        problems.append(f"{len(required_missing)} missing keys: {_examples(required_missing)}")
    if problems:
        raise CheckpointError(f"{what} does not fit a Photon model of its configuration: " + "; ".join(problems))
    return [key for key in missing if key != LM_HEAD]


# ----------------------------------------------------------------------------- reading folders
def _checkpoint_folder(path: str | Path) -> Path:
    folder = Path(path)
    if not folder.exists():
        raise CheckpointError(f"checkpoint folder {folder} does not exist")
    if not folder.is_dir():
        raise CheckpointError(f"{folder} is not a folder: give the checkpoint folder (config.json + safetensors)")
    return folder


def read_checkpoint_config(folder: str | Path) -> dict[str, Any]:
    """The raw ``config.json`` of a checkpoint folder, refused unless it is a Qwen2.5-VL config."""
    folder = _checkpoint_folder(folder)
    config_file = folder / "config.json"
    if not config_file.exists():
        raise CheckpointError(f"{folder} has no config.json: not a Qwen2.5-VL or released Photon checkpoint folder")
    try:
        raw = json.loads(config_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{config_file} is not valid JSON ({error})") from None
    model_type = raw.get("model_type") if isinstance(raw, dict) else None
    if model_type == PhotonConfig.model_type:
        raise CheckpointError(
            f"{folder} is already a Photon model folder: load it with PhotonForConditionalGeneration.from_pretrained"
        )
    if model_type != "qwen2_5_vl":
        raise CheckpointError(
            f"{folder} holds a {model_type or 'unknown'!r} model; only Qwen2.5-VL checkpoints (model_type "
            "'qwen2_5_vl') and released Photon-S1/S2 checkpoints (also 'qwen2_5_vl') can be converted"
        )
    return raw


def _vision_fields(raw: Mapping[str, Any]) -> dict[str, Any]:
    vision = dict(raw.get("vision_config") or {})
    if "in_chans" in vision:
        # The release's 3D patch embedding reads in_chans (1). transformers 4.x also saves
        # in_channels (3, the unused 2D kernel's default) beside it, so in_chans wins.
        vision["in_channels"] = vision.pop("in_chans")
    return vision


def detect_source_format(folder: str | Path) -> str:
    """``released`` (one-channel 3D patch embedding in the config) or ``qwen2.5-vl`` (RGB 2D kernel)."""
    vision = _vision_fields(read_checkpoint_config(folder))
    return "released" if vision.get("in_channels", 3) == 1 else "qwen2.5-vl"


def _weight_files(folder: Path) -> list[Path]:
    index = folder / SAFETENSORS_INDEX
    if index.exists():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise CheckpointError(f"{index} is not a safetensors index ({error!r})") from None
        files = [folder / name for name in dict.fromkeys(weight_map.values())]
        absent = [file.name for file in files if not file.exists()]
        if absent:
            raise CheckpointError(f"{index} lists shards that are not in {folder}: {_examples(absent)}")
        return files
    single = folder / SAFETENSORS_FILE
    if single.exists():
        return [single]
    hint = " (pytorch_model.bin checkpoints: re-save them with safe_serialization)" if any(folder.glob("*.bin")) else ""
    raise CheckpointError(f"{folder} has no {SAFETENSORS_FILE} or {SAFETENSORS_INDEX}{hint}")


def load_checkpoint_state_dict(folder: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of a safetensors checkpoint folder (one file or the shards of its index)."""
    state_dict: dict[str, torch.Tensor] = {}
    for file in _weight_files(_checkpoint_folder(folder)):
        try:
            shard = load_file(file)
        except (SafetensorError, OSError) as error:
            raise CheckpointError(f"{file} is not a readable safetensors file ({error})") from None
        repeated = state_dict.keys() & shard.keys()
        if repeated:
            raise CheckpointError(f"{file} repeats tensors of another shard: {_examples(repeated)}")
        state_dict.update(shard)
    return state_dict


def _load_tokenizer(folder: Path):
    if not any((folder / name).exists() for name in TOKENIZER_FILES):
        raise CheckpointError(
            f"{folder} has no tokenizer files ({', '.join(TOKENIZER_FILES)}); copy the checkpoint's tokenizer into it"
        )
    return AutoTokenizer.from_pretrained(folder)


def _processor(config: PhotonConfig, folder: Path, report: ConversionReport) -> PhotonProcessor:
    """The checkpoint's tokenizer with the ``photon`` preprocessing; completes the config's padding id.

    Qwen2.5-VL and released configs carry no ``pad_token_id`` (it lives in their generation
    config); Photon's decoding needs one, so the tokenizer's is written into the config.
    """
    processor = PhotonProcessor.for_config(config, PreprocessConfig.preset("photon"), _load_tokenizer(folder))
    if processor.video_token_id != config.video_token_id:
        raise CheckpointError(
            f"the tokenizer in {folder} gives <|video_pad|> id {processor.video_token_id}, the config expects "
            f"{config.video_token_id}: tokenizer and weights do not belong together"
        )
    if config.text_config.pad_token_id is None:
        config.text_config.pad_token_id = processor.tokenizer.pad_token_id
        report.notes.append(f"pad_token_id set to the tokenizer's ({processor.tokenizer.pad_token_id})")
    return processor


# ----------------------------------------------------------------------------- configs
def photon_config_from_qwen(raw: Mapping[str, Any], preset_overrides: Mapping[str, Any] | None = None) -> PhotonConfig:
    """A PhotonConfig with the text and vision shapes of a Qwen2.5-VL ``config.json`` (4.x or 5.x layout).

    The vision tower gets Photon's cubic one-channel patch embedding (``in_channels=1``,
    ``temporal_patch_size = patch_size``); everything else (patch size, merge, window, depth,
    widths, token ids, tied embeddings) is kept. ``preset_overrides`` sets Photon fields
    (:data:`OVERRIDABLE_FIELDS`), e.g. ``{"its_layer": 8, "pruning_mode": "soft"}``.
    """
    overrides = dict(preset_overrides or {})
    unknown = sorted(set(overrides) - set(OVERRIDABLE_FIELDS))
    if unknown:
        raise CheckpointError(f"preset_overrides may set {', '.join(OVERRIDABLE_FIELDS)}; got {', '.join(unknown)}")
    raw = dict(raw)
    raw["vision_config"] = _vision_fields(raw)
    try:
        qwen = Qwen2_5_VLConfig.from_dict(raw)
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"not a usable Qwen2.5-VL config: {error}") from None
    vision = qwen.vision_config.to_dict()
    vision.update(in_channels=1, temporal_patch_size=vision["patch_size"])
    fields: dict[str, Any] = {
        "text_config": qwen.text_config.to_dict(),
        "vision_config": vision,
        "image_token_id": qwen.image_token_id,
        "video_token_id": qwen.video_token_id,
        "vision_start_token_id": qwen.vision_start_token_id,
        "vision_end_token_id": qwen.vision_end_token_id,
        "tie_word_embeddings": qwen.tie_word_embeddings,
    }
    fields.update(overrides)
    fields.setdefault("attn_implementation", default_attention_implementation())
    fields.setdefault("volume_fps", RELEASED_VOLUME_FPS)  # the release's FPS=1 (test_photon_s2.sh)
    fields.setdefault("its_score_precision", "model")  # the release compares in the model's dtype
    return PhotonConfig(**fields)


# ----------------------------------------------------------------------------- patch embedding
def patch_embedding_from_2d(kernel_2d: torch.Tensor, temporal_patch_size: int) -> torch.Tensor:
    """Photon's (hidden, 1, T, p, p) kernel from Qwen's (hidden, C, F, p, p) one (fp32).

    ``W3[o, 0, d] = sum_c W2[o, c, d % F] / (T / F)``: a volume whose T slices repeat an F-frame
    grey video (equal channels) gets the embedding Qwen gives that video.
    """
    if kernel_2d.ndim != 5:
        raise CheckpointError(
            f"the 2D patch embedding must be (hidden, C, F, p, p), got shape {tuple(kernel_2d.shape)}"
        )
    frames = kernel_2d.shape[2]
    if temporal_patch_size % frames:
        raise CheckpointError(f"{temporal_patch_size} slices cannot be split into groups of {frames} frames")
    repeats = temporal_patch_size // frames
    summed = kernel_2d.float().sum(dim=1, keepdim=True)  # grey input: the channels see the same values
    return summed.repeat(1, 1, repeats, 1, 1) / repeats


# ----------------------------------------------------------------------------- model assembly
def _build_model(
    config: PhotonConfig, state_dict: dict[str, torch.Tensor], new_keys: Iterable[str], dtype: torch.dtype | None
) -> PhotonForConditionalGeneration:
    """transformers' own loading from an in-memory state dict: no second model, missing tensors get Photon's init."""
    options: dict[str, Any] = {"dtype": dtype} if dtype is not None else {}
    with quiet_loading():
        model, info = PhotonForConditionalGeneration.from_pretrained(
            None, config=config, state_dict=state_dict, output_loading_info=True, **options
        )
    unexpected_new = set(info["missing_keys"]) - set(new_keys)
    if info["unexpected_keys"] or info["mismatched_keys"] or unexpected_new:
        raise RuntimeError(f"loading disagreed with the key checks: {info}")  # a bug, not a user error
    return model


def _adopt_generation_config(model: PhotonForConditionalGeneration, folder: Path, report: ConversionReport) -> None:
    """Decode as the checkpoint's authors do: its generation_config.json travels with the weights."""
    if (folder / GENERATION_CONFIG_FILE).exists():
        model.generation_config = GenerationConfig.from_pretrained(folder)
        settings = DecodingSettings.from_generation_config(model.generation_config)
        report.notes.append(f"decoding from the checkpoint's {GENERATION_CONFIG_FILE}: {settings}")


def _new_tensor_notes(missing: Iterable[str]) -> dict[str, str]:
    notes: dict[str, str] = {}
    for key in missing:
        if key.startswith(THRESHOLD_MLP_PREFIX):
            notes[THRESHOLD_MLP_PREFIX + "mlp.*"] = "new ITS threshold MLP (output bias -5: keeps nearly every token)"
        else:
            notes[key] = "new"
    return notes


def _load_qwen(
    path: str | Path, preset_overrides: Mapping[str, Any] | None, patch_init: str, dtype: torch.dtype | None
) -> tuple[PhotonForConditionalGeneration, PhotonProcessor, ConversionReport]:
    if patch_init not in PATCH_INITS:
        raise CheckpointError(f"patch_init must be one of {', '.join(PATCH_INITS)}, got {patch_init!r}")
    folder = _checkpoint_folder(path)
    raw = read_checkpoint_config(folder)
    if _vision_fields(raw).get("in_channels", 3) == 1:
        raise CheckpointError(
            f"{folder} has a one-channel patch embedding: it is a released Photon checkpoint, convert it as 'released'"
        )
    config = photon_config_from_qwen(raw, preset_overrides)
    source = load_checkpoint_state_dict(folder)
    renamed, dropped, unmatched = rename_keys(source, QWEN_KEY_RULES)
    if unmatched:
        raise CheckpointError(f"{len(unmatched)} keys of {folder} are not Qwen2.5-VL keys: {_examples(unmatched)}")
    kernels = [key for key in source if _QWEN_2D_PATCH_EMBEDDING.match(key)]
    if len(kernels) != 1:
        raise CheckpointError(
            f"{folder} should hold one 2D patch embedding (visual.patch_embed.proj.weight), found {len(kernels)}"
        )
    kernel_2d = source[kernels[0]]
    hidden, patch = config.vision_config.hidden_size, config.vision_config.patch_size
    if kernel_2d.ndim != 5 or kernel_2d.shape[0] != hidden or tuple(kernel_2d.shape[3:]) != (patch, patch):
        raise CheckpointError(
            f"{kernels[0]} has shape {tuple(kernel_2d.shape)}; a Qwen2.5-VL 2D patch embedding is "
            f"({hidden}, channels, frames, {patch}, {patch})"
        )
    state_dict = {renamed[key]: tensor for key, tensor in source.items() if key in renamed}
    new_keys = _check_against_model(
        state_dict, config, [PATCH_EMBEDDING, *THRESHOLD_MLP_KEYS], f"Qwen2.5-VL checkpoint {folder}", renamed
    )
    report = ConversionReport("qwen2.5-vl", folder, loaded_tensors=len(state_dict), its_layer=config.its_layer)
    processor = _processor(config, folder, report)
    model = _build_model(config, state_dict, new_keys, dtype)
    _adopt_generation_config(model, folder, report)
    embedding = model.model.visual.patch_embed.proj.weight
    if patch_init == "from_2d":
        with torch.no_grad():
            embedding.copy_(
                patch_embedding_from_2d(kernel_2d, config.vision_config.temporal_patch_size).to(embedding.dtype)
            )
    report.initialized[PATCH_EMBEDDING] = (
        f"from the 2D kernel {tuple(kernel_2d.shape)}: summed over channels, tiled over the slices, divided by the repeats"
        if patch_init == "from_2d"
        else "truncated normal, std 0.02 (as the released stage 1 started)"
    )
    report.initialized.update(_new_tensor_notes(key for key in new_keys if key != PATCH_EMBEDDING))
    report.dropped.update(dropped)
    return model, processor, report


def from_qwen2_5_vl(
    path: str | Path,
    preset_overrides: Mapping[str, Any] | None = None,
    patch_init: str = "released",
    dtype: torch.dtype | None = None,
) -> tuple[PhotonForConditionalGeneration, PhotonProcessor]:
    """Photon built from a Qwen2.5-VL checkpoint folder, and its processor.

    Args:
        path: folder written by ``Qwen2_5_VLForConditionalGeneration.save_pretrained`` (config.json,
            safetensors) with the tokenizer files.
        preset_overrides: Photon fields to set (:data:`OVERRIDABLE_FIELDS`), e.g. ``{"its_layer": 8}``.
        patch_init: ``released`` (truncated normal, std 0.02) or ``from_2d`` (see
            :func:`patch_embedding_from_2d`).
        dtype: parameter dtype; default: the checkpoint's.

    The processor has the checkpoint's tokenizer and the ``photon`` preprocessing. Raises
    :class:`CheckpointError` for a folder that is not a Qwen2.5-VL checkpoint, and for any key
    other than the patch embedding and the ITS threshold MLP missing, or any unexpected key.
    """
    model, processor, report = _load_qwen(path, preset_overrides, patch_init, dtype)
    logger.info("%s", report.summary())
    return model, processor


# ----------------------------------------------------------------------------- released checkpoints
def released_its_layer(keys: Iterable[str]) -> int | None:
    """Decoder layer that holds ITS (``atp``) in a released state dict; None for Photon-S1."""
    layers = {int(match.group(1)) for key in keys if (match := _ATP_LAYER.match(key))}
    if len(layers) > 1:
        raise CheckpointError(f"ITS (atp) found in decoder layers {sorted(layers)}; Photon supports it in one layer")
    return layers.pop() if layers else None


def convert_released_state_dict(
    state_dict: Mapping[str, torch.Tensor], config: PhotonConfig
) -> dict[str, torch.Tensor]:
    """Released Photon-S1/S2 tensors renamed to photonlib keys (:data:`RELEASED_KEY_RULES`).

    ``atp.pos_proj`` and a leftover 2D ``visual.patch_embed`` are dropped. When the checkpoint's
    ITS layer differs from ``config.its_layer``, ``config.its_layer`` is set to the checkpoint's.
    With tied embeddings and no ``lm_head.weight``, the embedding is added under that name, so
    the result loads with ``load_state_dict(strict=True)``; the one exception is Photon-S1 (no
    ITS), whose result lacks the threshold MLP. Unknown keys, wrong shapes and other missing
    tensors raise :class:`CheckpointError`.
    """
    layer = released_its_layer(state_dict)
    renamed, _dropped, unmatched = rename_keys(state_dict, RELEASED_KEY_RULES)
    if unmatched:
        raise CheckpointError(f"{len(unmatched)} keys are not released Photon keys: {_examples(unmatched)}")
    if layer is not None and layer != config.its_layer:
        layers = config.text_config.num_hidden_layers
        if not 0 <= layer < layers - 1:
            raise CheckpointError(
                f"ITS found after decoder layer {layer}, outside [0, {layers - 2}] for {layers} layers"
            )
        logger.info("its_layer set to %d as in the released checkpoint (config had %d)", layer, config.its_layer)
        config.its_layer = layer
    converted = {renamed[key]: tensor for key, tensor in state_dict.items() if key in renamed}
    if config.tie_word_embeddings and LM_HEAD not in converted and EMBED_TOKENS in converted:
        converted[LM_HEAD] = converted[EMBED_TOKENS]
    _check_against_model(converted, config, THRESHOLD_MLP_KEYS, "released Photon state dict", renamed)
    return converted


def released_photon_config(raw: Mapping[str, Any], preset_overrides: Mapping[str, Any] | None = None) -> PhotonConfig:
    """PhotonConfig from a released checkpoint's config.json (Qwen2.5-VL 4.x layout, ``in_chans: 1``)."""
    vision = _vision_fields(raw)
    if vision.get("in_channels", 3) != 1 or vision.get("temporal_patch_size") != vision.get("patch_size", 14):
        raise CheckpointError(
            "the config has no one-channel cubic patch embedding (vision in_chans 1, temporal_patch_size 14): "
            "a plain Qwen2.5-VL checkpoint, convert it as 'qwen2.5-vl'"
        )
    return photon_config_from_qwen(raw, preset_overrides)


def load_released_checkpoint(
    path: str | Path, preset_overrides: Mapping[str, Any] | None = None, dtype: torch.dtype | None = None
) -> tuple[PhotonForConditionalGeneration, PhotonProcessor, ConversionReport]:
    """A released Photon-S1/S2 checkpoint folder as a photonlib model, its processor and a report."""
    folder = _checkpoint_folder(path)
    config = released_photon_config(read_checkpoint_config(folder), preset_overrides)
    source = load_checkpoint_state_dict(folder)
    state_dict = convert_released_state_dict(source, config)
    _renamed, dropped, _unmatched = rename_keys(source, RELEASED_KEY_RULES)
    new_keys = [key for key in THRESHOLD_MLP_KEYS if key not in state_dict]
    report = ConversionReport("released", folder, loaded_tensors=len(source) - len(dropped), its_layer=config.its_layer)
    processor = _processor(config, folder, report)
    model = _build_model(config, state_dict, new_keys, dtype)
    _adopt_generation_config(model, folder, report)
    report.initialized.update(_new_tensor_notes(new_keys))
    report.dropped.update(dropped)
    if new_keys:
        report.notes.append("no ITS in the checkpoint (Photon-S1): train stage 2 or use pruning_mode 'none'")
    return model, processor, report


def _prepare_destination(destination: Path, sources: Iterable[Path], overwrite: bool) -> None:
    if any(destination.resolve() == source.resolve() for source in sources):
        raise CheckpointError(f"the destination {destination} is the source folder; choose a new folder")
    if destination.exists() and not destination.is_dir():
        raise CheckpointError(f"the destination {destination} is a file; choose a new folder")
    if destination.exists() and any(destination.iterdir()) and not overwrite:
        raise CheckpointError(f"the destination {destination} is not empty; choose a new folder or allow overwriting")


def convert_released_checkpoint(
    src_folder: str | Path, dst_folder: str | Path, dtype: torch.dtype | None = None, overwrite: bool = False
) -> ConversionReport:
    """Write a photonlib model folder from a released Photon checkpoint folder.

    The result loads with ``PhotonForConditionalGeneration.from_pretrained(dst)`` and
    ``PhotonProcessor.from_pretrained(dst)``.
    """
    return convert_checkpoint(src_folder, dst_folder, "released", dtype=dtype, overwrite=overwrite)


def convert_checkpoint(
    src_folder: str | Path,
    dst_folder: str | Path,
    source_format: str = "auto",
    patch_init: str | None = None,
    dtype: torch.dtype | None = None,
    overwrite: bool = False,
) -> ConversionReport:
    """Convert a Qwen2.5-VL or released Photon checkpoint folder into a photonlib model folder.

    ``source_format``: ``auto`` (from the config: a one-channel patch embedding means released),
    ``released`` or ``qwen2.5-vl``. ``patch_init`` applies to Qwen2.5-VL only (default ``released``).
    """
    source = _checkpoint_folder(src_folder)
    destination = Path(dst_folder)
    if source_format == "auto":
        source_format = detect_source_format(source)
    if source_format not in SOURCE_FORMATS:
        raise CheckpointError(f"source format must be auto, {' or '.join(SOURCE_FORMATS)}; got {source_format!r}")
    if source_format == "released" and patch_init is not None:
        raise CheckpointError(
            "patch_init applies to Qwen2.5-VL checkpoints only: a released checkpoint has its trained 3D patch embedding"
        )
    _prepare_destination(destination, [source], overwrite)
    if source_format == "released":
        model, processor, report = load_released_checkpoint(source, dtype=dtype)
    else:
        model, processor, report = _load_qwen(source, None, patch_init or "released", dtype)
    with quiet_loading():
        model.save_pretrained(destination)
    processor.save_pretrained(destination)
    report.destination = destination
    return report
