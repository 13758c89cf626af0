"""Tiny, seeded Photon models and inputs shared by the model tests (built here, never downloaded)."""

from __future__ import annotations

import numpy as np
import torch

from photonlib.model import PhotonConfig, PhotonForConditionalGeneration, PhotonProcessor
from photonlib.volume import PreprocessConfig

# 28 x 56 x 56 voxels -> 2 x 4 x 4 patches -> 2 x 2 x 2 = 8 tokens: too few for pruning tests.
# 56 x 112 x 112 -> 4 x 8 x 8 patches -> 4 x 4 x 4 = 64 tokens.
TEST_GRID = PreprocessConfig(model_grid=(56, 112, 112))


def tiny_model(seed: int = 0, threshold_bias: float | None = 0.0, **overrides) -> PhotonForConditionalGeneration:
    """A tiny random Photon; ``threshold_bias=0`` puts theta mid-range so ITS drops a real share."""
    torch.manual_seed(seed)
    overrides.setdefault("attn_implementation", "sdpa")
    model = PhotonForConditionalGeneration(PhotonConfig.from_preset("tiny", **overrides))
    if threshold_bias is not None:
        with torch.no_grad():
            model.model.language_model.token_scheduler.mlp[2].bias.fill_(threshold_bias)
    return model.eval()


def tiny_processor(model: PhotonForConditionalGeneration) -> PhotonProcessor:
    return PhotonProcessor.for_config(model.config, TEST_GRID)


def phantom_volume(seed: int = 0) -> np.ndarray:
    """A (56, 112, 112) volume in [0, 1] with a bright blob, so tokens differ from each other."""
    rng = np.random.default_rng(seed)
    d, h, w = np.meshgrid(*(np.linspace(-1, 1, n) for n in TEST_GRID.model_grid), indexing="ij")
    centre = rng.uniform(-0.5, 0.5, size=3)
    blob = np.exp(-((d - centre[0]) ** 2 + (h - centre[1]) ** 2 + (w - centre[2]) ** 2) / 0.05)
    return (0.3 * rng.random(TEST_GRID.model_grid) + 0.7 * blob).astype(np.float32)


#: What the tests' servers and engines call the tiny random model (never a shipped name).
RANDOM_MODEL_NAME = "photon-tiny-random"


def random_tiny_model(seed: int = 0) -> tuple[PhotonForConditionalGeneration, PhotonProcessor]:
    """A deterministic tiny random Photon with the CPU-sized ``small`` grid: fast enough for the
    serving and client tests, whose answers do not matter. The global RNG is left as it was."""
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = PhotonForConditionalGeneration(PhotonConfig.from_preset("tiny", attn_implementation="sdpa"))
    finally:
        torch.random.set_rng_state(generator_state)
    return model.eval(), PhotonProcessor.for_config(model.config, PreprocessConfig.preset("small"))
