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

from photonlib.model.decoding import GREEDY, DecodingSettings, next_token, seen_tokens

from support.models import phantom_volume, tiny_model, tiny_processor

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
    seen = seen_tokens(previous, logits.shape[-1])
    if not settings.do_sample:
        assert torch.equal(next_token(logits, seen, settings), expected.argmax(-1))
        return
    for warper in (TemperatureLogitsWarper(settings.temperature), TopKLogitsWarper(settings.top_k), TopPLogitsWarper(settings.top_p)):
        expected = warper(previous, expected)
    allowed = torch.isfinite(expected)
    # Sampling many times only ever gives tokens transformers allows, and all of them when they are likely.
    draws = torch.stack([next_token(logits, seen, settings, torch.Generator().manual_seed(seed)) for seed in range(200)])
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


def test_streamed_text_is_decoded_incrementally_and_equals_the_answer():
    """Streaming decodes a short window per token (not the whole answer again), holds back an
    incomplete UTF-8 character, and ends with exactly the decoded answer."""
    from transformers import AutoTokenizer

    from photonlib.inference.engine import IncrementalText
    from photonlib.model.processing import bundled_qwen_tokenizer_folder

    tokenizer = AutoTokenizer.from_pretrained(bundled_qwen_tokenizer_folder())
    text = "Yes: a 12 mm lésion in segment VII of the liver (肝脏), about 3 cm³ 🙂, no other finding. " * 3
    ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.convert_tokens_to_ids("<|im_end|>")]
    decoded_lengths = []
    original_decode = tokenizer.decode

    def counting_decode(token_ids, **options):
        decoded_lengths.append(len(token_ids))
        return original_decode(token_ids, **options)

    tokenizer.decode = counting_decode
    shown: list[str] = []
    stream = IncrementalText(tokenizer, shown.append)
    for token in ids:
        stream.add(torch.tensor([token]))
    final = original_decode(ids, skip_special_tokens=True)
    assert len(shown) == len(ids) and shown[-1] == final
    assert all(final.startswith(partial) and "\ufffd" not in partial for partial in shown)
    assert sum(decoded_lengths) < 4 * len(ids)  # decoding everything per token would be ~len(ids)^2 / 2
