"""The Photon model: configuration, transformers model classes, processor and token pruners.

    from photonlib.model import PhotonConfig, PhotonForConditionalGeneration, PhotonProcessor

    config = PhotonConfig.from_preset("tiny")
    model = PhotonForConditionalGeneration(config)

The names below load on first use (PEP 562), so that the light modules of this package
(:mod:`.checkpoint_formats`, :mod:`.tokens`) can be imported by the command line without
PyTorch and transformers. Loading any of them checks the installed transformers
(:mod:`.transformers_adapter`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from photonlib.model.configuration import PRESET_NAMES, PhotonConfig
    from photonlib.model.modeling import PhotonForConditionalGeneration, PhotonGeneration, PhotonModel, PhotonOutput
    from photonlib.model.processing import PhotonProcessor, Turn

_HOME_OF = {
    "PRESET_NAMES": "configuration",
    "PhotonConfig": "configuration",
    "PhotonForConditionalGeneration": "modeling",
    "PhotonGeneration": "modeling",
    "PhotonModel": "modeling",
    "PhotonOutput": "modeling",
    "PhotonProcessor": "processing",
    "Turn": "processing",
}
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


def __getattr__(name: str) -> Any:
    if name not in _HOME_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_HOME_OF[name]}"), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
