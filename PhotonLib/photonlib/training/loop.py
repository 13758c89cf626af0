"""The training recipe: stage 1 (patch-embedding alignment) and stage 2 (ITS + SGP fine-tuning).

Readable on purpose: one function per concern, the loop at the bottom. Everything distributed
goes through accelerate (``accelerate launch --config_file ... -m photonlib.cli.main train ...``
for DDP, FSDP or DeepSpeed ZeRO-2); nothing here assumes one process.

Exact resume: the batch of every step is a pure function of (seed, step, process), and the
perturbation and flip draws are seeded by (seed, step, micro-step, the sample's place in the global
batch), so ``--resume`` after a checkpoint continues exactly where the uninterrupted run would have
been (accelerate restores model, optimizer, scheduler and RNG states).

World sizes agree: W processes with ``batch_size`` each train what one process with
``batch_size x W`` trains (the same global batch, the same draws, the same gradient). Each
process's loss is its share of the global micro-batch's loss (its sums divided by the global
counts: ``answer_losses``, ``band_loss``), so every sample's gradient is the one it gets in one
process, and the processes' gradients are summed (DDP averages them; the loop multiplies by W).
Summing per-sample gradients matters for SGP: its surrogate gives each sample's keep
probabilities a gradient of a fixed size, not one scaled by the loss. Under DeepSpeed (which
averages and steps inside ``backward``) the sums are divided by the global counts / W instead:
the same for every loss term, and for SGP the release's behaviour (its surrogate on the threshold
MLP averaged over the processes).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, DistributedDataParallelKwargs, DistributedType, set_seed
from tqdm.auto import tqdm
from transformers import get_cosine_schedule_with_warmup

from photonlib.data.samples import DatasetError
from photonlib.errors import ConfigurationError, PhotonEnvironmentError
from photonlib.model import PhotonConfig, PhotonForConditionalGeneration, PhotonProcessor
from photonlib.model.compaction import gather_positions
from photonlib.model.tokenizer import token_id_settings, train_compact_tokenizer
from photonlib.model.tokens import IGNORE_INDEX
from photonlib.training.config import TrainConfig, config_to_dict
from photonlib.training.vision_warmup import (
    VisionWarmup,
    WarmupVolume,
    anatomy_loss,
    diameter_loss,
    positive_weight,
    token_label_composition,
    token_lesion_labels,
    warmup_batch,
    warmup_loss,
    warmup_volumes,
)
from photonlib.volume import PreprocessConfig, prepare_volume, read_volume

logger = logging.getLogger(__name__)
STATE_FILE = "trainer_state.json"
WARMUP_HEAD_FILE = "vision-warmup-lesion-head.pt"


# ----------------------------------------------------------------------------- model
def build_model(config: TrainConfig, examples: Sequence[TrainingExample] = ()) -> tuple[PhotonForConditionalGeneration, PhotonProcessor]:
    """The model and processor named by ``config.model.init``."""
    init, overrides = config.model.init, dict(config.model.overrides)
    preprocess = preprocess_settings(config)
    if init.startswith("preset:"):
        tokenizer = None
        if config.model.tokenizer == "compact":
            texts = [text for example in examples for text in (example.question, example.answer)]
            tokenizer = train_compact_tokenizer(texts, config.model.compact_vocab_size)
            ids = token_id_settings(tokenizer)
            overrides["text"] = {**overrides.get("text", {}), **ids.pop("text")}
            overrides.update(ids)
        elif config.model.tokenizer != "qwen":
            raise ConfigurationError(f"model.tokenizer must be qwen or compact, got {config.model.tokenizer!r}")
        model = PhotonForConditionalGeneration(PhotonConfig.from_preset(init.split(":", 1)[1], **overrides))
        return model, PhotonProcessor.for_config(model.config, preprocess, tokenizer)
    if init.startswith("qwen2.5-vl:"):
        from photonlib.model.conversion import from_qwen2_5_vl

        model, processor = from_qwen2_5_vl(init.split(":", 1)[1], preset_overrides=overrides, patch_init=config.model.patch_init)
        processor.preprocess = preprocess
        return model, processor
    folder = Path(init)
    if not (folder / "config.json").exists():
        raise ConfigurationError(f"model.init {init!r} is neither preset:<name>, qwen2.5-vl:<folder> nor a Photon model folder")
    model = PhotonForConditionalGeneration.from_pretrained(folder)
    for key, value in overrides.items():
        setattr(model.config, key, value)
    return model, PhotonProcessor.from_pretrained(folder)


def preprocess_settings(config: TrainConfig) -> PreprocessConfig:
    """The named preset with the recipe's overrides (validated by PreprocessConfig)."""
    overrides = {key: tuple(value) if isinstance(value, list) else value for key, value in config.data.preprocess_overrides.items()}
    return dataclasses.replace(PreprocessConfig.preset(config.data.preprocess), **overrides)


def parameter_groups(model: PhotonForConditionalGeneration, config: TrainConfig, extra_vision: Sequence[torch.nn.Parameter] = ()) -> list[dict]:
    """Which parameters learn, and at which rate.

    Stage 0: the vision tower (and ``extra_vision``, the warm-up's lesion head). Stage 1: only the
    3D patch embedding. Stage 2: all (the tower unless ``freeze_vision``), vision and ITS at
    their own rates. ``patch_embedding_learning_rate`` gives the patch embedding its own group.
    """
    patch_embedding = set(model.model.visual.patch_embed.parameters())
    vision = set(model.model.visual.parameters())
    # Stage 2 as released (ms-swift): the merger (vision -> language projector) learns at the
    # language rate. Stage 0 trains it with the tower.
    merger = set(model.model.visual.merger.parameters()) if config.stage == 2 else set()
    no_decay = _no_weight_decay(model)
    scheduler = set(model.model.language_model.token_scheduler.parameters())
    separate_patch_embedding = config.stage != 1 and config.patch_embedding_learning_rate is not None
    groups: dict[str, list[torch.nn.Parameter]] = {"language": [], "vision": [], "patch_embedding": [], "scheduler": []}
    for parameter in model.parameters():
        if config.stage == 0:
            trainable = parameter in vision
        elif config.stage == 1:
            trainable = parameter in patch_embedding
        else:
            trainable = not (config.freeze_vision and parameter in vision)
        parameter.requires_grad_(trainable)
        if not trainable:
            continue
        if parameter in scheduler:
            groups["scheduler"].append(parameter)
        elif parameter in patch_embedding and separate_patch_embedding:
            groups["patch_embedding"].append(parameter)
        elif parameter in vision and parameter not in merger:
            groups["vision"].append(parameter)
        else:
            groups["language"].append(parameter)
    groups["vision"].extend(extra_vision)
    rates = {
        "language": config.learning_rate,
        "vision": config.learning_rate if config.stage == 1 else (config.vision_learning_rate or config.learning_rate),
        "patch_embedding": config.patch_embedding_learning_rate,
        "scheduler": config.scheduler_learning_rate or config.learning_rate,
    }
    result = []
    for name, params in groups.items():
        for decays in (True, False):
            chosen = [parameter for parameter in params if (id(parameter) not in no_decay) == decays]
            if chosen:
                weight_decay = config.weight_decay if decays else 0.0
                label = name if decays else f"{name} (no weight decay)"
                result.append({"params": chosen, "lr": rates[name], "weight_decay": weight_decay, "name": label})
    return result


def _no_weight_decay(model: torch.nn.Module) -> set[int]:
    """Biases and normalisation weights: no weight decay (transformers' Trainer, which ms-swift uses)."""
    excluded = set()
    for module in model.modules():
        is_norm = isinstance(module, torch.nn.LayerNorm) or "Norm" in type(module).__name__
        for name, parameter in module.named_parameters(recurse=False):
            if is_norm or name == "bias":
                excluded.add(id(parameter))
    return excluded


# ----------------------------------------------------------------------------- data
@dataclass(frozen=True)
class TrainingExample:
    volume: Path
    question: str
    answer: str
    mask: Path | None = None  # label map (phantoms: extra.mask_path), used by the vision warm-up
    lesion_label: int | None = None  # the lesion's value in the label map; None: no lesion
    lesion_diameter_mm: float | None = None  # phantoms: extra.lesion.diameter_mm (the warm-up's diameter target)

    @classmethod
    def from_sample(cls, sample) -> TrainingExample:
        """From a dataset reader's VQASample."""
        mask = sample.extra.get("mask_path")
        lesion = sample.extra.get("lesion") or {}
        diameter = lesion.get("diameter_mm") if isinstance(lesion, dict) else None
        return cls(
            Path(sample.volume), sample.question, sample.answer, Path(mask) if mask else None,
            sample.extra.get("lesion_label"), float(diameter) if diameter is not None else None,
        )  # fmt: skip


class PreparedVolumeCache:
    """Preprocessed model-grid arrays on disk, keyed by file identity and preprocessing settings.

    Preprocessing a CT takes about a second; a run sees each volume many times.
    """

    def __init__(self, folder: Path, preprocess: PreprocessConfig) -> None:
        self.folder = folder
        self.preprocess = preprocess
        self.settings = hashlib.sha256(json.dumps(preprocess.to_dict(), sort_keys=True).encode()).hexdigest()[:12]

    def array(self, path: Path) -> np.ndarray:
        stat = path.stat()
        key = hashlib.sha256(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{self.settings}".encode()).hexdigest()[:24]
        cached = self.folder / f"{key}.npy"
        if cached.exists():
            return np.load(cached)
        array = prepare_volume(read_volume(path), self.preprocess).array
        self.folder.mkdir(parents=True, exist_ok=True)
        temporary = cached.with_suffix(".tmp.npy")
        np.save(temporary, array)
        temporary.replace(cached)  # atomic: several processes may fill the cache
        return array


def load_examples(config: TrainConfig) -> list[TrainingExample]:
    from photonlib.data import load_dataset

    report = load_dataset(config.data.kind, config.data.path, volume_root=config.data.volume_root, on_error=config.data.on_error)
    if report.problems:
        logger.warning(report.summary())
    examples = [TrainingExample.from_sample(sample) for sample in report.samples]
    if config.data.max_samples:
        examples = examples[: config.data.max_samples]
    if not examples:
        raise DatasetError(f"{config.data.path}: no usable training samples")
    return examples


def batch_indices(step: int, micro_step: int, count: int, config: TrainConfig, rank: int, world: int) -> list[int]:
    """Sample indices of one micro-batch: a pure function of the step, for exact resume.

    The stream is a sequence of seeded permutations (one per epoch); each process takes its
    own slice of every global batch.
    """
    global_batch = config.batch_size * world
    start = ((step * config.gradient_accumulation_steps + micro_step) * global_batch) + rank * config.batch_size
    indices = []
    for position in range(start, start + config.batch_size):
        epoch, offset = divmod(position, count)
        permutation = torch.randperm(count, generator=torch.Generator().manual_seed(config.seed * 100003 + epoch))
        indices.append(int(permutation[offset]))
    return indices


#: The release's robustness perturbations of one volume's patch tensor (N patches x voxels),
#: with their probabilities (swift/photon/utils.py, VolumeAugmenter).
PERTURBATIONS = (
    ("shuffle patches", 0.16),
    ("shuffle patches and voxels", 0.16),
    ("keep 20% of patches", 0.16),
    ("keep 10% of voxel positions", 0.16),
    ("uniform noise", 0.16),
    ("zeros", 0.20),
)


def perturb_patches(patches: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One robustness perturbation of a (N, D) patch tensor, drawn as the release draws it."""
    draw = float(torch.rand(1, generator=generator))
    cumulative, kind = 0.0, PERTURBATIONS[-1][0]
    for name, probability in PERTURBATIONS:
        cumulative += probability
        if draw <= cumulative:
            kind = name
            break
    rows, columns = patches.shape
    if kind == "shuffle patches":
        return patches[torch.randperm(rows, generator=generator)]
    if kind == "shuffle patches and voxels":
        return patches[torch.randperm(rows, generator=generator)][:, torch.randperm(columns, generator=generator)]
    if kind == "keep 20% of patches":
        return patches * (torch.rand(rows, 1, generator=generator) < 0.2)
    if kind == "keep 10% of voxel positions":
        return patches * (torch.rand(1, columns, generator=generator) < 0.1)
    if kind == "uniform noise":
        return torch.rand(patches.shape, generator=generator, dtype=patches.dtype)
    return torch.zeros_like(patches)


# ----------------------------------------------------------------------------- losses
def answer_losses(
    logits: torch.Tensor,
    labels: torch.Tensor,
    kept_positions: torch.Tensor | None,
    perturbed: torch.Tensor,
    flipped: torch.Tensor | None = None,
    answer_tokens: torch.Tensor | float | None = None,
):
    """Cross-entropy on clean samples; negative entropy (maximised uncertainty) on perturbed ones;
    ``-log(1 - p(answer token))`` on samples that saw the inverted keep decision (as released).

    The mean over answer tokens: their sum divided by ``answer_tokens`` (default: this batch's
    count). Under several processes the loop passes the global micro-batch's count (divided by W
    where the gradients are averaged, not summed), so that the processes' losses add up to the
    global mean, as transformers' Trainer does with ``average_tokens_across_devices``; each
    process's own mean would weigh a process's tokens more when it has fewer of them.
    """
    if kept_positions is not None:
        labels = gather_positions(labels.unsqueeze(-1), kept_positions, IGNORE_INDEX).squeeze(-1)
    logits, labels = logits[:, :-1].float(), labels[:, 1:]
    answer = labels != IGNORE_INDEX
    per_token_ce = F.cross_entropy(logits.transpose(1, 2), labels.clamp_min(0), reduction="none")
    log_probabilities = torch.log_softmax(logits, dim=-1)
    per_token_entropy = -(log_probabilities.exp() * log_probabilities).sum(dim=-1)
    per_token = torch.where(perturbed.unsqueeze(1), -per_token_entropy, per_token_ce)
    if flipped is not None and bool(flipped.any()):
        answer_probability = log_probabilities.gather(-1, labels.clamp_min(0).unsqueeze(-1)).squeeze(-1).exp()
        per_token = torch.where(flipped.unsqueeze(1), -torch.log(1.0 - answer_probability + 1e-6), per_token)
    count = answer.sum() if answer_tokens is None else answer_tokens
    return (per_token * answer).sum() / torch.as_tensor(count, dtype=per_token.dtype, device=per_token.device).clamp_min(1)


def band_loss(
    keep_probability: torch.Tensor | None,
    config: TrainConfig,
    excluded: torch.Tensor | None = None,
    counted_samples: torch.Tensor | float | None = None,
) -> torch.Tensor | None:
    """The keep-ratio band; ``excluded`` (B,) samples (perturbed, flipped) do not count.

    Per sample (as released), the mean over the counted samples is their sum divided by
    ``counted_samples`` (default: this batch's count; under several processes the global
    micro-batch's, as in :func:`answer_losses`). ``per_sample: false`` takes the band on the mean
    of this process's micro-batch, weighted by its share of the counted samples: under several
    processes not the band on the global batch's mean (the band is not linear in it), so only
    ``per_sample: true`` is the same for every world size.
    """
    if keep_probability is None or config.stage == 1:
        return None
    band = config.band_loss
    if excluded is not None:
        keep_probability = keep_probability[~excluded]
        if keep_probability.shape[0] == 0:
            return None
    samples = keep_probability.shape[0]
    count = torch.as_tensor(samples if counted_samples is None else counted_samples, device=keep_probability.device)
    if band.per_sample:
        ratio = keep_probability.mean(dim=1)
        return band.weight * (F.relu(ratio - band.high) + F.relu(band.low - ratio)).sum() / count.clamp_min(1)
    ratio = keep_probability.mean()
    return band.weight * (F.relu(ratio - band.high) + F.relu(band.low - ratio)) * (samples / count.clamp_min(1))


def grounding_loss(
    scores: torch.Tensor,
    lesion_tokens: Sequence[np.ndarray | None],
    excluded: torch.Tensor,
    weight: float,
    counted_samples: torch.Tensor | float | None = None,
) -> torch.Tensor:
    """``weight`` times the mean over samples of ``-log`` (the share of the instruction's
    attention, a softmax of ITS's raw scores (B, V) over the visual tokens, that falls on the
    lesion's tokens) (``config.GroundingLoss``). ``lesion_tokens[b]``: (V,) bool, or None for a
    volume without a lesion; those and the ``excluded`` samples add nothing but still count in
    the mean (``counted_samples``, as in :func:`band_loss`), so the term weighs the same in any batch."""
    total = scores.new_zeros((), dtype=torch.float32)
    for sample, tokens in enumerate(lesion_tokens):
        if tokens is None or not tokens.any() or bool(excluded[sample]):
            continue
        chosen = torch.from_numpy(tokens).to(scores.device)
        log_share = torch.log_softmax(scores[sample].float(), dim=0)[chosen]
        total = total - torch.logsumexp(log_share, dim=0)
    count = scores.shape[0] - int(excluded.sum()) if counted_samples is None else counted_samples
    return weight * total / torch.as_tensor(count, dtype=total.dtype, device=total.device).clamp_min(1)


def _stacked_compositions(compositions: dict, batch_items, shape: torch.Size) -> torch.Tensor:
    """(B, V, classes) label compositions of a warm-up batch; a volume without a label map is all background."""
    rows = []
    for item in batch_items:
        composition = compositions.get(item.volume)
        if composition is None:
            composition = np.zeros(shape[1:], dtype=np.float32)
            composition[:, 0] = 1.0
        rows.append(composition)
    return torch.from_numpy(np.stack(rows))


def _grounding_targets(config: TrainConfig, examples, processor, model) -> dict[Path, np.ndarray]:
    """Which tokens hold the lesion, for every training volume that has one (the grounding term's targets)."""
    token_grid = model.config.token_grid(processor.preprocess.model_grid)
    targets: dict[Path, np.ndarray] = {}
    for example in examples:
        if example.lesion_label is None or example.mask is None or example.volume in targets:
            continue
        entry = WarmupVolume(example.volume, example.mask, example.lesion_label)
        targets[example.volume] = token_lesion_labels(entry, processor.preprocess, token_grid, config.vision_warmup.lesion_fraction)
    if not targets:
        raise DatasetError(
            "grounding_loss needs label maps: samples with extra.mask_path and extra.lesion_label, as `photon "
            "phantoms make` writes; none of the training volumes has one (set grounding_loss.weight=0)"
        )
    return targets


# ----------------------------------------------------------------------------- checkpoints
def checkpoint_folder(config: TrainConfig, step: int) -> Path:
    return Path(config.output_dir) / "checkpoints" / f"step-{step:07d}"


def latest_checkpoint(config: TrainConfig) -> Path | None:
    folders = sorted((Path(config.output_dir) / "checkpoints").glob("step-*"))
    return folders[-1] if folders else None


def save_checkpoint(accelerator: Accelerator, config: TrainConfig, step: int) -> Path:
    folder = checkpoint_folder(config, step)
    accelerator.save_state(str(folder))
    if accelerator.is_main_process:
        (folder / STATE_FILE).write_text(json.dumps({"step": step, "config": config_to_dict(config)}, indent=2))
    accelerator.wait_for_everyone()
    return folder


# ----------------------------------------------------------------------------- the loop
@dataclass
class TrainResult:
    final_model: Path
    steps: int
    last_loss: float
    mean_keep_ratio: float | None
    samples_per_second: float


def train(config: TrainConfig, resume: str | Path | None = None) -> TrainResult:
    """Run the recipe; ``resume`` is a checkpoint folder or ``"latest"``."""
    accelerator = Accelerator(
        mixed_precision=config.mixed_precision,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        log_with="tensorboard" if config.tensorboard else None,
        project_dir=config.output_dir,
        # max_steps counts optimizer steps whatever the number of processes: the scheduler steps once
        # per step (accelerate's default steps it once per process, for dataloaders that shrink
        # with the number of processes; the loop makes none, so this setting only means that).
        dataloader_config=DataLoaderConfiguration(split_batches=True),
        # Under DDP: some parameters get no gradient in some steps (the ITS threshold MLP before
        # the soft phase, see _WithoutGradient); DDP must look for them.
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )
    _check_world(accelerator)
    # Several processes: each loss is its share of the global one and the gradients are summed
    # (see the module docstring); DeepSpeed averages inside backward, so there each share is W times larger.
    world = accelerator.num_processes
    sum_gradients = world > 1 and accelerator.distributed_type != DistributedType.DEEPSPEED
    share = 1.0 if sum_gradients else float(world)
    set_seed(config.seed)
    examples = load_examples(config)
    model, processor = build_model(config, examples)
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    cache = PreparedVolumeCache(Path(config.data.cache_dir or Path(config.output_dir) / "volume-cache"), processor.preprocess)

    if accelerator.is_main_process:  # fill the cache once, before timing the steps
        for path in tqdm(sorted({example.volume for example in examples}), desc="preparing volumes", disable=not accelerator.is_local_main_process):
            cache.array(path)
    accelerator.wait_for_everyone()

    # Stage 0 steps over volumes (with their token labels), stages 1 and 2 over questions.
    settings = config.vision_warmup
    warmup = None
    items: Sequence = examples
    if config.stage == 0:
        warmup = VisionWarmup(model, settings.anatomy_classes if settings.anatomy_weight else 0, settings.diameter_weight > 0)
        items = warmup_volumes(examples)
        token_grid = model.config.token_grid(processor.preprocess.model_grid)
        labels, compositions = [], []
        for item in tqdm(items, desc="token labels", disable=not accelerator.is_local_main_process):
            labels.append(token_lesion_labels(item, processor.preprocess, token_grid, settings.lesion_fraction))
            if settings.anatomy_weight:
                compositions.append(token_label_composition(item, processor.preprocess, token_grid, settings.anatomy_classes))
        token_labels = dict(zip((item.volume for item in items), labels))
        token_anatomy = dict(zip((item.volume for item in items), compositions))
        lesion_weight = settings.positive_weight or positive_weight(np.stack(labels))
    lesion_tokens = {}
    if config.grounding_loss.weight:
        if not hasattr(model.pruner, "score_gradient"):
            raise ConfigurationError(f"grounding_loss trains ITS's scores; this model's pruner is {model.pruner.name!r}")
        model.pruner.score_gradient = True
        lesion_tokens = _grounding_targets(config, examples, processor, model)
    trained = warmup if warmup is not None else model

    heads = [parameter for name, parameter in warmup.named_parameters() if not name.startswith("tower.")] if warmup else []
    groups = parameter_groups(model, config, heads)
    optimizer = torch.optim.AdamW(groups, betas=(0.9, config.adam_beta2))
    scheduler = get_cosine_schedule_with_warmup(optimizer, math.ceil(config.warmup_ratio * config.max_steps), config.max_steps)
    trained, optimizer, scheduler = accelerator.prepare(trained, optimizer, scheduler)
    if config.tensorboard:
        accelerator.init_trackers("photon", config={"stage": config.stage, "max_steps": config.max_steps})

    start_step = 0
    if resume is not None:
        folder = latest_checkpoint(config) if str(resume) == "latest" else Path(resume)
        if folder is None or not (folder / STATE_FILE).exists():
            raise ConfigurationError(f"no checkpoint to resume from at {folder or Path(config.output_dir) / 'checkpoints'}")
        accelerator.load_state(str(folder))
        start_step = json.loads((folder / STATE_FILE).read_text())["step"]

    trained.train()
    progress = tqdm(total=config.max_steps, initial=start_step, disable=not accelerator.is_local_main_process, desc="training")
    started, samples_seen, last_loss, keep_ratios = time.perf_counter(), 0, float("nan"), []
    schedule = config.pruning
    for step in range(start_step, config.max_steps):
        step_loss = 0.0
        for micro_step in range(config.gradient_accumulation_steps):
            at, length = schedule.position(step, micro_step, config.max_steps, config.gradient_accumulation_steps)
            pruning_mode = schedule.mode_at(at, length) if config.stage == 2 else "none"
            flipping = config.stage == 2 and pruning_mode == "hard" and schedule.flipping_at(at, length)
            indices = batch_indices(step, micro_step, len(items), config, accelerator.process_index, accelerator.num_processes)
            batch_items = [items[i] for i in indices]
            with accelerator.accumulate(trained):
                if warmup is not None:
                    batch = warmup_batch(processor, [cache.array(item.volume) for item in batch_items])
                    prediction = trained(**{k: v.to(accelerator.device) for k, v in batch.items()})
                    targets = torch.from_numpy(np.stack([token_labels[item.volume] for item in batch_items])).to(accelerator.device)
                    loss = warmup_loss(prediction.lesion, targets, lesion_weight)
                    if prediction.anatomy is not None:
                        composition = _stacked_compositions(token_anatomy, batch_items, prediction.anatomy.shape)
                        loss = loss + settings.anatomy_weight * anatomy_loss(prediction.anatomy, composition.to(accelerator.device))
                    if prediction.diameter is not None:
                        diameters = torch.tensor([item.lesion_diameter_mm or float("nan") for item in batch_items])
                        loss = loss + settings.diameter_weight * diameter_loss(prediction.diameter, targets, diameters.to(accelerator.device))
                    # Equal-sized means on every process: the global mean is their mean.
                    loss = loss * (share / world)
                else:
                    first_position = accelerator.process_index * config.batch_size  # in the global micro-batch
                    batch, perturbed, flipped = _collate(processor, cache, batch_items, config, step, micro_step, first_position, flipping)
                    perturbed, flipped = perturbed.to(accelerator.device), flipped.to(accelerator.device)
                    # The answer's positions, so hard pruning trains on what decoding will compute.
                    answer_mask = (batch["labels"] != IGNORE_INDEX).to(accelerator.device)
                    inputs = {k: v.to(accelerator.device) for k, v in batch.items() if k != "labels"}
                    # Before the soft phase ITS only scores (for the keep ratio): without a gradient,
                    # so DDP does not wait for the threshold MLP's (its gradient stays None, as in one process).
                    pruner = _WithoutGradient(model.pruner) if pruning_mode == "none" else None
                    output = trained(
                        **inputs, answer_mask=answer_mask, pruning_mode=pruning_mode, pruner=pruner,
                        frozen_keep=perturbed | flipped, flipped_keep=flipped,
                    )  # fmt: skip
                    labels = batch["labels"].to(accelerator.device)
                    # Means over the global micro-batch (see the module docstring).
                    answer_tokens, band_samples = _global_counts(accelerator, share, answer_mask.sum(), (~(perturbed | flipped)).sum())
                    loss = answer_losses(output.logits, labels, output.kept_positions, perturbed, flipped, answer_tokens)
                    # As released: the keep-ratio band from the soft phase on, on clean samples only.
                    band = None
                    if pruning_mode != "none":
                        band = band_loss(output.keep_probability, config, perturbed | flipped, band_samples)
                    if band is not None:
                        loss = loss + band
                    if lesion_tokens and output.visual_scores is not None:
                        loss = loss + grounding_loss(
                            output.visual_scores, [lesion_tokens.get(item.volume) for item in batch_items],
                            perturbed | flipped, config.grounding_loss.weight, band_samples,
                        )  # fmt: skip
                    if output.keep_probability is not None:
                        keep_ratios.append(float(accelerator.reduce(output.keep_mask.float().mean().detach(), "mean")))
                accelerator.backward(loss)
                if accelerator.sync_gradients and sum_gradients:
                    _sum_over_processes(trained, world)
                if accelerator.sync_gradients and config.max_grad_norm:
                    accelerator.clip_grad_norm_(trained.parameters(), config.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            # The global micro-batch's loss: the sum of the processes' shares.
            step_loss += float(accelerator.reduce(loss.detach(), "sum")) / share / config.gradient_accumulation_steps
            samples_seen += len(indices) * accelerator.num_processes
        last_loss = step_loss
        throughput = samples_seen / max(time.perf_counter() - started, 1e-9)
        keep = keep_ratios[-1] if keep_ratios else float("nan")
        progress.set_postfix(loss=f"{step_loss:.3f}", keep=f"{keep:.2f}", mode=pruning_mode, samples_s=f"{throughput:.2f}")
        progress.update(1)
        if config.tensorboard and (step + 1) % max(config.log_every, 1) == 0:
            accelerator.log({"loss": step_loss, "keep_ratio": keep, "samples_per_second": throughput}, step=step + 1)
        if config.save_every and (step + 1) % config.save_every == 0 and step + 1 < config.max_steps:
            save_checkpoint(accelerator, config, step + 1)
    progress.close()

    save_checkpoint(accelerator, config, config.max_steps)
    final = Path(config.output_dir) / "final"
    if config.stage == 2:  # saved as it will run: pruned, unless this run never pruned
        model.config.pruning_mode = "hard" if config.pruning.enabled else "none"
    # The whole Photon model; FSDP shards are gathered (a collective: every process calls it). Stage 0
    # trains a wrapper around the tower: its Photon model is saved as is, the lesion head left behind.
    state_dict = accelerator.get_state_dict(trained) if warmup is None else None
    if accelerator.is_main_process:
        model.save_pretrained(final, state_dict=state_dict, is_main_process=True, save_function=accelerator.save)
        if warmup is not None:  # kept for diagnostics (scripts/vision_warmup_report.py), not part of the model
            torch.save(warmup.head.state_dict(), Path(config.output_dir) / WARMUP_HEAD_FILE)
        processor.save_pretrained(final)
    accelerator.wait_for_everyone()
    if config.tensorboard:
        accelerator.end_training()
    elapsed = max(time.perf_counter() - started, 1e-9)
    return TrainResult(
        final_model=final,
        steps=config.max_steps,
        last_loss=last_loss,
        mean_keep_ratio=float(np.mean(keep_ratios)) if keep_ratios else None,
        samples_per_second=samples_seen / elapsed,
    )


def _collate(
    processor: PhotonProcessor,
    cache: PreparedVolumeCache,
    examples: Sequence[TrainingExample],
    config: TrainConfig,
    step: int,
    micro_step: int,
    first_position: int = 0,
    flipping: bool = False,
) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """A stage-2 batch, its perturbed samples and its samples with an inverted keep decision.

    Each sample's draws are seeded by its place in the global micro-batch (``first_position``
    + its index), not by the process, so any world size draws the same for the same sample.
    """
    batch = processor([cache.array(e.volume) for e in examples], [e.question for e in examples], answers=[e.answer for e in examples])
    sizes = batch["video_grid_thw"].prod(-1).tolist()
    pieces = list(torch.split(batch["pixel_values"], sizes))
    perturbed, flipped = [], []
    for index, piece in enumerate(pieces):
        generator = torch.Generator().manual_seed(hash_seed(config.seed, step, micro_step, first_position + index))
        hit = config.stage == 2 and float(torch.rand(1, generator=generator)) < config.robustness_probability
        flip = not hit and flipping and float(torch.rand(1, generator=generator)) < config.pruning.flip_probability
        if hit:
            pieces[index] = perturb_patches(piece, generator)
        perturbed.append(hit)
        flipped.append(flip)
    batch["pixel_values"] = torch.cat(pieces)
    return batch, torch.tensor(perturbed), torch.tensor(flipped)


class _WithoutGradient:
    """A pruner that decides as ``pruner`` does, with no gradient to its parameters."""

    def __init__(self, pruner) -> None:
        self.pruner, self.name, self.stage = pruner, pruner.name, pruner.stage

    def select(self, inputs):
        with torch.no_grad():
            return self.pruner.select(inputs)


def _global_counts(accelerator: Accelerator, share: float, *local_counts: torch.Tensor) -> list[torch.Tensor]:
    """Each count summed over the processes, divided by ``share``: what a process divides its
    sums by for its share of the global micro-batch's mean (times ``share``)."""
    if accelerator.num_processes == 1:
        return list(local_counts)
    totals = accelerator.reduce(torch.stack([count.float() for count in local_counts]).to(accelerator.device), "sum")
    return list(totals / share)


def _sum_over_processes(model: torch.nn.Module, world: int) -> None:
    """DDP's averaged gradients, times the number of processes: their sum (exact for W a power of two)."""
    for parameter in model.parameters():
        if parameter.grad is not None:
            parameter.grad.mul_(world)


def _check_world(accelerator: Accelerator) -> None:
    """Refuse processes started as several that each think they are alone (they would all train
    the same batches and overwrite each other's checkpoints)."""
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched > accelerator.num_processes:
        raise PhotonEnvironmentError(
            f"{launched} processes were launched (WORLD_SIZE={launched}) but accelerate found no device to run them "
            f"together and runs each alone; on a machine without GPUs set ACCELERATE_USE_CPU=1 (DDP over gloo): "
            f"ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes {launched} -m photonlib.cli.main train ..."
        )


def hash_seed(*parts: int) -> int:
    """A 63-bit seed from integers (stable across runs and processes)."""
    digest = hashlib.sha256(",".join(str(int(part)) for part in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1
