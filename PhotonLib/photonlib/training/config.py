"""The training recipe's configuration: one YAML file, overridable with ``key=value`` arguments.

Example (``PhotonLib/configs/phantom-demo.yaml`` is a complete one)::

    stage: 2
    model: {init: "preset:small"}
    data: {kind: phantoms, path: phantoms/phantoms.jsonl, preprocess: small}
    output_dir: runs/demo
    max_steps: 600
    batch_size: 4
    pruning: {soft_from: 0.3, hard_from: 0.6}

Overrides use dotted keys: ``photon train --config demo.yaml max_steps=10 pruning.hard_from=0.5``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from photonlib.errors import ConfigurationError


@dataclass
class ModelSettings:
    # "preset:<tiny|small|qwen2.5-vl-3b>" (random init), a Photon model folder, or
    # "qwen2.5-vl:<folder>" (Photon built from a Qwen2.5-VL checkpoint).
    init: str = "preset:tiny"
    overrides: dict[str, Any] = field(default_factory=dict)  # PhotonConfig fields, e.g. its_layer
    patch_init: str = "released"  # for qwen2.5-vl: released | from_2d
    # For presets: "qwen" (the real Qwen tokenizer, bundled) or "compact" (a byte-level BPE
    # trained on the training questions and answers; the demo model's choice).
    tokenizer: str = "qwen"
    compact_vocab_size: int = 512


@dataclass
class DataSettings:
    kind: str = "jsonl"  # see photonlib.data.load_dataset
    path: str = ""
    volume_root: str | None = None
    on_error: str = "skip"  # skip (report and count) | raise
    preprocess: str = "small"  # PreprocessConfig preset for the model grid
    preprocess_overrides: dict[str, Any] = field(default_factory=dict)  # e.g. {ct_window_hu: [-200, 300]}
    max_samples: int | None = None
    cache_dir: str | None = None  # prepared volumes are cached here (default: <output_dir>/volume-cache)


@dataclass
class PruningSchedule:
    """When each phase starts, as a fraction of the run (<= 1) or a count (> 1).

    Before ``soft_from`` nothing is pruned (ITS still scores); then visual hidden states are
    scaled by their keep probability; from ``hard_from`` tokens are dropped (SGP trains the
    threshold); from ``flip_from`` a share ``flip_probability`` of the clean samples sees the
    inverted keep decision and learns not to give the answer from the wrong tokens
    (``-log(1 - p(answer))``). Released: soft / hard / flip at 4k / 8k / 9k.

    ``counted_in``: ``forward_passes`` (the release: every micro-batch of every process counts
    one, so 4k means 4k forward passes per rank) or ``optimizer_steps``.
    """

    soft_from: float = 0.3
    hard_from: float = 0.6
    flip_from: float | None = 0.675  # None: no flip phase. 0.675: the release's 9k on its 4k / 8k scale
    flip_probability: float = 0.05
    counted_in: str = "forward_passes"
    enabled: bool = True  # False: never prune, and save the model unpruned (the no-pruning reference)

    def __post_init__(self) -> None:
        if self.counted_in not in SCHEDULE_UNITS:
            raise ConfigurationError(f"pruning.counted_in must be one of {', '.join(SCHEDULE_UNITS)}, got {self.counted_in!r}")
        if not 0 <= self.flip_probability <= 1:
            raise ConfigurationError("pruning.flip_probability must be in [0, 1]")

    def position(self, step: int, micro_step: int, max_steps: int, accumulation: int) -> tuple[int, int]:
        """(where the run is, how long it is) in the schedule's unit."""
        if self.counted_in == "forward_passes":
            return step * accumulation + micro_step, max_steps * accumulation
        return step, max_steps

    def mode_at(self, step: int, max_steps: int) -> str:
        """The pruning mode at ``step`` of ``max_steps`` (in the schedule's unit, see :meth:`position`)."""
        if not self.enabled:
            return "none"
        if step >= _as_step(self.hard_from, max_steps):
            return "hard"
        if step >= _as_step(self.soft_from, max_steps):
            return "soft"
        return "none"

    def flipping_at(self, step: int, max_steps: int) -> bool:
        return self.enabled and self.flip_from is not None and step >= _as_step(self.flip_from, max_steps)


@dataclass
class BandLoss:
    """relu(r - high) + relu(low - r) on the keep ratio r (mean keep probability), times ``weight``.

    As released it is taken per sample and averaged, only from the soft phase on, and not on
    perturbed or flipped samples; ``per_sample: false`` takes it once on the batch mean.
    """

    low: float = 0.3
    high: float = 0.8
    weight: float = 1.0
    per_sample: bool = True


@dataclass
class GroundingLoss:
    """Not part of Photon's recipe (weight 0, the default, is the release): ``weight`` times
    ``-log`` of the share of the instruction's attention on the visual tokens (a softmax of
    ITS's raw scores) that falls on the tokens holding the lesion, for clean samples of volumes
    with a label map and a lesion, from the soft phase on.

    As released the scores carry no gradient, and the answer's first token is computed where
    every visual token is still present (layers 0..k): a right answer does not need ITS to keep
    the lesion, and nothing teaches it to. This term lets the scores' gradient reach layers
    0..k and asks for the lesion where the label map knows it (the phantoms), so that the
    heatmap shows it. A token holds the lesion as in the vision warm-up
    (``VisionWarmupSettings.lesion_fraction``).
    """

    weight: float = 0.0


@dataclass
class VisionWarmupSettings:
    """Stage 0 (see photonlib.training.vision_warmup): per-token targets from label maps."""

    lesion_fraction: float = 0.05  # a token is lesion when one of its model voxels is at least this much lesion
    positive_weight: float | None = None  # weight of lesion tokens in the loss (None: from the data)
    # Each token's label composition (label values 0 .. anatomy_classes - 1; the phantoms have 11 with
    # the background), learnt with this weight (0: not learnt).
    anatomy_weight: float = 0.0
    anatomy_classes: int = 11
    diameter_weight: float = 0.0  # the lesion's diameter on its tokens (0: not learnt)


@dataclass
class TrainConfig:
    # 0: vision warm-up on label maps (not Photon's recipe: for towers trained from scratch, see
    # photonlib.training.vision_warmup); 1: align the 3D patch embedding only; 2: everything, with ITS + SGP
    stage: int = 2
    model: ModelSettings = field(default_factory=ModelSettings)
    data: DataSettings = field(default_factory=DataSettings)
    output_dir: str = "runs/photon"
    seed: int = 0
    max_steps: int = 100
    batch_size: int = 2
    gradient_accumulation_steps: int = 1
    learning_rate: float = 1e-5  # language model (stage 2) / patch embedding (stage 1)
    vision_learning_rate: float | None = 5e-6  # vision tower in stages 0 and 2, and the warm-up head (None: learning_rate)
    scheduler_learning_rate: float | None = None  # ITS threshold MLP (None: same as learning_rate)
    # Stages 0 and 2: the 3D patch embedding at its own rate (None: with the rest of the tower)
    patch_embedding_learning_rate: float | None = None
    freeze_vision: bool = False  # stage 2: keep the vision tower as initialised (e.g. after a warm-up)
    weight_decay: float = 0.1  # as released (ms-swift's default); not on biases and norm weights
    adam_beta2: float = 0.95  # as released (ms-swift's default)
    warmup_ratio: float = 0.05
    max_grad_norm: float = 1.0
    mixed_precision: str = "no"  # no | bf16 | fp16
    gradient_checkpointing: bool = False
    pruning: PruningSchedule = field(default_factory=PruningSchedule)
    band_loss: BandLoss = field(default_factory=BandLoss)
    grounding_loss: GroundingLoss = field(default_factory=GroundingLoss)
    vision_warmup: VisionWarmupSettings = field(default_factory=VisionWarmupSettings)
    # Share of stage-2 samples perturbed (the release's six kinds, on the patches), trained to be
    # uncertain (entropy maximised instead of cross-entropy). Released: 0.15.
    robustness_probability: float = 0.15
    save_every: int = 0  # steps between checkpoints (0: only at the end)
    log_every: int = 10
    tensorboard: bool = False
    num_workers: int = 0

    def __post_init__(self) -> None:
        if self.stage not in (0, 1, 2):
            raise ConfigurationError(f"stage must be 0 (vision warm-up), 1 or 2, got {self.stage}")
        if self.freeze_vision and self.stage != 2:
            raise ConfigurationError("freeze_vision applies to stage 2 only (stage 0 trains the tower, stage 1 its patch embedding)")
        if not 0 < self.vision_warmup.lesion_fraction <= 1:
            raise ConfigurationError("vision_warmup.lesion_fraction must be in (0, 1]")
        if self.vision_warmup.anatomy_weight < 0 or self.vision_warmup.diameter_weight < 0:
            raise ConfigurationError("vision_warmup.anatomy_weight and diameter_weight must be 0 (off) or positive")
        if self.vision_warmup.anatomy_classes < 2:
            raise ConfigurationError("vision_warmup.anatomy_classes must be at least 2 (the background and one label)")
        if self.max_steps < 1 or self.batch_size < 1 or self.gradient_accumulation_steps < 1:
            raise ConfigurationError("max_steps, batch_size and gradient_accumulation_steps must be at least 1")
        if self.mixed_precision not in ("no", "bf16", "fp16"):
            raise ConfigurationError(f"mixed_precision must be no, bf16 or fp16, got {self.mixed_precision!r}")
        if not 0 <= self.robustness_probability <= 1:
            raise ConfigurationError("robustness_probability must be in [0, 1]")
        if self.grounding_loss.weight < 0:
            raise ConfigurationError("grounding_loss.weight must be 0 (off, as released) or positive")
        if self.grounding_loss.weight and self.stage != 2:
            raise ConfigurationError("grounding_loss applies to stage 2 only (the stage that trains ITS)")


def load_train_config(path: str | Path | None, overrides: list[str] = ()) -> TrainConfig:
    """Read a YAML recipe and apply ``key=value`` overrides (values parsed as YAML scalars)."""
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise ConfigurationError(f"{path}: no such training configuration")
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as error:
            raise ConfigurationError(f"{path}: not valid YAML ({' '.join(str(error).split())})") from None
        if not isinstance(raw, dict):
            raise ConfigurationError(f"{path}: the configuration must be a mapping of settings")
    for item in overrides:
        key, separator, value = item.partition("=")
        if not separator or not key:
            raise ConfigurationError(f"override {item!r} is not of the form key=value")
        target = raw
        parts = key.split(".")
        for part in parts[:-1]:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise ConfigurationError(f"override {item!r}: {part} is not a section")
        target[parts[-1]] = yaml.safe_load(value)
    return _build(TrainConfig, raw, "")


def _build(cls, values: dict[str, Any], prefix: str):
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(values) - set(known)
    if unknown:
        raise ConfigurationError(f"unknown setting(s) {', '.join(prefix + k for k in sorted(unknown))}; known: {', '.join(known)}")
    arguments = {}
    for name, value in values.items():
        nested = _NESTED.get((cls, name))
        if nested is not None:
            if not isinstance(value, dict):
                raise ConfigurationError(f"{prefix}{name} must be a section (mapping)")
            value = _build(nested, value, f"{prefix}{name}.")
        arguments[name] = _coerce(value, str(known[name].type), f"{prefix}{name}")
    try:
        return cls(**arguments)
    except TypeError as error:
        raise ConfigurationError(f"bad settings for {prefix or 'the recipe'}: {error}") from None


def _coerce(value: Any, annotation: str, name: str) -> Any:
    """YAML reads ``1e-5`` (no dot) as a string: convert numbers where the field wants one."""
    if isinstance(value, str) and annotation.split(" |")[0] in ("float", "int"):
        try:
            return float(value) if annotation.startswith("float") else int(value)
        except ValueError:
            raise ConfigurationError(f"{name} must be a number, got {value!r}") from None
    if isinstance(value, int) and not isinstance(value, bool) and annotation.startswith("float"):
        return float(value)
    return value


SCHEDULE_UNITS = ("forward_passes", "optimizer_steps")


def config_to_dict(config: TrainConfig) -> dict[str, Any]:
    return dataclasses.asdict(config)


def _as_step(value: float, max_steps: int) -> int:
    return int(round(value * max_steps)) if value <= 1 else int(value)


_NESTED = {
    (TrainConfig, "model"): ModelSettings,
    (TrainConfig, "data"): DataSettings,
    (TrainConfig, "pruning"): PruningSchedule,
    (TrainConfig, "band_loss"): BandLoss,
    (TrainConfig, "grounding_loss"): GroundingLoss,
    (TrainConfig, "vision_warmup"): VisionWarmupSettings,
}
