"""Every pruner by name: what ``PhotonConfig.pruner``, ``photon eval --pruner`` and the benchmark
choose from."""

from __future__ import annotations

from photonlib.errors import ConfigurationError
from photonlib.model.pruning.baselines import HiPrunePruner, VisionZipPruner
from photonlib.model.pruning.interface import TokenPruner
from photonlib.model.pruning.its import ThresholdPredictor
from photonlib.model.pruning.pruners import InstructionTokenScheduler, KeepAll, RandomTokens

PRUNER_NAMES = ("its", "none", "random", "visionzip", "hiprune")


def build_pruner(
    name: str, predictor: ThresholdPredictor, temperature: float, budget: float | None, score_precision: str = "float32"
) -> TokenPruner:
    """The pruner called ``name``; fixed-budget pruners need ``budget`` (kept fraction)."""
    if name == "its":
        return InstructionTokenScheduler(predictor, temperature, score_precision)
    if name == "none":
        return KeepAll()
    if name == "random":
        return RandomTokens(budget)  # each fixed-budget pruner checks its budget
    if name in ("visionzip", "hiprune"):
        return VisionZipPruner(budget) if name == "visionzip" else HiPrunePruner(budget)
    raise ConfigurationError(f"unknown pruner {name!r}; known: {', '.join(PRUNER_NAMES)}")
