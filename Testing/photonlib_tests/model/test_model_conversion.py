"""Weights from a Qwen2.5-VL checkpoint and from released Photon checkpoints into photonlib's model.

Every checkpoint here is built locally at tiny size and written with the real writers
(``save_pretrained``, safetensors), then read back as a user's folder would be.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

from photonlib.cli.main import main
from photonlib.model import PhotonConfig, PhotonForConditionalGeneration, PhotonProcessor
from photonlib.model.conversion import (
    PATCH_EMBEDDING,
    QWEN_KEY_RULES,
    THRESHOLD_MLP_KEYS,
    CheckpointError,
    convert_released_checkpoint,
    convert_released_state_dict,
    detect_source_format,
    from_qwen2_5_vl,
    patch_embedding_from_2d,
    photon_config_from_qwen,
    released_photon_config,
    rename_keys,
)
from photonlib.model.decoding import DecodingSettings
from photonlib.model.processing import bundled_qwen_tokenizer_folder
from photonlib.volume.preprocess import PreprocessConfig

PHOTON = Path(sys.executable).with_name("photon")
NEW_IN_PHOTON = {PATCH_EMBEDDING, *THRESHOLD_MLP_KEYS}


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(bundled_qwen_tokenizer_folder())


@pytest.fixture(scope="module")
def photon_config() -> PhotonConfig:
    return PhotonConfig.from_preset("tiny")


@pytest.fixture(scope="module")
def qwen_checkpoint(tmp_path_factory, photon_config, tokenizer):
    """A tiny Qwen2.5-VL (RGB, two-frame 2D patches) with Photon's tiny shapes, saved as a user would have it."""
    vision = photon_config.vision_config.to_dict()
    vision.update(in_channels=3, temporal_patch_size=2)
    config = Qwen2_5_VLConfig(
        text_config=photon_config.text_config.to_dict(), vision_config=vision, tie_word_embeddings=True,
        attn_implementation="sdpa",
    )  # fmt: skip
    torch.manual_seed(0)
    model = Qwen2_5_VLForConditionalGeneration(config).eval()
    folder = tmp_path_factory.mktemp("qwen2_5_vl")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder, model


def copy_checkpoint(source: Path, destination: Path, edit=None) -> Path:
    """A copy of a checkpoint folder whose tensors pass through ``edit(state_dict)`` first."""
    destination.mkdir()
    for file in source.iterdir():
        if file.name != "model.safetensors":
            (destination / file.name).write_bytes(file.read_bytes())
    state_dict = load_file(source / "model.safetensors")
    if edit is not None:
        edit(state_dict)
    save_file(state_dict, destination / "model.safetensors")
    return destination


# ----------------------------------------------------------------------------- Qwen2.5-VL
def test_from_qwen_keeps_every_language_vision_and_merger_tensor(qwen_checkpoint):
    folder, qwen = qwen_checkpoint
    photon, processor = from_qwen2_5_vl(folder, preset_overrides={"pruning_mode": "soft"})

    vision = photon.config.vision_config
    assert (vision.in_channels, vision.temporal_patch_size, vision.patch_size) == (1, 14, 14)
    assert vision.spatial_merge_size == qwen.config.vision_config.spatial_merge_size
    assert vision.depth == qwen.config.vision_config.depth
    assert photon.config.text_config.num_hidden_layers == qwen.config.text_config.num_hidden_layers
    assert photon.config.pruning_mode == "soft"

    photon_tensors, qwen_tensors = photon.state_dict(), qwen.state_dict()
    assert set(photon_tensors) - set(qwen_tensors) == set(THRESHOLD_MLP_KEYS)
    assert set(qwen_tensors) == set(photon_tensors) - set(THRESHOLD_MLP_KEYS)
    compared = 0
    for key, tensor in qwen_tensors.items():
        if key != PATCH_EMBEDDING:
            torch.testing.assert_close(photon_tensors[key], tensor, rtol=0, atol=0, msg=key)
            compared += 1
    assert compared == len(qwen_tensors) - 1
    assert any(key.startswith("model.visual.blocks.") for key in qwen_tensors)
    assert any(key.startswith("model.visual.merger.") for key in qwen_tensors)
    assert photon.lm_head.weight is photon.model.language_model.embed_tokens.weight

    embedding = photon.model.visual.patch_embed.proj.weight
    assert embedding.shape == (vision.hidden_size, 1, 14, 14, 14)
    assert abs(float(embedding.detach().std()) - 0.02) < 0.002  # released init: truncated normal, std 0.02
    assert float(photon.model.language_model.token_scheduler.mlp[2].bias.detach()) == -5.0

    assert processor.preprocess == PreprocessConfig.preset("photon")
    assert processor.patch_size_dhw == (14, 14, 14)
    assert Path(processor.tokenizer.name_or_path) == folder


def test_from_2d_gives_a_volume_of_repeated_grey_frames_the_qwen_video_embedding(qwen_checkpoint):
    folder, qwen = qwen_checkpoint
    photon, _ = from_qwen2_5_vl(folder, patch_init="from_2d")
    kernel_2d = qwen.model.visual.patch_embed.proj.weight
    expected = kernel_2d.sum(dim=1, keepdim=True).repeat(1, 1, 7, 1, 1) / 7
    torch.testing.assert_close(photon.model.visual.patch_embed.proj.weight, expected)

    grid = torch.tensor([[1, 4, 4]])  # one slab of 4 x 4 patches: every window and merge group is used
    generator = torch.Generator().manual_seed(1)
    frames = torch.rand((16, 2, 14, 14), generator=generator)  # per patch: two grey frames
    video = frames[:, None].expand(16, 3, 2, 14, 14).reshape(16, -1)  # equal R, G, B
    volume = frames.repeat(1, 7, 1, 1).reshape(16, -1)  # slice d shows frame d % 2
    with torch.no_grad():
        torch.testing.assert_close(photon.model.visual.patch_embed(volume), qwen.model.visual.patch_embed(video))
        photon_tokens = photon.model.visual(volume, grid_thw=grid).pooler_output
        qwen_tokens = qwen.model.visual(video, grid_thw=grid).pooler_output
    assert photon_tokens.shape == (4, photon.config.vision_config.out_hidden_size)
    torch.testing.assert_close(photon_tokens, qwen_tokens, rtol=1e-4, atol=1e-5)


def test_patch_embedding_from_2d_refuses_frames_that_do_not_divide_the_slices():
    with pytest.raises(CheckpointError, match="groups of 3 frames"):
        patch_embedding_from_2d(torch.zeros(4, 3, 3, 14, 14), temporal_patch_size=14)


def test_qwen_checkpoint_with_an_unknown_or_missing_tensor_is_refused(qwen_checkpoint, tmp_path):
    folder, _ = qwen_checkpoint

    def add_unknown(state_dict):
        state_dict["visual.blocks.0.extra_gate.weight"] = torch.zeros(2)
        state_dict["adapter.weight"] = torch.zeros(2)

    extra = copy_checkpoint(folder, tmp_path / "extra", add_unknown)
    with pytest.raises(CheckpointError, match=r"not Qwen2.5-VL keys: adapter\.weight"):
        from_qwen2_5_vl(extra)

    def add_unexpected(state_dict):
        state_dict["visual.blocks.0.extra_gate.weight"] = torch.zeros(2)

    unexpected = copy_checkpoint(folder, tmp_path / "unexpected", add_unexpected)
    with pytest.raises(
        CheckpointError,
        match=r"1 unexpected keys: visual\.blocks\.0\.extra_gate\.weight \(as model\.visual\.blocks\.0\.extra_gate\.weight\)",
    ):
        from_qwen2_5_vl(unexpected)

    missing = copy_checkpoint(
        folder, tmp_path / "missing", lambda state: state.pop("model.layers.1.mlp.up_proj.weight")
    )
    with pytest.raises(
        CheckpointError, match=r"1 missing keys: model\.language_model\.layers\.1\.mlp\.up_proj\.weight"
    ):
        from_qwen2_5_vl(missing)


def test_not_a_qwen_folder_is_refused(tmp_path, qwen_checkpoint):
    with pytest.raises(CheckpointError, match="does not exist"):
        from_qwen2_5_vl(tmp_path / "absent")
    with pytest.raises(CheckpointError, match="no config.json"):
        from_qwen2_5_vl(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 64}))
    with pytest.raises(CheckpointError, match="'llama' model; only Qwen2.5-VL"):
        from_qwen2_5_vl(tmp_path)
    folder, _ = qwen_checkpoint
    with pytest.raises(CheckpointError, match="patch_init must be one of"):
        from_qwen2_5_vl(folder, patch_init="zeros")
    with pytest.raises(CheckpointError, match="preset_overrides may set"):
        from_qwen2_5_vl(folder, preset_overrides={"hidden_size": 8})


# ----------------------------------------------------------------------------- released Photon
def to_released_layout(photon_state: dict[str, torch.Tensor], its_layer: int, hidden: int) -> dict[str, torch.Tensor]:
    """photonlib keys -> the released checkpoints' names, written out by hand (not with the module's rules)."""
    released = {}
    for key, tensor in photon_state.items():
        if key == PATCH_EMBEDDING:
            name = "visual.vision_patch_embed.proj.weight"
        elif key.startswith("model.visual."):
            name = key.removeprefix("model.")
        elif key.startswith("model.language_model.token_scheduler."):
            name = f"model.layers.{its_layer}.atp.predictor." + key.removeprefix(
                "model.language_model.token_scheduler."
            )
        elif key.startswith("model.language_model."):
            name = "model." + key.removeprefix("model.language_model.")
        elif key == "lm_head.weight":
            continue  # tied to the embedding: the released files do not repeat it
        else:
            raise AssertionError(f"unmapped photonlib key {key}")
        released[name] = tensor.clone()
    released[f"model.layers.{its_layer}.atp.pos_proj.weight"] = torch.randn(hidden, 1)
    return released


@pytest.fixture(scope="module")
def trained_photon(photon_config):
    torch.manual_seed(2)
    model = PhotonForConditionalGeneration(photon_config).eval()
    with torch.no_grad():  # a "trained" threshold MLP: values an init would never produce
        model.model.language_model.token_scheduler.mlp[2].bias.fill_(0.25)
    return model


def released_state(model: PhotonForConditionalGeneration, its_layer: int | None = None) -> dict[str, torch.Tensor]:
    config = model.config
    layer = config.its_layer if its_layer is None else its_layer
    return to_released_layout(model.state_dict(), layer, config.text_config.hidden_size)


def test_released_state_dict_loads_strictly_with_equal_tensors(trained_photon):
    source = released_state(trained_photon)
    source["visual.patch_embed.proj.weight"] = torch.randn(32, 3, 2, 14, 14)  # a leftover 2D kernel: dropped
    config = PhotonConfig.from_preset("tiny")

    converted = convert_released_state_dict(source, config)

    fresh = PhotonForConditionalGeneration(config)
    result = fresh.load_state_dict(converted, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    for key, tensor in trained_photon.state_dict().items():
        torch.testing.assert_close(fresh.state_dict()[key], tensor, rtol=0, atol=0, msg=key)
    assert not any("pos_proj" in key or "vision_patch_embed" in key for key in converted)


def test_released_config_saved_by_transformers_4_with_both_channel_fields(trained_photon):
    """transformers 4.x's save_pretrained writes in_channels: 3 (the unused 2D default) beside the
    release's in_chans: 1; the release's 3D patch embedding reads in_chans."""
    raw = released_config_json(trained_photon.config)
    raw["vision_config"]["in_channels"] = 3
    assert released_photon_config(raw).vision_config.in_channels == 1


def test_source_format_detection_reads_in_chans_first(trained_photon, tmp_path):
    raw = released_config_json(trained_photon.config)
    raw["vision_config"]["in_channels"] = 3
    (tmp_path / "config.json").write_text(json.dumps(raw))
    assert detect_source_format(tmp_path) == "released"


def test_released_its_layer_comes_from_the_checkpoint(trained_photon):
    config = PhotonConfig.from_preset("tiny")
    assert config.its_layer == 0
    converted = convert_released_state_dict(released_state(trained_photon, its_layer=1), config)
    assert config.its_layer == 1
    assert set(THRESHOLD_MLP_KEYS) <= set(converted)

    with pytest.raises(CheckpointError, match=r"decoder layers \[0, 1\]"):
        source = released_state(trained_photon)
        source["model.layers.1.atp.predictor.mlp.0.bias"] = source["model.layers.0.atp.predictor.mlp.0.bias"]
        convert_released_state_dict(source, PhotonConfig.from_preset("tiny"))


def test_released_state_dict_with_unknown_keys_is_refused(trained_photon):
    config = PhotonConfig.from_preset("tiny")
    source = released_state(trained_photon)
    source["model.layers.0.atp.gate.weight"] = torch.zeros(1)
    with pytest.raises(
        CheckpointError,
        match=r"unexpected keys: model\.layers\.0\.atp\.gate\.weight \(as model\.language_model\.layers\.0\.atp\.gate\.weight\)",
    ):
        convert_released_state_dict(source, config)
    source = released_state(trained_photon)
    source["projector.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"not released Photon keys: projector\.weight"):
        convert_released_state_dict(source, config)
    source = released_state(trained_photon)
    source["visual.vision_patch_embed.proj.weight"] = torch.zeros(32, 3, 2, 14, 14)
    with pytest.raises(
        CheckpointError,
        match=r"wrong shape: visual\.vision_patch_embed\.proj\.weight \(as model\.visual\.patch_embed\.proj\.weight\) \(32, 3, 2, 14, 14\)",
    ):
        convert_released_state_dict(source, config)


def released_config_json(config: PhotonConfig) -> dict:
    """config.json as the release writes it (transformers 4.x Qwen2.5-VL, flat text fields, ``in_chans``)."""
    text, vision = config.text_config, config.vision_config
    return {
        "architectures": ["Qwen2_5_VLForConditionalGeneration"],
        "model_type": "qwen2_5_vl",
        "attention_dropout": 0.0,
        "bos_token_id": 151643,
        "eos_token_id": 151645,
        "vision_start_token_id": 151652,
        "vision_end_token_id": 151653,
        "vision_token_id": 151654,
        "image_token_id": 151655,
        "video_token_id": 151656,
        "hidden_act": "silu",
        "hidden_size": text.hidden_size,
        "initializer_range": 0.02,
        "intermediate_size": text.intermediate_size,
        "max_position_embeddings": 128000,
        "max_window_layers": 70,
        "num_attention_heads": text.num_attention_heads,
        "num_hidden_layers": text.num_hidden_layers,
        "num_key_value_heads": text.num_key_value_heads,
        "rms_norm_eps": 1e-06,
        "rope_theta": 1000000.0,
        "sliding_window": 32768,
        "tie_word_embeddings": True,
        "torch_dtype": "float32",
        "transformers_version": "4.41.2",
        "use_cache": True,
        "use_sliding_window": False,
        "vision_config": {
            "depth": vision.depth,
            "hidden_act": "silu",
            "hidden_size": vision.hidden_size,
            "intermediate_size": vision.intermediate_size,
            "num_heads": vision.num_heads,
            "in_chans": 1,
            "out_hidden_size": vision.out_hidden_size,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "spatial_patch_size": 14,
            "window_size": 112,
            "fullatt_block_indexes": list(vision.fullatt_block_indexes),
            "tokens_per_second": 2,
            "temporal_patch_size": 14,
        },
        "rope_scaling": {"type": "mrope", "mrope_section": list(text.rope_parameters["mrope_section"])},
        "vocab_size": text.vocab_size,
    }


def write_released_checkpoint(
    folder: Path, model: PhotonForConditionalGeneration, tokenizer, stage: str = "S2"
) -> Path:
    """Two safetensors shards and their index, the release's config.json and the tokenizer files.

    Stage S1 checkpoints have no ITS (``atp``) tensors.
    """
    folder.mkdir()
    state = released_state(model)
    if stage == "S1":
        state = {key: tensor for key, tensor in state.items() if ".atp." not in key}
    names = sorted(state)
    shards = {
        "model-00001-of-00002.safetensors": names[: len(names) // 2],
        "model-00002-of-00002.safetensors": names[len(names) // 2 :],
    }
    for file, keys in shards.items():
        save_file({key: state[key].contiguous() for key in keys}, folder / file, metadata={"format": "pt"})
    index = {"metadata": {}, "weight_map": {key: file for file, keys in shards.items() for key in keys}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    (folder / "config.json").write_text(json.dumps(released_config_json(model.config)))
    tokenizer.save_pretrained(folder)
    return folder


def run_photon(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(PHOTON), *args], capture_output=True, text=True, timeout=300, env=dict(os.environ))


def test_photon_convert_released_end_to_end(tmp_path, trained_photon, tokenizer):
    source = write_released_checkpoint(tmp_path / "photon-s2", trained_photon, tokenizer)
    # The release decodes with Qwen2.5-VL-3B-Instruct's sampling settings; they travel with the weights.
    (source / "generation_config.json").write_text(json.dumps({"do_sample": True, "repetition_penalty": 1.05, "temperature": 0.1, "top_k": 1, "top_p": 0.001}))
    destination = tmp_path / "photonlib-model"

    result = run_photon("convert", str(source), str(destination))

    assert result.returncode == 0, result.stderr
    assert "converted released checkpoint" in result.stdout
    lines = result.stdout.splitlines()
    assert (
        f"loaded {len(trained_photon.state_dict()) - 1} tensors; ITS after decoder layer 0" in lines
    )  # lm_head is tied
    assert [line for line in lines if line.startswith("dropped ")] == [
        "dropped model.layers.0.atp.pos_proj.weight: ITS pos_proj: created but never used in the released forward"
    ]
    assert not any(line.startswith("initialised ") for line in lines)
    model = PhotonForConditionalGeneration.from_pretrained(destination).eval()
    processor = PhotonProcessor.from_pretrained(destination)
    assert model.config.its_layer == trained_photon.config.its_layer
    assert model.config.vision_config.in_channels == 1
    for key, tensor in trained_photon.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], tensor, rtol=0, atol=0, msg=key)
    assert processor.preprocess == PreprocessConfig.preset("photon")

    volume = np.random.default_rng(3).random((28, 56, 56), dtype=np.float32)
    batch = processor([volume], ["Is there a nodule in the left lung?"])
    with torch.no_grad():
        output = model(**batch)
    assert output.logits.shape[-1] == model.config.text_config.vocab_size
    assert torch.isfinite(output.logits).all()
    assert output.keep_probability.shape == (1, 2 * 2 * 2)
    # The release's config.json has no pad_token_id; decoding needs one, taken from the tokenizer.
    assert "note: pad_token_id set to the tokenizer's (151643)" in lines
    assert model.generate(**batch, max_new_tokens=2).sequences.shape[0] == 1
    assert DecodingSettings.from_folder(destination).repetition_penalty == 1.05
    assert any(line.startswith("note: decoding from the checkpoint's generation_config.json") for line in lines)


def test_convert_released_stage1_checkpoint_gets_a_new_threshold_mlp(tmp_path, trained_photon, tokenizer):
    source = write_released_checkpoint(tmp_path / "photon-s1", trained_photon, tokenizer, stage="S1")

    report = convert_released_checkpoint(source, tmp_path / "out")

    assert report.source_format == "released" and report.its_layer == 0
    assert list(report.initialized) == ["model.language_model.token_scheduler.mlp.*"]
    assert any("Photon-S1" in note for note in report.notes)
    model = PhotonForConditionalGeneration.from_pretrained(tmp_path / "out")
    assert float(model.model.language_model.token_scheduler.mlp[2].bias.detach()) == -5.0
    kept = trained_photon.state_dict()
    for key, tensor in model.state_dict().items():
        if key not in THRESHOLD_MLP_KEYS:
            torch.testing.assert_close(tensor, kept[key], rtol=0, atol=0, msg=key)


def test_configs_of_the_3b_checkpoints_give_the_3b_preset_shapes():
    preset = PhotonConfig.from_preset("qwen2.5-vl-3b")
    released = released_config_json(preset)
    qwen = json.loads(json.dumps(released))
    qwen["vision_config"].update(in_chans=3, temporal_patch_size=2)  # Qwen2.5-VL-3B-Instruct's own config.json

    for config in (released_photon_config(released), photon_config_from_qwen(qwen)):
        assert config.its_layer == preset.its_layer == 8
        assert config.tie_word_embeddings
        assert config.video_token_id == preset.video_token_id
        for name in (
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "num_key_value_heads",
            "intermediate_size",
            "vocab_size",
        ):
            assert getattr(config.text_config, name) == getattr(preset.text_config, name), name
        for name in ("rope_theta", "mrope_section"):
            assert config.text_config.rope_parameters[name] == preset.text_config.rope_parameters[name], name
        for name in (
            "depth", "hidden_size", "num_heads", "intermediate_size", "out_hidden_size", "in_channels", "patch_size",
            "temporal_patch_size", "spatial_merge_size", "window_size", "fullatt_block_indexes",
        ):  # fmt: skip
            assert getattr(config.vision_config, name) == getattr(preset.vision_config, name), name
        # The release's video placement: FPS=1 and the checkpoint's tokens_per_second (2) -> 28 per token.
        assert config.volume_fps == 1.0 and config.temporal_position_scale == 28
    with pytest.raises(CheckpointError, match="convert it as 'qwen2.5-vl'"):
        released_photon_config(qwen)


def test_key_rules_accept_the_4x_and_5x_qwen_layouts():
    legacy = [
        "visual.blocks.0.attn.qkv.weight",
        "model.layers.0.mlp.up_proj.weight",
        "model.norm.weight",
        "lm_head.weight",
    ]
    renamed, dropped, unmatched = rename_keys([*legacy, "visual.patch_embed.proj.weight"], QWEN_KEY_RULES)
    assert renamed == {
        "visual.blocks.0.attn.qkv.weight": "model.visual.blocks.0.attn.qkv.weight",
        "model.layers.0.mlp.up_proj.weight": "model.language_model.layers.0.mlp.up_proj.weight",
        "model.norm.weight": "model.language_model.norm.weight",
        "lm_head.weight": "lm_head.weight",
    }
    assert list(dropped) == ["visual.patch_embed.proj.weight"] and not unmatched

    current = ["model.visual.blocks.0.attn.qkv.weight", "model.language_model.layers.0.mlp.up_proj.weight"]
    renamed, _, _ = rename_keys(current, QWEN_KEY_RULES)
    assert renamed == {key: key for key in current}
    with pytest.raises(CheckpointError, match="both map to 'model.visual.blocks.0.attn.qkv.weight'"):
        rename_keys([legacy[0], current[0]], QWEN_KEY_RULES)


# ----------------------------------------------------------------------------- command line
def test_photon_convert_qwen_with_patch_init_from_2d(qwen_checkpoint, tmp_path, capsys):
    folder, qwen = qwen_checkpoint
    destination = tmp_path / "from-qwen"
    assert main(["convert", str(folder), str(destination), "--patch-init", "from_2d"]) == 0
    assert "converted qwen2.5-vl checkpoint" in capsys.readouterr().out
    model = PhotonForConditionalGeneration.from_pretrained(destination)
    expected = patch_embedding_from_2d(qwen.model.visual.patch_embed.proj.weight, 14)
    torch.testing.assert_close(model.model.visual.patch_embed.proj.weight, expected)
    assert PhotonProcessor.from_pretrained(destination).video_token_id == model.config.video_token_id


@pytest.mark.parametrize(
    "case, message",
    [
        ("absent", "does not exist"),
        ("empty", "has no config.json"),
        ("not_qwen", "'llama' model; only Qwen2.5-VL"),
        ("no_weights", "has no model.safetensors"),
        ("unknown_key", "not Qwen2.5-VL keys: adapter.weight"),
        ("patch_init_on_released", "patch_init applies to Qwen2.5-VL checkpoints only"),
        ("destination_not_empty", "is not empty; choose a new folder"),
    ],
)
def test_photon_convert_bad_input_exits_2_with_one_line(case, message, tmp_path, qwen_checkpoint, capsys):
    folder, _ = qwen_checkpoint
    source = tmp_path / "source"
    extra: list[str] = []
    if case == "empty":
        source.mkdir()
    elif case == "not_qwen":
        source.mkdir()
        (source / "config.json").write_text(json.dumps({"model_type": "llama"}))
    elif case == "no_weights":
        source.mkdir()
        (source / "config.json").write_bytes((folder / "config.json").read_bytes())
    elif case == "unknown_key":
        copy_checkpoint(folder, source, lambda state: state.update({"adapter.weight": torch.zeros(1)}))
    elif case == "patch_init_on_released":
        source.mkdir()
        (source / "config.json").write_text(json.dumps(released_config_json(PhotonConfig.from_preset("tiny"))))
        extra = ["--patch-init", "from_2d"]
    elif case == "destination_not_empty":
        source = folder
        (tmp_path / "out").mkdir()
        (tmp_path / "out" / "notes.txt").write_text("keep me")

    assert main(["convert", str(source), str(tmp_path / "out"), *extra]) == 2

    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("photon convert: error: "), captured.err
    assert message in lines[0]
