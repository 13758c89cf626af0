"""Decoding settings and the choice of the next token, as transformers' ``generate`` makes it.

A checkpoint's ``generation_config.json`` says how its authors decode: the released Photon (on
Qwen2.5-VL-3B-Instruct's settings) samples with a repetition penalty, a low temperature and
top-k/top-p; a folder without sampling settings (the demo model) decodes greedily.
:class:`DecodingSettings` carries those fields; :func:`next_token` applies them in transformers'
order: repetition penalty over every id of the sequence so far (prompt included), then
temperature, top-k, top-p, then sampling (or argmax when ``do_sample`` is off).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from photonlib.errors import ConfigurationError

GENERATION_CONFIG_FILE = "generation_config.json"


@dataclass(frozen=True)
class DecodingSettings:
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0  # 0: off
    top_p: float = 1.0
    repetition_penalty: float = 1.0  # 1: off

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ConfigurationError(f"temperature must be positive, got {self.temperature}")
        if self.top_k < 0 or not 0 < self.top_p <= 1:
            raise ConfigurationError(f"top_k must be >= 0 and top_p in (0, 1], got {self.top_k} and {self.top_p}")
        if not self.repetition_penalty > 0:
            raise ConfigurationError(f"repetition_penalty must be positive, got {self.repetition_penalty}")

    @classmethod
    def from_generation_config(cls, generation_config) -> DecodingSettings:
        """From a transformers ``GenerationConfig`` (unset fields keep transformers' defaults)."""

        def value(name: str, default):
            found = getattr(generation_config, name, None)
            return default if found is None else found

        return cls(
            do_sample=bool(value("do_sample", False)),
            temperature=float(value("temperature", 1.0)),
            top_k=int(value("top_k", 0)),
            top_p=float(value("top_p", 1.0)),
            repetition_penalty=float(value("repetition_penalty", 1.0)),
        )

    @classmethod
    def from_folder(cls, folder: str | Path) -> DecodingSettings:
        """The settings of a model folder's ``generation_config.json``; greedy when it has none."""
        if not (Path(folder) / GENERATION_CONFIG_FILE).exists():
            return cls()
        from transformers import GenerationConfig

        return cls.from_generation_config(GenerationConfig.from_pretrained(folder))


GREEDY = DecodingSettings()


def seen_tokens(ids: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """(B, vocab) True for every id that occurs in ``ids`` (B, N): what the repetition penalty looks at."""
    return torch.zeros((ids.shape[0], vocab_size), dtype=torch.bool, device=ids.device).scatter_(1, ids, True)


def next_token(
    logits: torch.Tensor, seen: torch.Tensor | None, settings: DecodingSettings, generator: torch.Generator | None = None
) -> torch.Tensor:
    """(B,) next tokens from (B, vocab) logits; ``seen`` (B, vocab) marks the ids of the sequence so
    far (:func:`seen_tokens`, updated per token), needed only with a repetition penalty."""
    scores = logits.float()
    if settings.repetition_penalty != 1.0:
        if seen is None:
            raise ValueError("a repetition penalty needs the ids seen so far")
        penalized = torch.where(scores < 0, scores * settings.repetition_penalty, scores / settings.repetition_penalty)
        scores = torch.where(seen, penalized, scores)
    if not settings.do_sample:
        return scores.argmax(dim=-1)
    scores = scores / settings.temperature
    if settings.top_k:
        kth = torch.topk(scores, min(settings.top_k, scores.shape[-1]), dim=-1).values[..., -1:]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if settings.top_p < 1.0:
        sorted_scores, order = scores.sort(dim=-1, descending=False)
        cumulative = sorted_scores.softmax(dim=-1).cumsum(dim=-1)
        outside = cumulative <= 1 - settings.top_p
        outside[..., -1:] = False  # always keep the most likely token
        scores = scores.masked_fill(outside.scatter(1, order, outside), float("-inf"))
    probabilities = scores.softmax(dim=-1)
    return torch.multinomial(probabilities, 1, generator=generator).squeeze(-1)
