"""Training recipes (stage 1 alignment, stage 2 ITS + SGP) run through accelerate."""

from photonlib.training.config import TrainConfig, load_train_config
from photonlib.training.loop import TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "load_train_config", "train"]
