"""Stage 0, the vision warm-up: teach a from-scratch vision tower to see lesions, from label maps.

Not part of Photon's recipe. Photon starts from Qwen2.5-VL's pretrained vision tower; a model
trained from scratch (the CPU phantom demo) has no such tower, and one bit of supervision per
volume (an existence answer) does not teach a small random tower to find a lesion (held-out
existence stays at chance; see docs/research/demo-model.md). Label maps do. This stage trains
the vision tower (patch embedding, blocks, merger) plus a linear lesion score on every merged
token, against per-token labels cut from each volume's label map on the model grid: a token is
"lesion" when at least ``lesion_fraction`` of one of its model voxels is lesion. The language
model does not move, and the head is thrown away: what stage 2 inherits is a tower whose tokens
carry the lesion.

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

from photonlib.model import PhotonForConditionalGeneration, PhotonProcessor
from photonlib.volume import PreprocessConfig, Volume, prepare_volume, read_volume


@dataclass(frozen=True)
class WarmupVolume:
    volume: Path
    mask: Path | None  # None: a volume without a lesion (every token is background)
    lesion_label: int | None


def warmup_volumes(examples: Sequence) -> list[WarmupVolume]:
    """One entry per distinct volume of the training examples, with its label map.

    Refuses a dataset without label maps: the warm-up has nothing to learn from.
    """
    volumes: dict[Path, WarmupVolume] = {}
    for example in examples:
        if example.volume in volumes:
            continue
        if example.lesion_label is not None and example.mask is None:
            raise ValueError(f"{example.volume}: has a lesion label but no label map (extra.mask_path)")
        volumes[example.volume] = WarmupVolume(example.volume, example.mask, example.lesion_label)
    entries = list(volumes.values())
    if not any(entry.lesion_label is not None for entry in entries):
        raise ValueError(
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


class VisionWarmup(nn.Module):
    """The model's vision tower with a linear lesion score on each merged token."""

    def __init__(self, model: PhotonForConditionalGeneration) -> None:
        super().__init__()
        self.tower = model.model  # encode_volumes lives on PhotonModel; only .visual is trained
        self.head = nn.Linear(model.config.vision_config.out_hidden_size, 1)

    def forward(self, pixel_values: torch.Tensor, video_grid_thw: torch.Tensor) -> torch.Tensor:
        """(batch, tokens) lesion logits."""
        tokens = self.tower.encode_volumes(pixel_values, video_grid_thw)
        return torch.stack([self.head(volume).squeeze(-1) for volume in tokens])


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
