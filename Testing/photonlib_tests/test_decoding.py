"""Decoding follows the checkpoint's generation config, and applies it as transformers' generate does."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import GenerationConfig
from transformers.generation.logits_process import (
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from photonlib.model.decoding import GREEDY, DecodingSettings, next_token

from model_factory import phantom_volume, tiny_model, tiny_processor

#: Qwen2.5-VL-3B-Instruct's generation_config.json, which the released Photon decodes with.
QWEN_INSTRUCT_GENERATION = {
    "bos_token_id": 151643, "pad_token_id": 151643, "do_sample": True, "eos_token_id": [151645, 151643],
    "repetition_penalty": 1.05, "temperature": 0.1, "top_p": 0.001, "top_k": 1,
}  # fmt: skip


def test_settings_come_from_the_generation_config(tmp_path):
    GenerationConfig(**QWEN_INSTRUCT_GENERATION).save_pretrained(tmp_path)
    settings = DecodingSettings.from_folder(tmp_path)
    assert settings == DecodingSettings(do_sample=True, temperature=0.1, top_k=1, top_p=0.001, repetition_penalty=1.05)
    assert DecodingSettings.from_folder(tmp_path / "elsewhere") == GREEDY


def test_the_demo_model_decodes_greedily_as_it_always_did():
    from photonlib.inference.engine import EMBEDDED_MODEL_DIR

    assert DecodingSettings.from_folder(EMBEDDED_MODEL_DIR) == GREEDY


@pytest.mark.parametrize(
    "settings",
    [
        DecodingSettings(repetition_penalty=1.3),
        DecodingSettings(do_sample=True, temperature=0.7, top_k=5, top_p=0.8, repetition_penalty=1.05),
        DecodingSettings(do_sample=True, temperature=0.1, top_k=1, top_p=0.001, repetition_penalty=1.05),
    ],
)
def test_next_token_distribution_equals_transformers_processors(settings):
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 50, generator=generator) * 3
    previous = torch.randint(0, 50, (3, 12), generator=generator)
    expected = RepetitionPenaltyLogitsProcessor(settings.repetition_penalty)(previous, logits.clone())
    if not settings.do_sample:
        assert torch.equal(next_token(logits, previous, settings), expected.argmax(-1))
        return
    for warper in (TemperatureLogitsWarper(settings.temperature), TopKLogitsWarper(settings.top_k), TopPLogitsWarper(settings.top_p)):
        expected = warper(previous, expected)
    allowed = torch.isfinite(expected)
    # Sampling many times only ever gives tokens transformers allows, and all of them when they are likely.
    draws = torch.stack([next_token(logits, previous, settings, torch.Generator().manual_seed(seed)) for seed in range(200)])
    assert bool(allowed.gather(1, draws.T).all())
    if settings.top_k == 1:
        assert torch.equal(draws[0], expected.argmax(-1))


def test_repetition_penalty_changes_what_the_model_repeats():
    """The tiny random model repeats one token; a strong penalty makes it say something else."""
    model = tiny_model(seed=0)
    batch = tiny_processor(model)([phantom_volume()], ["Is there a lesion?"])
    greedy = model.generate(**batch, max_new_tokens=6, decoding=GREEDY, eos_token_id=-1).sequences[0]
    penalised = model.generate(**batch, max_new_tokens=6, decoding=DecodingSettings(repetition_penalty=1e4), eos_token_id=-1).sequences[0]
    assert len(set(greedy.tolist())) < len(set(penalised.tolist()))


def test_generate_uses_the_models_generation_config(tmp_path):
    model = tiny_model(seed=0)
    batch = tiny_processor(model)([phantom_volume()], ["Is there a lesion?"])
    model.generation_config = GenerationConfig(repetition_penalty=1e4, eos_token_id=-1)
    assert torch.equal(
        model.generate(**batch, max_new_tokens=6).sequences,
        model.generate(**batch, max_new_tokens=6, decoding=DecodingSettings(repetition_penalty=1e4), eos_token_id=-1).sequences,
    )
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "generation_config.json").read_text())["repetition_penalty"] == 1e4


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="temperature"):
        DecodingSettings(temperature=0)
    with pytest.raises(ValueError, match="top_p"):
        DecodingSettings(top_p=0)
