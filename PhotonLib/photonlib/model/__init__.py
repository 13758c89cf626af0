"""The Photon model: configuration, transformers model classes, processor and token pruners.

    from photonlib.model import PhotonConfig, PhotonForConditionalGeneration, PhotonProcessor

    config = PhotonConfig.from_preset("tiny")
    model = PhotonForConditionalGeneration(config)
"""

from photonlib.model.configuration import PRESET_NAMES, PhotonConfig
from photonlib.model.modeling import PhotonForConditionalGeneration, PhotonGeneration, PhotonModel, PhotonOutput
from photonlib.model.processing import PhotonProcessor, Turn

__all__ = [
    "PRESET_NAMES",
    "PhotonConfig",
    "PhotonForConditionalGeneration",
    "PhotonGeneration",
    "PhotonModel",
    "PhotonOutput",
    "PhotonProcessor",
    "Turn",
]
