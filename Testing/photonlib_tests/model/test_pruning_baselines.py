"""Fixed-budget vision-stage baselines: attention recorded in the vision tower, VisionZip, HiPrune."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers.models.qwen2_5_vl import modeling_qwen2_5_vl
from transformers.vision_utils import get_vision_window_index

from photonlib.model import PhotonConfig
from photonlib.model.modeling import PhotonVisionModel
from photonlib.model.pruning.baselines import HiPrunePruner, VisionZipPruner, hiprune_choice, visionzip_choice
from photonlib.model.pruning.budget import kept_count
from photonlib.model.pruning.interface import VisionStageInputs
from photonlib.model.pruning.registry import PRUNER_NAMES, build_pruner
from photonlib.model.pruning.vision_attention import VisionAttentionRecorder, middle_vision_block

from support.models import phantom_volume, tiny_model

QUESTION = "Is there a lesion in the liver?"
# The test volume gives 4 x 8 x 8 patches = 4 x 4 x 4 merged tokens. A 56-voxel window is 2 x 2
# merged tokens, so each depth slab has 4 windows and the tower really permutes its tokens.
PATCH_GRID = (4, 8, 8)
TOKEN_GRID = (4, 4, 4)
WINDOW_TOKENS = 2


@pytest.fixture(scope="module")
def tower():
    """A tiny vision tower (block 0 windowed, block 1 full attention), eager attention."""
    config = PhotonConfig.from_preset("tiny", attn_implementation="eager")
    config.vision_config.window_size = WINDOW_TOKENS * 2 * 14
    torch.manual_seed(0)
    return PhotonVisionModel._from_config(config.vision_config).eval()


def tower_inputs(processor, volumes):
    patches = [processor.volume_patches(volume)[0] for volume in volumes]
    return torch.cat(patches), torch.tensor([PATCH_GRID] * len(volumes))


def window_order_received(chunks):
    """Attention received per patch, in the tower's order, from captured (1, heads, n, n) softmaxes."""
    return torch.cat([weights[0].float().mean(dim=(0, 1)) for weights in chunks])


# ----------------------------------------------------------------------------- recorder
def test_recorded_attention_matches_the_towers_own_softmax(tower, processor, monkeypatch):
    captured = {id(block.attn): [] for block in tower.blocks}
    original = modeling_qwen2_5_vl.eager_attention_forward

    def capturing(module, *args, **kwargs):
        output, weights = original(module, *args, **kwargs)
        captured[id(module)].append(weights.detach())
        return output, weights

    monkeypatch.setattr(modeling_qwen2_5_vl, "eager_attention_forward", capturing)
    pixels, grid_thw = tower_inputs(processor, [phantom_volume(1), phantom_volume(2)])
    with torch.no_grad(), VisionAttentionRecorder(blocks=[0, -1]).observe(tower) as record:
        tower(pixels, grid_thw=grid_thw)

    window_index, _ = get_vision_window_index(grid_thw, 2, tower.window_size, 14)
    assert not torch.equal(window_index, torch.arange(len(window_index))), "the test needs a real permutation"
    assert record.token_grids == [TOKEN_GRID, TOKEN_GRID]
    for block_index, block in enumerate(tower.blocks):
        per_patch = window_order_received(captured[id(block.attn)])  # window order
        per_token = torch.empty(len(window_index))
        per_token[window_index] = per_patch.view(-1, 4).mean(dim=1)
        recorded = torch.cat(record.received[block_index])
        torch.testing.assert_close(recorded, per_token, rtol=1e-5, atol=1e-6)

    # Each query's row sums to 1, so the received scores of one attention segment sum to 1 over
    # its patches, i.e. 1/4 over its merged tokens (each the mean of four patches).
    for scores in record.received_at(-1):  # full attention: one segment per depth slab
        torch.testing.assert_close(scores.view(4, 16).sum(dim=1), torch.full((4,), 0.25))
    for scores in record.received_at(0):  # windows of 2 x 2 merged tokens
        windows = scores.view(4, 2, WINDOW_TOKENS, 2, WINDOW_TOKENS).sum(dim=(2, 4))
        torch.testing.assert_close(windows, torch.full((4, 2, 2), 0.25))


def test_scores_are_put_back_in_token_grid_order(tower, processor):
    """Block 0 by hand in patch order with geometric windows: no window_index involved."""
    volume = phantom_volume(3)
    pixels, grid_thw = tower_inputs(processor, [volume])
    with torch.no_grad(), VisionAttentionRecorder(blocks=[0]).observe(tower) as record:
        tower(pixels, grid_thw=grid_thw)

    t_size, h_size, w_size = PATCH_GRID
    # Patch n of the processor's order is (t, 2*hb + mh, 2*wb + mw), n = ((t*4 + hb)*4 + wb)*4 + mh*2 + mw.
    t, hb, wb, mh, mw = torch.meshgrid(
        *(torch.arange(n) for n in (t_size, h_size // 2, w_size // 2, 2, 2)), indexing="ij"
    )
    t, h, w = t.reshape(-1), (2 * hb + mh).reshape(-1), (2 * wb + mw).reshape(-1)
    window_patches = 2 * WINDOW_TOKENS
    segment = t * 100 + (h // window_patches) * 10 + (w // window_patches)
    with torch.no_grad():
        block = tower.blocks[0]
        hidden = tower.patch_embed(pixels)
        cos, sin = tower.rotary_pos_emb(hidden, torch.stack([h, w], dim=-1))
        length, heads = hidden.shape[0], block.attn.num_heads
        q, k, _ = block.attn.qkv(block.norm1(hidden)).reshape(length, 3, heads, -1).permute(1, 0, 2, 3).unbind(0)
        q, k = modeling_qwen2_5_vl.apply_rotary_pos_emb_vision(q, k, cos, sin)
        logits = torch.einsum("ihd,jhd->hij", q, k) * block.attn.scaling
        same = segment[:, None] == segment[None, :]
        probabilities = logits.masked_fill(~same, float("-inf")).softmax(dim=-1).mean(dim=0)  # (S, S)
        received = probabilities.sum(dim=0) / same.sum(dim=0)
    expected = received.view(-1, 4).mean(dim=1)  # merge groups are 4 consecutive patches: (t, h, w) order
    torch.testing.assert_close(record.received[0][0], expected, rtol=1e-5, atol=1e-6)


def test_keys_of_a_distinctive_patch_land_on_its_token(tower, processor):
    """One patch differs from a uniform volume: its merged token (and no other) must have a different key."""
    volume = np.full((56, 112, 112), 0.5, dtype=np.float32)
    t, h, w = 1, 1, 5  # patch (t, h, w) -> merged token (1, 0, 2): window order differs from grid order
    patch = np.random.default_rng(0).random((14, 14, 14))
    volume[14 * t : 14 * t + 14, 14 * h : 14 * h + 14, 14 * w : 14 * w + 14] = patch
    pixels, grid_thw = tower_inputs(processor, [volume])
    with torch.no_grad(), VisionAttentionRecorder(blocks=[0]).observe(tower) as record:
        tower(pixels, grid_thw=grid_thw)
    keys = record.keys[0][0]
    torch.testing.assert_close(keys.norm(dim=1), torch.ones(64))
    distance = (keys - keys[0]).norm(dim=1)
    token = (t * 4 + h // 2) * 4 + w // 2
    assert int(distance.argmax()) == token and (distance > 1e-4).sum() == 1


def test_batched_volumes_are_recorded_separately(tower, processor):
    volumes = [phantom_volume(1), phantom_volume(2)]
    recorder = VisionAttentionRecorder(blocks=[-1])
    pixels, grid_thw = tower_inputs(processor, volumes)
    with torch.no_grad(), recorder.observe(tower) as batched:
        tower(pixels, grid_thw=grid_thw)
    for index, volume in enumerate(volumes):
        pixels, grid_thw = tower_inputs(processor, [volume])
        with torch.no_grad(), recorder.observe(tower) as alone:
            tower(pixels, grid_thw=grid_thw)
        torch.testing.assert_close(batched.received_at(-1)[index], alone.received_at(-1)[0], rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(batched.keys_at(-1)[index], alone.keys_at(-1)[0], rtol=1e-5, atol=1e-6)


def test_hooks_are_removed_even_when_the_tower_fails(tower):
    with pytest.raises(RuntimeError):
        with VisionAttentionRecorder(blocks=[0, 1]).observe(tower):
            assert all(len(block._forward_pre_hooks) == 1 for block in tower.blocks)
            tower(torch.zeros(3, 5), grid_thw=torch.tensor([PATCH_GRID]))
    assert all(not block._forward_pre_hooks for block in tower.blocks)
    assert not tower._forward_pre_hooks and not tower._forward_hooks


def test_middle_block_is_a_full_attention_block():
    class Tower(torch.nn.Module):
        def __init__(self, depth, full_attention):
            super().__init__()
            self.blocks = torch.nn.ModuleList(torch.nn.Identity() for _ in range(depth))
            self.fullatt_block_indexes = full_attention

    assert middle_vision_block(Tower(32, [7, 15, 23, 31])) == 15  # Qwen2.5-VL-3B
    assert middle_vision_block(Tower(2, [1])) == 1
    assert middle_vision_block(Tower(8, [])) == 4


# ----------------------------------------------------------------------------- selection rules
def test_visionzip_dominant_and_contextual_tokens():
    generator = torch.Generator().manual_seed(0)
    visual, kept, contextual = 20, 8, 3
    embeddings = torch.randn(visual, 6, generator=generator)
    scores = torch.rand(visual, generator=generator)
    keys = torch.nn.functional.normalize(torch.randn(visual, 5, generator=generator), dim=1)

    for merge in ("target_plus_mean", "mean"):
        choice = visionzip_choice(embeddings, scores, keys, kept, contextual, merge)
        dominant = set(scores.argsort(descending=True)[: kept - contextual].tolist())
        assert set(choice.dominant.tolist()) == dominant
        remaining = [index for index in range(visual) if index not in dominant]
        targets = [remaining[i * len(remaining) // contextual] for i in range(contextual)]
        assert choice.targets.tolist() == targets
        kept_tokens = set(torch.nonzero(choice.keep).squeeze(1).tolist())
        assert int(choice.keep.sum()) == kept and kept_tokens == dominant | set(targets)
        for slot, target in enumerate(targets):
            assigned = [j for j in remaining if j not in targets and int((keys[targets] @ keys[j]).argmax()) == slot]
            if merge == "target_plus_mean":
                expected = embeddings[target] + (embeddings[assigned].mean(dim=0) if assigned else 0)
            else:
                expected = embeddings[[target, *assigned]].mean(dim=0)
            torch.testing.assert_close(choice.embeddings[target], expected)
        untouched = ~torch.isin(torch.arange(visual), choice.targets)
        assert torch.equal(choice.embeddings[untouched], embeddings[untouched])


def test_hiprune_anchors_buffers_registers():
    generator = torch.Generator().manual_seed(1)
    grid = (3, 5, 5)
    visual = 75
    middle, last = torch.rand(visual, generator=generator), torch.rand(visual, generator=generator)
    for kept, anchors in [(20, 3), (6, 3)]:  # (6, 3): the buffers do not all fit
        choice = hiprune_choice(middle, last, grid, kept, anchors)
        assert int(choice.keep.sum()) == kept
        roles = [set(choice.anchors.tolist()), set(choice.buffers.tolist()), set(choice.registers.tolist())]
        assert sum(map(len, roles)) == kept and len(set.union(*roles)) == kept
        assert roles[0] == set(middle.argsort(descending=True)[:anchors].tolist())
        coordinates = torch.stack(torch.meshgrid(*(torch.arange(n) for n in grid), indexing="ij")).reshape(3, -1).T
        for buffer in roles[1]:
            distances = [(coordinates[buffer] - coordinates[anchor]).abs() for anchor in roles[0]]
            assert any(d[0] == 0 and d[1:].sum() == 1 for d in distances), f"buffer {buffer} touches no anchor"
        rest = torch.ones(visual, dtype=torch.bool)
        rest[list(roles[0] | roles[1])] = False
        expected_registers = torch.nonzero(rest).squeeze(1)[last[rest].argsort(descending=True)][: len(roles[2])]
        assert roles[2] == set(expected_registers.tolist())
    assert len(hiprune_choice(middle, last, grid, 20, 3).buffers) > 3  # neighbours really were taken
    assert len(hiprune_choice(middle, last, grid, 6, 3).registers) == 0


@pytest.mark.parametrize("budget, expected", [(0.3, 19), (0.5, 32), (0.7, 45), (1.0, 64), (0.001, 1)])
def test_kept_count(budget, expected):
    assert kept_count(64, budget) == expected


# ----------------------------------------------------------------------------- in the model
def configure(model, pruner, budget):
    model.config.pruner, model.config.pruning_budget = pruner, budget
    return model


@pytest.mark.parametrize("pruner", ["visionzip", "hiprune"])
@pytest.mark.parametrize("budget", [0.3, 0.5, 1.0])
def test_the_language_model_sees_exactly_the_kept_tokens(model, processor, pruner, budget):
    configure(model, pruner, budget)
    batch = processor([phantom_volume(1), phantom_volume(2)], [QUESTION, "Why?"])
    with torch.no_grad():
        output = model(**batch, use_cache=True)
        again = model(**batch)
    kept = kept_count(64, budget)
    assert output.keep_mask.shape == (2, 64) and output.keep_mask.sum(dim=1).tolist() == [kept, kept]
    assert torch.equal(output.keep_mask, again.keep_mask), "fixed-budget pruning is deterministic"
    assert torch.equal(output.keep_probability, output.keep_mask.float())
    length = batch["input_ids"].shape[1]
    assert output.logits.shape[1] == length - 64 + kept
    for layer in output.cache.layers:
        assert layer.keys.shape[2] == length - 64 + kept
    # The kept slots are exactly the text and the kept visual tokens, in order.
    visual = batch["input_ids"] == model.config.video_token_id
    for sample in range(2):
        keep_full = ~visual[sample] & batch["attention_mask"][sample].bool()
        keep_full[visual[sample]] = output.keep_mask[sample]
        slots = output.kept_positions[sample]
        assert torch.equal(slots[slots >= 0], torch.nonzero(keep_full).squeeze(1))
    assert all(not block._forward_pre_hooks for block in model.model.visual.blocks)
    assert not model.model.visual._forward_pre_hooks and not model.model.visual._forward_hooks


def test_visionzip_contextual_embeddings_reach_the_language_model(model, processor):
    configure(model, "visionzip", 0.5)
    batch = processor([phantom_volume(1)], [QUESTION])
    seen = {}

    def capture(module, args, kwargs):
        seen["embeddings"] = kwargs["inputs_embeds"]

    handle = model.model.language_model.register_forward_pre_hook(capture, with_kwargs=True)
    try:
        with torch.no_grad():
            output = model(**batch)
    finally:
        handle.remove()
    # The same choice, made independently from a recording and the plain visual embeddings.
    with torch.no_grad(), VisionAttentionRecorder(blocks=[-1]).observe(model.model.visual) as record:
        embeddings = model.model.encode_volumes(batch["pixel_values"], batch["video_grid_thw"])[0]
    pruner = model.pruner
    contextual = pruner.contextual_count(32)
    assert contextual >= 1
    choice = visionzip_choice(embeddings, record.received_at(-1)[0], record.keys_at(-1)[0], 32, contextual)
    assert torch.equal(choice.keep, output.keep_mask[0])
    assert len(choice.merged) > 0 and not torch.allclose(choice.embeddings[choice.targets], embeddings[choice.targets])
    slots = output.kept_positions[0]
    visual_slots = batch["input_ids"][0, slots] == model.config.video_token_id
    torch.testing.assert_close(seen["embeddings"][0, visual_slots], choice.embeddings[choice.keep])


@pytest.mark.parametrize("pruner", ["visionzip", "hiprune"])
def test_generate_with_a_vision_stage_pruner(model, processor, pruner):
    configure(model, pruner, 0.5)
    batch = processor([phantom_volume(1)], [QUESTION])
    with torch.no_grad():
        prefill = model(**batch)
    generation = model.generate(**batch, max_new_tokens=3, output_logits=True, eos_token_id=-1)
    assert generation.sequences.shape == (1, 3)
    assert int(generation.keep_mask.sum()) == 32
    torch.testing.assert_close(generation.logits[:, 0], prefill.logits[:, -1].float())


# ----------------------------------------------------------------------------- selection by name
def test_selection_by_name_and_budget_checks(processor):
    assert {"visionzip", "hiprune"} <= set(PRUNER_NAMES)
    model = tiny_model(seed=0, pruner="visionzip", pruning_budget=0.3)
    assert isinstance(model.pruner, VisionZipPruner) and model.pruner.stage == "vision" and model.pruner.budget == 0.3
    model.config.pruner = "hiprune"
    assert isinstance(model.pruner, HiPrunePruner) and model.pruner.budget == 0.3

    for name in ("visionzip", "hiprune"):
        with pytest.raises(ValueError, match="pruning_budget"):
            build_pruner(name, None, 0.2, None)
    unbudgeted = tiny_model(seed=0, pruner="hiprune")
    with pytest.raises(ValueError, match="pruning_budget"), torch.no_grad():
        unbudgeted(**processor([phantom_volume()], [QUESTION]))
    for bad in (0, -0.1, 1.5):
        with pytest.raises(ValueError, match="kept fraction"):
            VisionZipPruner(bad)
        with pytest.raises(ValueError, match="kept fraction"):
            HiPrunePruner(bad)
    with pytest.raises(RuntimeError, match="observe"):
        VisionZipPruner(0.5).select(VisionStageInputs([torch.zeros(64, 4)], torch.tensor([TOKEN_GRID])))
