"""Stage 0, the vision warm-up: teach a from-scratch vision tower to see lesions, from label maps.

Not part of Photon's recipe. Photon starts from Qwen2.5-VL's pretrained vision tower; a model
trained from scratch (the CPU phantom demo) has no such tower, and one bit of supervision per
volume (an existence answer) does not teach a small random tower to find a lesion (held-out
existence stays at chance). Label maps do. This stage trains the vision tower (patch embedding,
blocks, merger) plus a linear lesion score on every merged token, against per-token labels cut from
each volume's label map on the model grid: a token is "lesion" when at least ``lesion_fraction`` of
one of its model voxels is lesion. Where the recipe asks (``anatomy_weight``, ``diameter_weight``),
two more heads learn each token's label composition (which organs it holds: the lesion's organ and
side are then in its tokens) and the lesion's diameter on the lesion's tokens. The language model
does not move, and the head is thrown away: what stage 2 inherits is a tower whose tokens carry the
lesion.

Data: any dataset whose samples carry ``extra["mask_path"]`` and ``extra["lesion_label"]``
(``photon phantoms make`` writes both; ``lesion_label`` None means the volume has no lesion).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from photonlib.data.samples import DatasetError
from photonlib.model import PhotonForConditionalGeneration, PhotonProcessor
from photonlib.volume import PreprocessConfig, Volume, prepare_label_map, prepare_volume, read_volume


@dataclass(frozen=True)
class WarmupVolume:
    volume: Path
    mask: Path | None  # None: a volume without a label map (no lesion; no anatomy targets)
    lesion_label: int | None
    lesion_diameter_mm: float | None = None  # the lesion's longest diameter, where the dataset records it


def warmup_volumes(examples: Sequence) -> list[WarmupVolume]:
    """One entry per distinct volume of the training examples, with its label map.

    Refuses a dataset without label maps: the warm-up has nothing to learn from.
    """
    volumes: dict[Path, WarmupVolume] = {}
    for example in examples:
        if example.volume in volumes:
            continue
        if example.lesion_label is not None and example.mask is None:
            raise DatasetError(f"{example.volume}: has a lesion label but no label map (extra.mask_path)")
        volumes[example.volume] = WarmupVolume(
            example.volume, example.mask, example.lesion_label, getattr(example, "lesion_diameter_mm", None)
        )
    entries = list(volumes.values())
    if not any(entry.lesion_label is not None for entry in entries):
        raise DatasetError(
            "stage 0 (vision warm-up) needs label maps: samples with extra.mask_path and extra.lesion_label, "
            "as `photon phantoms make` writes; none of the training volumes has one"
        )
    return entries


def token_lesion_labels(
    entry: WarmupVolume, preprocess: PreprocessConfig, token_grid: tuple[int, int, int], lesion_fraction: float
) -> np.ndarray:
    """(t * h * w,) bool in the vision tower's token order (raster over t, h, w): which merged
    tokens hold lesion. The label map goes through the model's own preprocessing (same field of
    view, resampling and flip) with intensities untouched, so each model voxel gets its lesion
    fraction; a token is lesion when any of its voxels reaches ``lesion_fraction``."""
    count = int(np.prod(token_grid))
    if entry.lesion_label is None:
        return np.zeros(count, dtype=bool)
    labels = read_volume(entry.mask)
    lesion = (labels.array == entry.lesion_label).astype(np.float32)
    fraction = prepare_volume(Volume(lesion, labels.geometry, "label map"), dataclasses.replace(preprocess, intensity="none")).array
    t, h, w = token_grid
    d, r, c = (n // cells for n, cells in zip(fraction.shape, token_grid))
    pooled = fraction[: t * d, : h * r, : w * c].reshape(t, d, h, r, w, c).max(axis=(1, 3, 5))
    return (pooled >= lesion_fraction).reshape(-1)


def token_label_composition(
    entry: WarmupVolume, preprocess: PreprocessConfig, token_grid: tuple[int, int, int], classes: int
) -> np.ndarray | None:
    """(t * h * w, classes) float32: the share of each label value among the token's model voxels
    (label map resampled nearest-neighbour through the model's preprocessing; values of
    ``classes`` and above count as the last class). None without a label map."""
    if entry.mask is None:
        return None
    labels = prepare_label_map(read_volume(entry.mask), preprocess).clip(0, classes - 1)
    t, h, w = token_grid
    d, r, c = (n // cells for n, cells in zip(labels.shape, token_grid))
    cells = labels[: t * d, : h * r, : w * c].reshape(t, d, h, r, w, c).transpose(0, 2, 4, 1, 3, 5).reshape(t * h * w, -1)
    counts = np.stack([(cells == value).sum(axis=1) for value in range(classes)], axis=1)
    return (counts / cells.shape[1]).astype(np.float32)


#: Lesion diameters are regressed in this unit, so that the targets are of order one.
DIAMETER_SCALE_MM = 50.0


class VisionWarmup(nn.Module):
    """The model's vision tower with linear heads on each merged token: a lesion score, and where
    asked the token's label composition (``anatomy_classes``) and the lesion's diameter."""

    def __init__(self, model: PhotonForConditionalGeneration, anatomy_classes: int = 0, diameter: bool = False) -> None:
        super().__init__()
        self.tower = model.model  # encode_volumes lives on PhotonModel; only .visual is trained
        width = model.config.vision_config.out_hidden_size
        self.head = nn.Linear(width, 1)
        self.anatomy_head = nn.Linear(width, anatomy_classes) if anatomy_classes else None
        self.diameter_head = nn.Linear(width, 1) if diameter else None

    def forward(self, pixel_values: torch.Tensor, video_grid_thw: torch.Tensor) -> WarmupPrediction:
        tokens = torch.stack(self.tower.encode_volumes(pixel_values, video_grid_thw))
        return WarmupPrediction(
            lesion=self.head(tokens).squeeze(-1),
            anatomy=self.anatomy_head(tokens) if self.anatomy_head is not None else None,
            diameter=self.diameter_head(tokens).squeeze(-1) if self.diameter_head is not None else None,
        )


@dataclass
class WarmupPrediction:
    lesion: torch.Tensor  # (B, V) logits
    anatomy: torch.Tensor | None  # (B, V, classes) logits
    diameter: torch.Tensor | None  # (B, V) diameter / DIAMETER_SCALE_MM


def positive_weight(labels: np.ndarray) -> float:
    """Lesion tokens are about 1 in 100: weigh them up so "never a lesion" is not the easy optimum
    (a quarter of the full negative/positive ratio: full balancing floods the maps with false positives)."""
    positives = max(1, int(labels.sum()))
    return float(labels.size - positives) / positives / 4


def warmup_batch(processor: PhotonProcessor, arrays: Sequence[np.ndarray]) -> dict[str, torch.Tensor]:
    """Patches of a batch of model-grid volumes (all of one shape), as the tower takes them."""
    patches, grids = zip(*(processor.volume_patches(array) for array in arrays))
    return {"pixel_values": torch.cat(patches), "video_grid_thw": torch.tensor(grids)}


def warmup_loss(logits: torch.Tensor, labels: torch.Tensor, weight: float) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, labels.float(), pos_weight=torch.tensor(weight, device=logits.device))


def anatomy_loss(logits: torch.Tensor, composition: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each token's predicted label distribution against its composition, mean over tokens."""
    return -(composition * torch.log_softmax(logits.float(), dim=-1)).sum(dim=-1).mean()


def diameter_loss(predicted: torch.Tensor, lesion_tokens: torch.Tensor, diameters_mm: torch.Tensor) -> torch.Tensor:
    """Squared error of the diameter (in DIAMETER_SCALE_MM) on the tokens holding a lesion, mean over them."""
    target = (diameters_mm / DIAMETER_SCALE_MM).view(-1, 1).expand_as(predicted)
    chosen = lesion_tokens & torch.isfinite(target)
    if not bool(chosen.any()):
        return predicted.sum() * 0.0
    return F.mse_loss(predicted[chosen].float(), target[chosen].float())
