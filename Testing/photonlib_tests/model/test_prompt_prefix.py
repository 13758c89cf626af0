"""Follow-up questions reuse the prompt's question-independent prefix and answer exactly as from scratch."""

from __future__ import annotations

import pytest
import torch

from photonlib.model import Turn
from photonlib.model.prompt_prefix import PrefixCache

from support.models import phantom_volume, tiny_model, tiny_processor

QUESTIONS = ["Is there a lesion?", "Which organ is the lesion in?", "How large is the lesion, in millimetres?"]


@pytest.fixture(scope="module")
def model():
    return tiny_model(seed=3)


def _inputs(model, question: str, history=()):
    batch = tiny_processor(model)([phantom_volume(1)], [question], histories=[list(history)])
    embeddings = model.model.encode_volumes(batch["pixel_values"], batch["video_grid_thw"])
    return {
        "input_ids": batch["input_ids"],
        "attention_mask": batch["attention_mask"],
        "video_grid_thw": batch["video_grid_thw"],
        "visual_embeddings": embeddings,
    }


def _answer(model, inputs, **options):
    return model.generate(**inputs, max_new_tokens=8, eos_token_id=-1, output_logits=True, **options)


@pytest.mark.parametrize(("pruner", "mode"), [("its", "hard"), ("its", "soft"), ("none", "hard"), ("random", "hard")])
def test_a_follow_up_answers_token_for_token_as_from_scratch(model, pruner, mode):
    chosen = model.build_pruner(pruner, 0.5 if pruner == "random" else None)
    cache = PrefixCache()
    first = _answer(model, _inputs(model, QUESTIONS[0]), pruner=chosen, pruning_mode=mode, prefix_cache=cache)
    assert not first.prefix_reused and cache.prefix is not None
    for question in QUESTIONS[1:]:
        inputs = _inputs(model, question)
        if pruner == "random":  # the same draw for both runs
            chosen.generator.manual_seed(7)
        reused = _answer(model, inputs, pruner=chosen, pruning_mode=mode, prefix_cache=cache)
        if pruner == "random":
            chosen.generator.manual_seed(7)
        scratch = _answer(model, inputs, pruner=chosen, pruning_mode=mode)
        assert reused.prefix_reused and not scratch.prefix_reused
        assert torch.equal(reused.sequences, scratch.sequences)
        assert torch.equal(reused.keep_mask, scratch.keep_mask)
        torch.testing.assert_close(reused.keep_probability, scratch.keep_probability, rtol=0, atol=1e-5)
        torch.testing.assert_close(reused.logits, scratch.logits, rtol=1e-4, atol=1e-4)
    assert cache.hits == len(QUESTIONS) - 1


def test_its_really_drops_tokens_here_and_the_questions_keep_different_ones(model):
    """Otherwise the equality above would say little about the pruned path."""
    masks = [_answer(model, _inputs(model, question)).keep_mask for question in QUESTIONS]
    assert all(0 < int(mask.sum()) < mask.numel() for mask in masks)
    assert not all(torch.equal(masks[0], mask) for mask in masks[1:])


def test_the_saved_prefix_is_never_written_to(model):
    cache = PrefixCache()
    _answer(model, _inputs(model, QUESTIONS[0]), prefix_cache=cache)
    saved = [part.clone() for layer in cache.prefix.layers for part in layer] + [cache.prefix.hidden.clone()]
    for question in QUESTIONS[1:] * 2:
        assert _answer(model, _inputs(model, question), prefix_cache=cache).prefix_reused
    now = [part for layer in cache.prefix.layers for part in layer] + [cache.prefix.hidden]
    assert all(torch.equal(before, after) for before, after in zip(saved, now))


def test_another_prefix_is_not_reused(model):
    """An earlier turn in the history comes before the volume: the prefix differs, nothing is reused."""
    cache = PrefixCache()
    _answer(model, _inputs(model, QUESTIONS[0]), prefix_cache=cache)
    inputs = _inputs(model, QUESTIONS[1], history=[Turn(QUESTIONS[0], "Yes.")])
    answer = _answer(model, inputs, prefix_cache=cache)
    assert not answer.prefix_reused and cache.hits == 0
    assert torch.equal(answer.sequences, _answer(model, inputs).sequences)


def test_vision_stage_pruners_and_batches_do_not_share_a_prefix(model):
    cache = PrefixCache()
    processor = tiny_processor(model)
    batch = processor([phantom_volume(1)], [QUESTIONS[0]])
    visionzip = model.build_pruner("visionzip", 0.5)
    for _ in range(2):
        answer = model.generate(**batch, max_new_tokens=3, pruner=visionzip, prefix_cache=cache)
        assert not answer.prefix_reused
    assert cache.prefix is None
    two = processor([phantom_volume(1), phantom_volume(2)], QUESTIONS[:2])
    model.generate(**two, max_new_tokens=3, prefix_cache=cache)
    assert cache.prefix is None


def test_the_cache_holds_one_prefix_and_counts_its_bytes(model):
    cache = PrefixCache()
    assert cache.nbytes() == 0
    _answer(model, _inputs(model, QUESTIONS[0]), prefix_cache=cache)
    prefix = cache.prefix
    config = model.config.text_config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    kv_width = config.num_key_value_heads * head_dim
    early = model.config.its_layer + 1
    expected_layers = early * 2 * prefix.length * kv_width * 4
    late = config.num_hidden_layers - early
    assert 0 < prefix.leading < prefix.length and len(prefix.leading_layers) == late
    expected_leading = late * 2 * prefix.leading * kv_width * 4
    hidden = prefix.length * config.hidden_size * 4
    assert cache.nbytes() == expected_layers + expected_leading + hidden + prefix.length * 8
    _answer(model, _inputs(model, QUESTIONS[1], history=[Turn("Hello?", "Hi.")]), prefix_cache=cache)
    assert cache.prefix is not prefix  # replaced, not added
