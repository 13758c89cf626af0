"""``photon train``: a short run writes a checkpoint and resumes exactly; recipes parse and refuse bad settings."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from photonlib.model import PhotonForConditionalGeneration, PhotonProcessor
from photonlib.training import load_train_config, train
from photonlib.training.config import PruningSchedule

from support import REPOSITORY_ROOT
from support.volumes import question_dataset

PHOTON = Path(sys.executable).with_name("photon")
CONFIGS = REPOSITORY_ROOT / "PhotonLib" / "configs"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """Four small CT-like volumes (real files) and a JSON Lines file of questions about them."""
    return question_dataset(tmp_path_factory.mktemp("train-data"), ["Yes" if index % 2 else "No" for index in range(4)])


def recipe(dataset: Path, output: Path, *extra: str):
    return load_train_config(
        None,
        [
            "model.init=preset:tiny", "model.tokenizer=compact", "model.compact_vocab_size=300",
            "data.kind=jsonl", f"data.path={dataset}", "data.preprocess=tiny", f"output_dir={output}",
            "max_steps=3", "batch_size=2", "learning_rate=1e-3", "pruning.soft_from=1", "pruning.hard_from=2",
            *extra,
        ],
    )  # fmt: skip


def test_three_steps_checkpoint_and_exact_resume(tmp_path, dataset):
    straight = train(recipe(dataset, tmp_path / "straight"))
    interrupted = recipe(dataset, tmp_path / "resumed", "save_every=2")
    train(interrupted)
    # Forget everything after step 2, then resume from the step-2 checkpoint.
    checkpoints = tmp_path / "resumed" / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step-0000002", "step-0000003"]
    for leftover in (checkpoints / "step-0000003", tmp_path / "resumed" / "final"):
        subprocess.run(["rm", "-rf", str(leftover)], check=True)
    resumed = train(interrupted, resume=checkpoints / "step-0000002")

    first = PhotonForConditionalGeneration.from_pretrained(straight.final_model).state_dict()
    second = PhotonForConditionalGeneration.from_pretrained(resumed.final_model).state_dict()
    for name, tensor in first.items():
        assert torch.equal(tensor, second[name]), name
    # The run really trained: weights moved away from the initial ones.
    initial = PhotonForConditionalGeneration.from_pretrained(straight.final_model)
    assert straight.steps == 3 and resumed.last_loss == pytest.approx(straight.last_loss)
    assert initial.config.pruning_mode == "hard"
    processor = PhotonProcessor.from_pretrained(straight.final_model)
    assert len(processor.tokenizer) <= 300  # the compact tokenizer was saved with the model


def test_stage_one_trains_only_the_patch_embedding(tmp_path, dataset):
    config = recipe(dataset, tmp_path / "stage1", "stage=1", "max_steps=2", "model.tokenizer=qwen")
    from accelerate.utils import set_seed

    from photonlib.training.loop import build_model, load_examples, parameter_groups

    set_seed(config.seed)  # as train() does, so this model starts from the same weights
    model, _ = build_model(config, load_examples(config))
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    groups = parameter_groups(model, config)
    assert [g["name"] for g in groups] == ["vision"]
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"model.visual.patch_embed.proj.weight"}
    result = train(config)
    after = PhotonForConditionalGeneration.from_pretrained(result.final_model).state_dict()
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed == {"model.visual.patch_embed.proj.weight"}


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory) -> Path:
    """Six conspicuous-lesion phantoms (three with a lesion) with their label maps."""
    from photonlib.data.phantoms import make_phantoms

    return make_phantoms(tmp_path_factory.mktemp("phantoms"), 6, seed=3, profile="conspicuous").jsonl


def warmup_recipe(phantoms: Path, output: Path, *extra: str):
    return load_train_config(
        None,
        [
            "stage=0", "model.init=preset:tiny", "model.tokenizer=compact", "model.compact_vocab_size=300",
            "data.kind=phantoms", f"data.path={phantoms}", "data.preprocess=small", f"output_dir={output}",
            "max_steps=3", "batch_size=2", "vision_learning_rate=1e-3", "patch_embedding_learning_rate=1e-4", *extra,
        ],
    )  # fmt: skip


def test_token_lesion_labels_lie_on_the_lesion(phantoms):
    """The warm-up's labels, in the tower's token order, mark the token holding the lesion centre
    (through the model's own field of view, resampling and flip) and few others."""
    from photonlib.data import load_dataset
    from photonlib.model import PhotonConfig
    from photonlib.training.loop import TrainingExample
    from photonlib.training.vision_warmup import token_lesion_labels, warmup_volumes
    from photonlib.volume import PreprocessConfig, prepare_volume, read_volume

    samples = load_dataset("phantoms", phantoms).samples
    volumes = warmup_volumes([TrainingExample.from_sample(sample) for sample in samples])
    lesions = {Path(sample.volume): sample.extra["lesion"] for sample in samples}
    preprocess = PreprocessConfig.preset("small")
    config = PhotonConfig.from_preset("demo")
    grid = config.token_grid(preprocess.model_grid)
    assert grid == (8, 8, 8)
    checked = 0
    for entry in volumes:
        labels = token_lesion_labels(entry, preprocess, grid, 0.05)
        if entry.lesion_label is None:
            assert not labels.any()
            continue
        prepared = prepare_volume(read_volume(entry.volume), preprocess)
        i, j, k = prepared.geometry.lps_to_index(np.array([lesions[entry.volume]["centre_lps_mm"]]))[0]
        cells = [n // g for n, g in zip(preprocess.model_grid, grid)]  # model voxels per token along (D, H, W)
        t, h, w = (int(round(index)) // cell for index, cell in zip((k, j, i), cells))
        assert labels[(t * grid[1] + h) * grid[2] + w], entry.volume.name
        diameter_tokens = lesions[entry.volume]["diameter_mm"] / 45 + 2  # tokens are about 45 mm wide
        assert 1 <= labels.sum() <= diameter_tokens**3
        checked += 1
    assert checked == 3


def train_and_list_changed_weights(config):
    """Train ``config``; the result and the names of the weights that differ from the initial model."""
    from accelerate.utils import set_seed

    from photonlib.training.loop import build_model, load_examples

    set_seed(config.seed)
    before = build_model(config, load_examples(config))[0].state_dict()
    result = train(config)
    after = PhotonForConditionalGeneration.from_pretrained(result.final_model).state_dict()
    return result, {name for name in before if not torch.equal(before[name], after[name])}


def test_vision_warmup_trains_only_the_tower_and_resumes_exactly(tmp_path, phantoms):
    from photonlib.training.loop import WARMUP_HEAD_FILE

    config = warmup_recipe(phantoms, tmp_path / "straight")
    straight, changed = train_and_list_changed_weights(config)
    assert changed and all(name.startswith("model.visual.") for name in changed)
    assert "model.visual.patch_embed.proj.weight" in changed
    assert (tmp_path / "straight" / WARMUP_HEAD_FILE).is_file()

    interrupted = warmup_recipe(phantoms, tmp_path / "resumed", "save_every=2")
    train(interrupted)
    resumed = train(interrupted, resume=tmp_path / "resumed" / "checkpoints" / "step-0000002")
    first = PhotonForConditionalGeneration.from_pretrained(straight.final_model).state_dict()
    second = PhotonForConditionalGeneration.from_pretrained(resumed.final_model).state_dict()
    for name, tensor in first.items():
        assert torch.equal(tensor, second[name]), name


def test_token_composition_holds_the_lesion_and_its_organ(phantoms):
    """The anatomy targets: shares of each label per token, on the same grid as the lesion labels."""
    from photonlib.data import load_dataset
    from photonlib.data.phantoms import LABELS
    from photonlib.model import PhotonConfig
    from photonlib.training.loop import TrainingExample
    from photonlib.training.vision_warmup import token_label_composition, token_lesion_labels, warmup_volumes
    from photonlib.volume import PreprocessConfig

    samples = load_dataset("phantoms", phantoms).samples
    organs = {Path(sample.volume): sample.extra["lesion"]["organ"] for sample in samples if sample.extra["lesion"]}
    entries = warmup_volumes([TrainingExample.from_sample(sample) for sample in samples])
    preprocess = PreprocessConfig.preset("small")
    grid = PhotonConfig.from_preset("demo").token_grid(preprocess.model_grid)
    for entry in entries:
        composition = token_label_composition(entry, preprocess, grid, len(LABELS) + 1)
        assert composition.shape == (512, 11) and np.allclose(composition.sum(axis=1), 1.0)
        assert composition[:, LABELS["liver"]].sum() > 0  # every phantom has a liver in view
        if entry.lesion_label is None:
            assert composition[:, LABELS["lesion"]].sum() == 0
            continue
        assert entry.lesion_diameter_mm is not None and entry.lesion_diameter_mm >= 15
        core = int(np.argmax(composition[:, LABELS["lesion"]]))  # the token with most lesion
        assert token_lesion_labels(entry, preprocess, grid, 0.05)[core]
        assert composition[core, LABELS[organs[entry.volume]]] > 0  # the lesion sits in its organ


def test_vision_warmup_with_anatomy_and_diameter_heads_trains_only_the_tower(tmp_path, phantoms):
    config = warmup_recipe(phantoms, tmp_path / "heads", "vision_warmup.anatomy_weight=1", "vision_warmup.diameter_weight=1")
    result, changed = train_and_list_changed_weights(config)
    assert changed and all(name.startswith("model.visual.") for name in changed)
    assert math.isfinite(result.last_loss)


def test_vision_warmup_refuses_data_without_label_maps(tmp_path, dataset):
    config = load_train_config(
        None, ["stage=0", "model.init=preset:tiny", f"data.path={dataset}", "data.preprocess=tiny", f"output_dir={tmp_path}"]
    )
    with pytest.raises(ValueError, match="needs label maps"):
        train(config)


def test_grounding_loss_is_the_attention_share_on_lesion_tokens():
    from photonlib.training.loop import grounding_loss

    scores = torch.tensor([[1.0, 0.0, 2.0], [0.0, 0.0, 0.0], [3.0, 1.0, 1.0]])
    tokens = [np.array([True, True, False]), None, np.array([False, True, True])]
    share = [(math.e + 1) / (math.e + 1 + math.e**2), 2 * math.e / (math.e**3 + 2 * math.e)]
    clean = torch.tensor([False, False, False])
    expected = -(math.log(share[0]) + math.log(share[1])) / 3  # the lesion-free sample counts in the mean
    assert float(grounding_loss(scores, tokens, clean, 2.0)) == pytest.approx(2.0 * expected)
    excluded = torch.tensor([False, False, True])  # a perturbed sample adds nothing and does not count
    assert float(grounding_loss(scores, tokens, excluded, 1.0)) == pytest.approx(-math.log(share[0]) / 2)


def test_the_grounding_term_makes_its_keep_the_lesion(tmp_path, phantoms):
    """Same seed, same steps, a band that pushes every keep probability down: with the term the lesion
    tokens stay kept more than the others, clearly more than without it."""
    from photonlib.training.loop import WarmupVolume, build_model, load_examples, token_lesion_labels
    from photonlib.volume import prepare_volume, read_volume

    def run(name, weight):
        config = load_train_config(
            None,
            [
                "model.init=preset:tiny", "model.tokenizer=compact", "model.compact_vocab_size=300", "data.kind=phantoms",
                f"data.path={phantoms}", "data.preprocess=small", f"output_dir={tmp_path / name}", "max_steps=6",
                "batch_size=2", "learning_rate=1e-3", "scheduler_learning_rate=3e-2", "pruning.soft_from=0",
                "pruning.hard_from=1.0", "pruning.flip_from=null", "robustness_probability=0", "band_loss.low=0",
                "band_loss.high=0.1", "band_loss.weight=10", f"grounding_loss.weight={weight}",
            ],
        )  # fmt: skip
        return config, PhotonForConditionalGeneration.from_pretrained(train(config).final_model).eval()

    config, plain = run("plain", 0)
    _, grounded = run("grounded", 10)
    examples = load_examples(config)
    processor = build_model(config, examples)[1]
    grid = plain.config.token_grid(processor.preprocess.model_grid)
    lesion_examples = {example.volume: example for example in examples if example.lesion_label is not None}
    assert len(lesion_examples) == 3
    means = {"plain": [], "grounded": []}
    for volume, example in lesion_examples.items():
        tokens = torch.from_numpy(token_lesion_labels(WarmupVolume(volume, example.mask, example.lesion_label), processor.preprocess, grid, 0.05))
        inputs = processor([prepare_volume(read_volume(volume), processor.preprocess)], ["Describe the lesion."])
        for name, model in (("plain", plain), ("grounded", grounded)):
            with torch.no_grad():
                probability = model(**inputs, pruning_mode="soft").keep_probability[0]
            means[name].append(float(probability[tokens].mean() - probability[~tokens].mean()))
    assert np.mean(means["grounded"]) > np.mean(means["plain"]) + 0.05, means  # lesion tokens' lead over the others


def test_the_grounding_term_refuses_data_without_label_maps(tmp_path, dataset):
    with pytest.raises(ValueError, match="grounding_loss needs label maps"):
        train(recipe(dataset, tmp_path / "no-maps", "grounding_loss.weight=1"))


def test_stage_two_with_a_frozen_tower_leaves_it_as_initialised(tmp_path, dataset):
    config = recipe(dataset, tmp_path / "frozen", "freeze_vision=true", "max_steps=2")
    from accelerate.utils import set_seed

    from photonlib.training.loop import build_model, load_examples

    set_seed(config.seed)
    before = build_model(config, load_examples(config))[0].state_dict()
    after = PhotonForConditionalGeneration.from_pretrained(train(config).final_model).state_dict()
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed and not any(name.startswith("model.visual.") for name in changed)


def test_a_run_without_pruning_never_prunes_and_saves_the_model_unpruned(tmp_path, dataset):
    config = recipe(dataset, tmp_path / "unpruned", "pruning.enabled=false", "max_steps=2")
    assert [config.pruning.mode_at(step, 2) for step in (0, 1)] == ["none", "none"]
    result = train(config)
    assert PhotonForConditionalGeneration.from_pretrained(result.final_model).config.pruning_mode == "none"


def test_the_patch_embedding_gets_its_own_learning_rate(dataset, tmp_path):
    from photonlib.training.loop import build_model, load_examples, parameter_groups

    config = recipe(dataset, tmp_path, "vision_learning_rate=1e-3", "patch_embedding_learning_rate=1e-4")
    model, _ = build_model(config, load_examples(config))
    groups = {group["name"]: group for group in parameter_groups(model, config)}
    assert groups["patch_embedding"]["lr"] == 1e-4 and groups["vision"]["lr"] == 1e-3
    assert groups["patch_embedding"]["params"] == [model.model.visual.patch_embed.proj.weight]
    without = parameter_groups(model, recipe(dataset, tmp_path, "vision_learning_rate=1e-3"))
    assert "patch_embedding" not in {group["name"] for group in without}


def test_pruning_schedule_by_fraction_and_by_step():
    schedule = PruningSchedule(soft_from=0.3, hard_from=0.6)
    assert [schedule.mode_at(step, 10) for step in (0, 2, 3, 5, 6, 9)] == ["none", "none", "soft", "soft", "hard", "hard"]
    by_step = PruningSchedule(soft_from=4000, hard_from=8000)
    assert [by_step.mode_at(step, 10000) for step in (3999, 4000, 8000)] == ["none", "soft", "hard"]


def test_example_recipes_parse():
    for path in CONFIGS.glob("*.yaml"):
        config = load_train_config(path)
        assert config.max_steps >= 1, path
    stage2 = load_train_config(CONFIGS / "3d-rad-stage2-8gpu.yaml")
    assert stage2.learning_rate == 1e-5 and stage2.vision_learning_rate == 5e-6 and stage2.mixed_precision == "bf16"


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["stage=3"], "stage"),
        (["max_steps=0"], "at least 1"),
        (["learning_rte=1"], "unknown setting"),
        (["pruning.soon=1"], "unknown setting"),
        (["learning_rate=fast"], "must be a number"),
        (["no-equals-sign"], "key=value"),
        (["stage=1", "freeze_vision=true"], "stage 2 only"),
        (["vision_warmup.lesion_fraction=0"], "lesion_fraction"),
        (["grounding_loss.weight=-1"], "grounding_loss.weight"),
        (["vision_warmup.anatomy_weight=-1"], "anatomy_weight"),
        (["vision_warmup.anatomy_classes=1"], "anatomy_classes"),
        (["stage=0", "grounding_loss.weight=1"], "stage 2 only"),
    ],
)
def test_bad_recipes_are_refused(overrides, message):
    with pytest.raises(ValueError, match=message):
        load_train_config(None, overrides)


def test_cli_bad_config_exits_2(tmp_path):
    (tmp_path / "bad.yaml").write_text("stage: [unclosed\n")
    result = subprocess.run([str(PHOTON), "train", "--config", str(tmp_path / "bad.yaml")], capture_output=True, text=True, env=dict(os.environ))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("photon train: error:")
    assert "not valid YAML" in result.stderr


# ----------------------------------------------------------------------------- the released training recipe
def test_schedule_counts_forward_passes_per_process_and_has_a_flip_phase():
    """Released: none / soft / hard / flip at 4k / 8k / 9k forward passes of each process."""
    schedule = PruningSchedule(soft_from=4000, hard_from=8000, flip_from=9000)
    # 2 micro-batches a step: step 2000 is forward pass 4000.
    at, length = schedule.position(2000, 0, 5000, 2)
    assert (at, length) == (4000, 10000) and schedule.mode_at(at, length) == "soft"
    assert schedule.mode_at(*schedule.position(1999, 1, 5000, 2)) == "none"
    assert schedule.flipping_at(*schedule.position(4500, 0, 5000, 2)) and not schedule.flipping_at(8999, 10000)
    by_steps = PruningSchedule(soft_from=4000, hard_from=8000, counted_in="optimizer_steps")
    assert by_steps.mode_at(*by_steps.position(2000, 0, 5000, 2)) == "none"
    assert not PruningSchedule(flip_from=None).flipping_at(10, 10)
    with pytest.raises(ValueError, match="counted_in"):
        PruningSchedule(counted_in="epochs")


def test_perturbations_are_the_releases_six_kinds_on_the_patches():
    from photonlib.training.loop import PERTURBATIONS, perturb_patches

    assert sum(probability for _, probability in PERTURBATIONS) == pytest.approx(1.0)
    patches = torch.arange(1, 8 * 27 + 1, dtype=torch.float32).view(8, 27) / 300
    seen = set()
    for seed in range(200):
        out = perturb_patches(patches, torch.Generator().manual_seed(seed))
        assert out.shape == patches.shape
        if torch.equal(out, torch.zeros_like(patches)):
            seen.add("zeros")
        elif torch.equal(torch.sort(out.flatten()).values, patches.flatten()):
            rows_kept = all(any(torch.equal(row, other) for other in patches) for row in out)
            seen.add("shuffle patches" if rows_kept else "shuffle patches and voxels")
        elif bool((out == 0).all(dim=1).any()) and bool(((out == 0) | (out == patches)).all()) and not bool((out == 0).all(dim=0).any()):
            seen.add("keep 20% of patches")
        elif bool(((out == 0) | (out == patches)).all()):
            seen.add("keep 10% of voxel positions")
        else:
            seen.add("uniform noise")
    assert seen == {name for name, _ in PERTURBATIONS}


def test_band_loss_per_sample_on_clean_samples_only():
    from photonlib.training.loop import band_loss

    config = load_train_config(None, [])
    probability = torch.tensor([[0.9, 0.9], [0.1, 0.1]])  # keep ratios 0.9 and 0.1: both outside [0.3, 0.8]
    assert float(band_loss(probability, config)) == pytest.approx((0.1 + 0.2) / 2)  # per sample, then the mean
    config.band_loss.per_sample = False
    assert float(band_loss(probability, config)) == 0.0  # the batch mean 0.5 is inside the band
    config.band_loss.per_sample = True
    assert float(band_loss(probability, config, torch.tensor([False, True]))) == pytest.approx(0.1)
    assert band_loss(probability, config, torch.tensor([True, True])) is None


def test_flipped_samples_learn_not_to_answer_from_the_wrong_tokens():
    from photonlib.training.loop import answer_losses

    logits = torch.log(torch.tensor([[[0.7, 0.2, 0.1], [0.7, 0.2, 0.1]]]))
    labels = torch.tensor([[-100, 0]])
    clean = answer_losses(logits, labels, None, torch.tensor([False]), torch.tensor([False]))
    flipped = answer_losses(logits, labels, None, torch.tensor([False]), torch.tensor([True]))
    assert float(clean) == pytest.approx(-math.log(0.7), rel=1e-5)
    assert float(flipped) == pytest.approx(-math.log(1 - 0.7 + 1e-6), rel=1e-5)


def test_optimizer_settings_are_the_releases(tmp_path, dataset):
    from photonlib.training.loop import build_model, load_examples, parameter_groups

    config = recipe(dataset, tmp_path)
    assert (config.weight_decay, config.adam_beta2, config.robustness_probability) == (0.1, 0.95, 0.15)
    model, _ = build_model(config, load_examples(config))
    groups = parameter_groups(model, config)
    by_parameter = {id(p): group for group in groups for p in group["params"]}
    merger = model.model.visual.merger.mlp[0].weight
    assert by_parameter[id(merger)]["name"] == "language"  # the merger learns at the language rate
    assert by_parameter[id(model.model.visual.blocks[0].mlp.gate_proj.weight)]["name"] == "vision"
    assert by_parameter[id(model.model.language_model.layers[0].self_attn.q_proj.bias)]["weight_decay"] == 0.0
    assert by_parameter[id(model.model.language_model.norm.weight)]["weight_decay"] == 0.0
    assert by_parameter[id(model.model.language_model.layers[0].self_attn.q_proj.weight)]["weight_decay"] == 0.1


def test_the_3d_rad_recipe_has_the_releases_global_batch():
    config = load_train_config(CONFIGS / "3d-rad-stage2-8gpu.yaml")
    assert config.batch_size * config.gradient_accumulation_steps * 8 == 16
    assert (config.pruning.soft_from, config.pruning.hard_from, config.pruning.flip_from) == (4000, 8000, 9000)
    assert config.pruning.counted_in == "forward_passes"


def test_the_demo_recipe_keeps_one_step_temporal_positions():
    """The release's video spacing (14 per depth step with 7^3 patches) leaves the 4-layer demo at chance."""
    config = load_train_config(CONFIGS / "phantom-demo-warmup.yaml")
    assert "volume_fps" in config.model.overrides and config.model.overrides["volume_fps"] is None
