"""``photon train`` under two processes (DDP over gloo, on the CPU): the same weights as one process
on the same global batch, and an exact resume.

Two processes with ``batch_size=1`` each against one process with ``batch_size=2``: the same
global batches, samples, perturbation and flip draws. The recipe goes through every phase (no
pruning, soft, hard with flips), perturbs and flips half the samples and accumulates two micro-steps,
and its answers have different token counts (8 and 3), so a process's own mean would weigh its
tokens wrongly.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from photonlib.errors import PhotonEnvironmentError
from photonlib.model import PhotonForConditionalGeneration
from photonlib.training import load_train_config, train

from support.volumes import question_dataset

ACCELERATE = Path(sys.executable).with_name("accelerate")
LAUNCH_TIMEOUT_S = 240  # a run takes about 10 s on two busy cores; never hang the suite
# Float32 with another summation order (the batch of two in one matmul against two gradients
# summed by the all-reduce) differs by about 1e-7 relative in the gradients; Adam turns that into
# at most a few 1e-6 on weights whose gradients are near its epsilon (1e-8). Observed: 1.5e-6
# after three steps. A real disagreement (a per-process mean, a schedule stepped per process, a
# draw per rank) moves weights by a sizeable part of a step (learning rate 1e-3; the last step's
# 2.5e-4, which the test checks to be well above the tolerance).
WEIGHT_TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """Four small CT-like volumes; the answers have different lengths."""
    return question_dataset(tmp_path_factory.mktemp("distributed-data"), ["Yes" if index % 2 else "No abnormality" for index in range(4)])


def settings(dataset: Path, output: Path, batch_size: int) -> list[str]:
    return [
        "model.init=preset:tiny", "model.tokenizer=compact", "model.compact_vocab_size=300",
        "data.kind=jsonl", f"data.path={dataset}", "data.preprocess=tiny", f"output_dir={output}",
        "max_steps=3", f"batch_size={batch_size}", "gradient_accumulation_steps=2", "save_every=2",
        "learning_rate=1e-3", "warmup_ratio=0",
        # Forward passes 0 (none), 1 (soft), 2-5 (hard), flips from 4.
        "pruning.soft_from=1", "pruning.hard_from=2", "pruning.flip_from=4", "pruning.flip_probability=0.5",
        "robustness_probability=0.5",
    ]  # fmt: skip


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch_two(overrides: list[str], *extra: str) -> dict:
    """``photon train`` in two CPU processes; the printed result."""
    command = [
        str(ACCELERATE), "launch", "--multi_gpu", "--num_processes", "2", "--main_process_port", str(free_port()),
        "-m", "photonlib.cli.main", "train", "--config", os.devnull, *overrides, *extra,
    ]  # fmt: skip
    # ACCELERATE_USE_CPU: without GPUs accelerate would run the two processes unaware of each other.
    environment = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=LAUNCH_TIMEOUT_S, env=environment)
    except subprocess.TimeoutExpired as error:
        raise AssertionError(f"two-process training did not finish in {LAUNCH_TIMEOUT_S} s:\n{error.stderr}") from None
    assert done.returncode == 0, done.stderr[-4000:]
    decoder, results, position = json.JSONDecoder(), [], done.stdout.find("{")
    while position >= 0:  # every process prints its result (one JSON object each)
        result, end = decoder.raw_decode(done.stdout, position)
        results.append(result)
        position = done.stdout.find("{", end)
    assert len(results) == 2 and results[0] == results[1] | {"samples_per_second": results[0]["samples_per_second"]}, done.stdout
    return results[0]


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return PhotonForConditionalGeneration.from_pretrained(folder).state_dict()


def test_two_processes_train_what_one_trains_and_resume_exactly(tmp_path, dataset):
    one = train(load_train_config(None, settings(dataset, tmp_path / "one", batch_size=2)))
    two = launch_two(settings(dataset, tmp_path / "two", batch_size=1))

    expected, straight = weights(one.final_model), weights(Path(two["final_model"]))
    assert two["last_loss"] == pytest.approx(one.last_loss, abs=1e-4)  # the global batch's loss, not a process's
    assert two["mean_keep_ratio"] == pytest.approx(one.mean_keep_ratio)
    for name, tensor in expected.items():
        torch.testing.assert_close(straight[name], tensor, rtol=0, atol=WEIGHT_TOLERANCE, msg=lambda m, name=name: f"{name}: {m}")
    # The last step alone moved the weights by far more than the tolerance (its rate: a quarter of 1e-3).
    checkpoints = tmp_path / "two" / "checkpoints"
    at_step_two = weights_at(checkpoints / "step-0000002")
    assert max(float((expected[name] - at_step_two[name]).abs().max()) for name in at_step_two) > 10 * WEIGHT_TOLERANCE

    # Forget everything after step 2, then resume from the step-2 checkpoint, still in two processes.
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step-0000002", "step-0000003"]
    shutil.rmtree(checkpoints / "step-0000003")
    shutil.rmtree(tmp_path / "two" / "final")
    resumed = launch_two(settings(dataset, tmp_path / "two", batch_size=1), "--resume", str(checkpoints / "step-0000002"))
    for name, tensor in weights(Path(resumed["final_model"])).items():
        assert torch.equal(tensor, straight[name]), name
    assert resumed["last_loss"] == two["last_loss"]


def weights_at(checkpoint: Path) -> dict[str, torch.Tensor]:
    """The model weights accelerate saved in a checkpoint (safetensors, keys as in the model)."""
    from safetensors.torch import load_file

    return load_file(checkpoint / "model.safetensors")


def test_processes_launched_together_but_running_alone_are_refused(monkeypatch):
    """Without a device accelerate runs each of the launched processes alone: refuse, with the fix."""
    from photonlib.training.loop import _check_world

    class Alone:
        num_processes = 1

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(PhotonEnvironmentError, match="ACCELERATE_USE_CPU=1"):
        _check_world(Alone())
    monkeypatch.setenv("WORLD_SIZE", "1")
    _check_world(Alone())
