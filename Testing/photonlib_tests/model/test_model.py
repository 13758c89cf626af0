"""The Photon model: configuration, visual tokens, ITS pruning, pruned decoding, SGP, persistence."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from photonlib.model import PhotonConfig, PhotonForConditionalGeneration, PhotonProcessor
from photonlib.model.positions import build_position_ids
from photonlib.model.tokens import instruction_mask_from_ids
from photonlib.volume import PreprocessConfig

from support.models import TEST_GRID, phantom_volume, tiny_model, tiny_processor

QUESTION_A = "Is there a lesion in the liver?"
QUESTION_B = "Describe the kidneys and any cyst you can see in them."


# ----------------------------------------------------------------------------- configuration
def test_presets():
    tiny = PhotonConfig.from_preset("tiny")
    assert tiny.its_layer == 0  # int(4 / 4) - 1
    real = PhotonConfig.from_preset("qwen2.5-vl-3b")
    text, vision = real.text_config, real.vision_config
    assert (text.hidden_size, text.num_hidden_layers, text.num_attention_heads, text.num_key_value_heads) == (2048, 36, 16, 2)
    assert text.intermediate_size == 11008 and real.tie_word_embeddings
    assert text.rope_parameters["rope_theta"] == 1e6 and text.rope_parameters["mrope_section"] == [16, 24, 24]
    assert (vision.depth, vision.hidden_size, vision.num_heads, vision.intermediate_size) == (32, 1280, 16, 3420)
    assert (vision.in_channels, vision.temporal_patch_size, vision.patch_size, vision.out_hidden_size) == (1, 14, 14, 2048)
    assert list(vision.fullatt_block_indexes) == [7, 15, 23, 31] and vision.window_size == 112
    assert real.its_layer == 8  # int(36 / 4) - 1
    assert (real.its_temperature, real.its_threshold_scale) == (0.2, 0.9)
    # 140 x 280 x 280 -> 10 x 20 x 20 patches -> 1,000 tokens after the 2 x 2 merge.
    assert real.patch_grid((140, 280, 280)) == (10, 20, 20)
    assert real.token_grid((140, 280, 280)) == (10, 10, 10)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"pruning_mode": "sometimes"}, "pruning_mode"),
        ({"its_layer": 3}, "its_layer"),
        ({"pruning_budget": 1.5}, "pruning_budget"),
        ({"surrogate_gradient": "magic"}, "surrogate_gradient"),
    ],
)
def test_bad_configuration(overrides, message):
    with pytest.raises(ValueError, match=message):
        PhotonConfig.from_preset("tiny", **overrides)


def test_grid_that_does_not_tile_is_refused():
    with pytest.raises(ValueError, match="does not tile"):
        PhotonConfig.from_preset("tiny").patch_grid((30, 56, 56))
    with pytest.raises(ValueError, match="does not tile"):
        PhotonProcessor.for_config(PhotonConfig.from_preset("tiny"), PreprocessConfig(model_grid=(28, 42, 56)))


# ----------------------------------------------------------------------------- processor
def test_patches_are_in_the_vision_towers_order(processor):
    volume = np.random.default_rng(0).random(TEST_GRID.model_grid, dtype=np.float32)
    patches, grid = processor.volume_patches(volume)
    assert grid == (4, 8, 8) and patches.shape == (256, 14**3)
    # Patch n of merge group g is (t, 2*hb + mh, 2*wb + mw) with n = ((t*4 + hb)*4 + wb)*4 + mh*2 + mw.
    for t, hb, wb, mh, mw in [(0, 0, 0, 0, 0), (1, 2, 3, 1, 0), (3, 3, 3, 1, 1)]:
        n = ((t * 4 + hb) * 4 + wb) * 4 + mh * 2 + mw
        h, w = 2 * hb + mh, 2 * wb + mw
        block = volume[14 * t : 14 * t + 14, 14 * h : 14 * h + 14, 14 * w : 14 * w + 14]
        np.testing.assert_array_equal(patches[n].numpy(), block.reshape(-1))


def test_prompt_layout_and_labels(processor):
    volume = phantom_volume()
    batch = processor([volume, volume], [QUESTION_A, "Why?"], answers=["Yes.", "Because."])
    ids, labels, mask = batch["input_ids"], batch["labels"], batch["attention_mask"]
    video = processor.video_token_id
    assert ((ids == video).sum(dim=1) == 64).all()  # 4 x 4 x 4 tokens per volume
    assert mask[1, 0] == 0 and mask[:, -1].all()  # left padding
    # Labels are exactly the answer and its <|im_end|>.
    answer = processor.tokenizer.decode(labels[0][labels[0] >= 0])
    assert answer == "Yes.<|im_end|>"
    # The instruction ITS reads is the question.
    instruction = instruction_mask_from_ids(ids, processor.tokenizer.convert_tokens_to_ids("<|vision_end|>"), processor.im_end_id)
    assert processor.tokenizer.decode(ids[0][instruction[0]]) == QUESTION_A


def test_history_goes_before_the_turn_with_the_volume(processor):
    from photonlib.model import Turn

    text = processor.prompt_text("And the spleen?", [Turn("Is the liver normal?", "Yes.")])
    assert text.index("Is the liver normal?") < text.index("<|vision_start|>") < text.index("And the spleen?")


def test_empty_question_is_refused(processor):
    with pytest.raises(ValueError, match="empty"):
        processor([phantom_volume()], ["   "])


# ----------------------------------------------------------------------------- visual tokens
def test_visual_token_count_and_positions(model, processor):
    batch = processor([phantom_volume()], [QUESTION_A])
    embeddings = model.model.encode_volumes(batch["pixel_values"], batch["video_grid_thw"])
    assert embeddings[0].shape == (64, model.config.text_config.hidden_size)

    grids = model.token_grids(batch["video_grid_thw"])
    positions = build_position_ids(batch["input_ids"], batch["attention_mask"], grids, model.config.video_token_id)
    visual = (batch["input_ids"][0] == model.config.video_token_id).nonzero().squeeze(1)
    start = int(visual[0])  # no padding in a batch of one: positions start at 0
    t, h, w = torch.meshgrid(torch.arange(4), torch.arange(4), torch.arange(4), indexing="ij")
    expected = torch.stack([t, h, w]).reshape(3, -1) + start
    assert torch.equal(positions[:, 0, visual], expected)
    # Text before counts up on all rows; text after continues one past the largest, start + max(t, h, w).
    assert torch.equal(positions[:, 0, :start], torch.arange(start).expand(3, -1))
    assert int(positions[0, 0, visual[-1] + 1]) == start + 4


def test_release_temporal_positions_follow_fps_and_tokens_per_second(model, processor):
    """The release feeds the volume as a video at FPS=1: token t sits at t * 14 / 1 * 2 = 28 t."""
    assert model.config.volume_fps == 1.0 and model.config.vision_config.tokens_per_second == 2
    assert model.config.temporal_position_scale == 28
    batch = processor([phantom_volume()], [QUESTION_A])
    grids = model.token_grids(batch["video_grid_thw"])
    positions = build_position_ids(
        batch["input_ids"], batch["attention_mask"], grids, model.config.video_token_id, model.config.temporal_position_scale
    )
    visual = (batch["input_ids"][0] == model.config.video_token_id).nonzero().squeeze(1)
    start = int(visual[0])
    assert sorted(set(positions[0, 0, visual].tolist())) == [start, start + 28, start + 56, start + 84]
    assert sorted(set(positions[1, 0, visual].tolist())) == [start + n for n in range(4)]
    assert int(positions[0, 0, visual[-1] + 1]) == start + 85  # 10 x 10 x 10 tokens: start + 253


def test_models_saved_without_volume_fps_keep_one_step_positions(tmp_path):
    """config.json files written before the field existed (the demo model) load as they were trained."""
    import json

    legacy = tiny_model(seed=0, volume_fps=None)
    legacy.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    saved.pop("volume_fps", None)
    (tmp_path / "config.json").write_text(json.dumps(saved))
    loaded = PhotonForConditionalGeneration.from_pretrained(tmp_path)
    assert loaded.config.volume_fps is None and loaded.config.temporal_position_scale == 1.0


# ----------------------------------------------------------------------------- ITS
def test_its_keeps_a_variable_question_dependent_subset(model, processor):
    volume = phantom_volume()
    with torch.no_grad():
        first = model(**processor([volume], [QUESTION_A]))
        second = model(**processor([volume], [QUESTION_B]))
    kept_first, kept_second = first.keep_mask[0], second.keep_mask[0]
    assert 0 < int(kept_first.sum()) < 64 and 0 < int(kept_second.sum()) < 64
    assert not torch.equal(kept_first, kept_second), "only the question changed: the kept tokens must change"
    # The pruned sequence is shorter by exactly the dropped visual tokens.
    total = processor([volume], [QUESTION_A])["input_ids"].shape[1]
    assert first.logits.shape[1] == total - (64 - int(kept_first.sum()))


def test_pruning_modes():
    volume = phantom_volume()
    outputs = {}
    for mode in ("none", "soft", "hard"):
        model = tiny_model(seed=0, pruning_mode=mode)
        with torch.no_grad():
            outputs[mode] = model(**tiny_processor(model)([volume], [QUESTION_A]))
    full_length = outputs["none"].logits.shape[1]
    assert outputs["soft"].logits.shape[1] == full_length
    assert outputs["hard"].logits.shape[1] < full_length
    # Keep probabilities are computed (and identical) in every mode: the heatmap always exists.
    for mode in ("soft", "hard"):
        torch.testing.assert_close(outputs[mode].keep_probability, outputs["none"].keep_probability)
    assert not torch.allclose(outputs["soft"].logits, outputs["none"].logits)


def masked_reference_logits(model, batch, sequence, keep_mask):
    """Last-position logits of ``sequence`` computed from scratch at full length, no cache, no gather.

    Dropping is expressed as an attention mask instead: after layer k nobody sees a dropped
    visual token; in layers 0..k the prompt saw every token (ITS had not decided yet) but tokens
    generated after the prompt do not (the dropped tokens left the cache of every layer).
    """
    text_model = model.model.language_model
    prompt_length = batch["input_ids"].shape[1]
    ids = sequence
    mask = torch.ones_like(ids)
    with torch.no_grad():
        embeddings = text_model.embed_tokens(ids)
        visual = ids == model.config.video_token_id
        features = torch.cat(model.model.encode_volumes(batch["pixel_values"], batch["video_grid_thw"]))
        embeddings = embeddings.masked_scatter(visual.unsqueeze(-1), features)
        grids = model.token_grids(batch["video_grid_thw"])
        positions = build_position_ids(ids, mask, grids, model.config.video_token_id, model.config.temporal_position_scale)
        cos_sin = text_model.rotary_emb(embeddings, positions)

        dropped = torch.zeros_like(visual)
        dropped[visual] = ~keep_mask.reshape(-1)
        length = ids.shape[1]
        causal = torch.ones(length, length, dtype=torch.bool).tril()
        queries_after_prompt = (torch.arange(length) >= prompt_length).unsqueeze(1)
        hidden = embeddings
        for index, layer in enumerate(text_model.layers):
            hidden_from = dropped[0].unsqueeze(0)  # (1, kv)
            if index <= text_model.its_layer:
                allowed = causal & ~(queries_after_prompt & hidden_from)
            else:
                allowed = causal & ~hidden_from
            additive = torch.zeros(length, length).masked_fill(~allowed, float("-inf"))[None, None]
            hidden = layer(hidden, attention_mask=additive, position_embeddings=cos_sin)
        hidden = text_model.norm(hidden)
        return model.lm_head(hidden[:, -1])


def reference_decode(model, batch, steps):
    """Greedy decoding where every step recomputes the whole sequence from scratch (masked, full length)."""
    with torch.no_grad():
        keep_mask = model(**batch).keep_mask
    sequence = batch["input_ids"]
    logits_per_step = []
    for _ in range(steps):
        logits = masked_reference_logits(model, batch, sequence, keep_mask)
        logits_per_step.append(logits)
        sequence = torch.cat([sequence, logits.argmax(dim=-1, keepdim=True)], dim=1)
    return torch.stack(logits_per_step, dim=1)


def test_pruned_generate_equals_reference_decode(model, processor):
    batch = processor([phantom_volume()], [QUESTION_A])
    generation = model.generate(**batch, max_new_tokens=6, output_logits=True, eos_token_id=-1)
    reference = reference_decode(model, batch, 6)
    assert generation.keep_mask.sum() < 64, "the test needs pruning to happen"
    torch.testing.assert_close(generation.logits, reference, rtol=1e-4, atol=1e-4)
    assert torch.equal(generation.sequences, reference.argmax(dim=-1))


def test_decoding_past_the_preallocated_room_changes_nothing(model, processor, monkeypatch):
    """A full KV buffer doubles and the rotary cos/sin come in chunks: with a chunk of 3 tokens,
    10 tokens of a padded batch cross both boundaries several times."""
    from photonlib.model import modeling

    batch = processor([phantom_volume(1), phantom_volume(2)], [QUESTION_A, QUESTION_B])
    default = model.generate(**batch, max_new_tokens=10, output_logits=True, eos_token_id=-1)
    monkeypatch.setattr(modeling, "DECODE_CHUNK", 3)
    chunked = model.generate(**batch, max_new_tokens=10, output_logits=True, eos_token_id=-1)
    assert torch.equal(chunked.sequences, default.sequences)
    torch.testing.assert_close(chunked.logits, default.logits, rtol=0, atol=1e-5)
    reference = reference_decode(model, processor([phantom_volume(1)], [QUESTION_A]), 10)
    torch.testing.assert_close(chunked.logits[0], reference[0], rtol=1e-4, atol=1e-4)


def teacher_forced_answer_logits(model, batch, answer: torch.Tensor, answer_sees_dropped: bool) -> torch.Tensor:
    """Logits predicting each answer token from one forward over prompt + answer (as training runs)."""
    prompt_length = batch["input_ids"].shape[1]
    input_ids = torch.cat([batch["input_ids"], answer], dim=1)
    answer_mask = torch.zeros_like(input_ids, dtype=torch.bool)
    answer_mask[:, prompt_length:] = True
    model.config.its_answer_sees_dropped = answer_sees_dropped
    try:
        with torch.no_grad():
            output = model(
                input_ids, torch.ones_like(input_ids), pixel_values=batch["pixel_values"],
                video_grid_thw=batch["video_grid_thw"], answer_mask=answer_mask,
            )  # fmt: skip
    finally:
        model.config.its_answer_sees_dropped = False
    answer_slots = output.logits.shape[1] - answer.shape[1]  # the kept sequence ends with the answer
    return output.logits[:, answer_slots - 1 : -1]


def test_teacher_forcing_under_hard_pruning_computes_what_decoding_does(model, processor):
    """Decoding's cache has lost the dropped tokens in every layer, so a training forward must hide
    them from the answer in layers 0..k too; the released way (answer sees them) computes otherwise."""
    batch = processor([phantom_volume()], [QUESTION_A])
    generation = model.generate(**batch, max_new_tokens=6, output_logits=True, eos_token_id=-1)
    assert generation.keep_mask.sum() < 64, "the test needs pruning to happen"
    forced = teacher_forced_answer_logits(model, batch, generation.sequences, answer_sees_dropped=False)
    torch.testing.assert_close(forced, generation.logits, rtol=1e-4, atol=1e-4)
    released = teacher_forced_answer_logits(model, batch, generation.sequences, answer_sees_dropped=True)
    torch.testing.assert_close(released[:, 0], generation.logits[:, 0], rtol=1e-4, atol=1e-4)  # the prompt's own
    assert (released[:, 1:] - generation.logits[:, 1:]).abs().max() > 1e-3


def test_batch_with_different_kept_counts_equals_each_sample_alone(model, processor):
    volumes = [phantom_volume(1), phantom_volume(2)]
    questions = [QUESTION_A, QUESTION_B]
    batched = model.generate(**processor(volumes, questions), max_new_tokens=5, output_logits=True, eos_token_id=-1)
    kept = batched.keep_mask.sum(dim=1)
    assert kept[0] != kept[1], "the test needs different kept counts in one batch"
    for index in range(2):
        alone = model.generate(**processor([volumes[index]], [questions[index]]), max_new_tokens=5, output_logits=True, eos_token_id=-1)
        assert torch.equal(batched.keep_mask[index], alone.keep_mask[0])
        torch.testing.assert_close(batched.logits[index], alone.logits[0], rtol=1e-4, atol=1e-4)
        assert torch.equal(batched.sequences[index], alone.sequences[0])


def test_cache_holds_only_kept_tokens(model, processor):
    batch = processor([phantom_volume()], [QUESTION_A])
    with torch.no_grad():
        output = model(**batch, use_cache=True)
    kept_visual = int(output.keep_mask.sum())
    expected = batch["input_ids"].shape[1] - 64 + kept_visual
    for layer in output.cache.layers:
        assert layer.keys.shape[2] == expected and layer.values.shape[2] == expected


def test_heatmap_grid_is_reported_per_sample(model, processor):
    generation = model.generate(**processor([phantom_volume()], [QUESTION_A]), max_new_tokens=1)
    probability, keep = generation.token_maps(0)
    assert probability.shape == keep.shape == (4, 4, 4)
    assert torch.equal(keep, probability > 0.5)


def test_cancel_and_streaming(model, processor):
    seen = []
    generation = model.generate(
        **processor([phantom_volume()], [QUESTION_A]), max_new_tokens=20, eos_token_id=-1,
        on_token=seen.append, should_stop=lambda: len(seen) >= 3,
    )  # fmt: skip
    assert generation.stopped and generation.sequences.shape[1] == 3 and len(seen) == 3


def test_precomputed_visual_embeddings_give_the_same_answer(model, processor):
    batch = processor([phantom_volume()], [QUESTION_A])
    embeddings = model.model.encode_volumes(batch["pixel_values"], batch["video_grid_thw"])
    direct = model.generate(**batch, max_new_tokens=4, output_logits=True, eos_token_id=-1)
    cached = model.generate(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], video_grid_thw=batch["video_grid_thw"],
        visual_embeddings=embeddings, max_new_tokens=4, output_logits=True, eos_token_id=-1,
    )  # fmt: skip
    torch.testing.assert_close(direct.logits, cached.logits)
    assert cached.timings["vision"] == 0.0


# ----------------------------------------------------------------------------- training through SGP
@pytest.mark.parametrize("surrogate", ["sgp", "straight_through"])
def test_task_loss_alone_trains_the_threshold_mlp(surrogate):
    model = tiny_model(seed=0, surrogate_gradient=surrogate).train()
    processor = tiny_processor(model)
    batch = processor([phantom_volume(1), phantom_volume(2)], [QUESTION_A, QUESTION_B], answers=["Yes.", "Both normal."])
    output = model(**batch)
    assert output.logits.shape[1] < batch["input_ids"].shape[1], "hard pruning must drop tokens while training"
    output.loss.backward()
    predictor = model.model.language_model.token_scheduler
    for parameter in predictor.parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0
    assert model.lm_head.weight.grad.abs().sum() > 0


def test_band_loss_inputs_carry_gradient():
    model = tiny_model(seed=0).train()
    batch = tiny_processor(model)([phantom_volume()], [QUESTION_A], answers=["Yes."])
    keep_ratio = model(**batch).keep_probability.mean()
    band = torch.relu(keep_ratio - 0.8) + torch.relu(0.3 - keep_ratio) + (keep_ratio - 0.5) ** 2
    band.backward()
    assert model.model.language_model.token_scheduler.mlp[2].bias.grad.abs() > 0


def test_sgp_scale_sums_the_magnitude_of_each_dimension_as_released():
    """scale = clip(sum_d |x_d g_d| / mean, 0.5, 2): two tokens with the same <x, g> but different
    sum |x_d g_d| get different gradients (with |<x, g>| they would get the same)."""
    from photonlib.model.pruning.sgp import SurrogateTokenGather

    hidden = torch.tensor([[[1.0, 1.0], [3.0, -2.0], [1.0, 0.0], [0.5, 0.5]]], requires_grad=True)
    probability = torch.full((1, 4), 0.5, requires_grad=True)
    visual = torch.ones(1, 4, dtype=torch.bool)
    positions = torch.arange(4).view(1, 4)
    out = SurrogateTokenGather.apply(hidden, positions, probability, visual, False)
    (out * torch.ones_like(out)).sum().backward()  # g = (1, 1): <x, g> = 2, 1, 1, 1; sum |x g| = 2, 5, 1, 1
    magnitude = torch.tensor([2.0, 5.0, 1.0, 1.0])
    scale = (magnitude / magnitude.mean()).clamp(0.5, 2.0)
    importance = torch.tensor([2.0, 1.0, 1.0, 1.0])
    sigma = importance.std(unbiased=False).clamp_min(3e-3)
    relevance = 0.5 + 0.5 * torch.tanh(((importance - importance.mean()) / sigma).clamp(-1.5, 1.5))
    direction = (0.5 - relevance) - (0.5 - relevance).mean()
    expected = 0.8 * direction * scale * 0.25
    torch.testing.assert_close(probability.grad[0], expected)
    assert probability.grad[0, 1] != probability.grad[0, 2]  # same <x, g>, different magnitude


def test_flipped_samples_see_the_inverted_keep_decision_and_frozen_ones_give_no_threshold_gradient():
    model = tiny_model(seed=0).train()
    batch = tiny_processor(model)([phantom_volume(1), phantom_volume(1)], [QUESTION_A, QUESTION_A], answers=["Yes.", "Yes."])
    plain = model(**batch)
    flipped = model(**batch, flipped_keep=torch.tensor([False, True]), frozen_keep=torch.tensor([False, True]))
    assert torch.equal(flipped.keep_mask[0], plain.keep_mask[0])
    assert torch.equal(flipped.keep_mask[1], ~plain.keep_mask[1])
    # A frozen sample's keep probabilities carry no gradient to the threshold MLP; a clean one's do.
    bias = model.model.language_model.token_scheduler.mlp[2].bias
    frozen_second = model(**batch, frozen_keep=torch.tensor([False, True]))
    frozen_second.keep_probability[1].sum().backward(retain_graph=True)
    assert bias.grad is None or float(bias.grad.abs().sum()) == 0
    frozen_second.keep_probability[0].sum().backward()
    assert float(bias.grad.abs().sum()) > 0


# ----------------------------------------------------------------------------- persistence
def test_save_and_load_round_trip(tmp_path, model, processor):
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    loaded = PhotonForConditionalGeneration.from_pretrained(tmp_path).eval()
    loaded_processor = PhotonProcessor.from_pretrained(tmp_path)

    assert loaded.config.its_layer == model.config.its_layer and loaded.config.model_type == "photon"
    assert loaded_processor.to_dict() == processor.to_dict()
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], tensor, msg=name)
    batch = loaded_processor([phantom_volume()], [QUESTION_A])
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).logits, model(**batch).logits)


def test_eager_and_sdpa_attention_agree(processor):
    batch = processor([phantom_volume(1), phantom_volume(2)], [QUESTION_A, QUESTION_B])
    results = {}
    for implementation in ("sdpa", "eager"):
        model = tiny_model(seed=0, attn_implementation=implementation)
        results[implementation] = model.generate(**batch, max_new_tokens=4, output_logits=True, eos_token_id=-1)
    assert torch.equal(results["sdpa"].keep_mask, results["eager"].keep_mask)
    torch.testing.assert_close(results["sdpa"].logits, results["eager"].logits, rtol=1e-4, atol=1e-4)


def test_3b_preset_has_the_qwen2_5_vl_3b_shapes():
    """Built on the meta device (no memory): parameter shapes and count of the real model."""
    with torch.device("meta"):
        model = PhotonForConditionalGeneration(PhotonConfig.from_preset("qwen2.5-vl-3b"))
    assert model.model.visual.patch_embed.proj.weight.shape == (1280, 1, 14, 14, 14)
    assert model.lm_head.weight is model.model.language_model.embed_tokens.weight  # tied, as the 3B model
    layer = model.model.language_model.layers[0]
    assert layer.self_attn.k_proj.weight.shape == (256, 2048) and layer.mlp.gate_proj.weight.shape == (11008, 2048)
    assert model.model.visual.merger.mlp[-1].weight.shape == (2048, 5120)
    vision = sum(p.numel() for p in model.model.visual.parameters())
    language = sum(p.numel() for p in model.model.language_model.parameters())
    # Qwen2.5-VL-3B: ~3.09 B language + ~0.67 B vision parameters; the 3D kernel adds ~2 M.
    assert 3.08e9 < language < 3.10e9 and 0.66e9 < vision < 0.68e9


# ----------------------------------------------------------------------------- release precision
def _bf16_scoring_inputs(seed: int):
    from photonlib.model.pruning.interface import LanguageStageInputs

    generator = torch.Generator().manual_seed(seed)
    length, visual = 40, torch.zeros(1, 40, dtype=torch.bool)
    visual[0, 4:36] = True
    instruction = torch.zeros(1, length, dtype=torch.bool)
    instruction[0, 37:40] = True
    queries = torch.randn(1, 2, length, 16, generator=generator).bfloat16()
    keys = torch.randn(1, 2, length, 16, generator=generator).bfloat16()
    return LanguageStageInputs.from_queries(queries, keys, instruction, visual)


def test_release_precision_rounds_scores_and_threshold_to_the_model_dtype():
    """On a bf16 model the release casts the fp32 scores to bf16 and takes the threshold's sigmoid
    in bf16; tokens near the threshold can flip against an exact fp32 comparison."""
    from photonlib.model.pruning.its import ThresholdPredictor, instruction_weighted_scores, keep_probability
    from photonlib.model.pruning.pruners import InstructionTokenScheduler

    torch.manual_seed(0)
    predictor = ThresholdPredictor(hidden_size=64)
    with torch.no_grad():
        predictor.mlp[2].bias.fill_(0.0)  # theta mid-range, so a real share of tokens is near it
    released, exact = InstructionTokenScheduler(predictor, 0.2, "model"), InstructionTokenScheduler(predictor, 0.2, "float32")
    flips = 0
    for seed in range(40):
        inputs = _bf16_scoring_inputs(seed)
        raw = instruction_weighted_scores(inputs.instruction_queries, inputs.keys, inputs.instruction_mask, inputs.visual_mask)
        rounded = raw.bfloat16().float()
        theta = predictor.threshold_scale * torch.sigmoid(predictor.mlp(_features(rounded)).bfloat16()).float()
        expected = keep_probability(rounded, theta, 0.2)
        selection = released.select(inputs)
        torch.testing.assert_close(selection.keep_probability, expected, rtol=0, atol=0)
        flips += int((selection.keep != exact.select(inputs).keep).sum())
    assert flips > 0  # the two precisions are really different comparisons


def _features(raw):
    from photonlib.model.pruning.its import threshold_features

    return threshold_features(raw)


def test_precision_is_the_same_on_a_float32_model_and_follows_the_configuration(model):
    assert model.config.its_score_precision == "model" and model.pruner.score_precision == "model"
    inputs = _bf16_scoring_inputs(1)
    inputs.instruction_queries = [queries.float() for queries in inputs.instruction_queries]
    inputs.keys = inputs.keys.float()
    from photonlib.model.pruning.pruners import InstructionTokenScheduler

    predictor = model.model.language_model.token_scheduler
    model_precision = InstructionTokenScheduler(predictor, 0.2, "model").select(inputs)
    exact = InstructionTokenScheduler(predictor, 0.2, "float32").select(inputs)
    assert torch.equal(model_precision.keep_probability, exact.keep_probability)
    assert PhotonConfig().its_score_precision == "float32"  # config.json files written before the field
