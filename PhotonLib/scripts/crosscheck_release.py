"""Cross-check PhotonLib against the authors' own Photon-S2 modeling code.

Same tiny random weights, same volume, same question: does PhotonLib, loading the checkpoint with
``photon convert --from released``, keep the same visual tokens and give the same logits as the
release's ``swift/photon/modeling_photon_s2.py`` on the transformers release it pins?

Two processes, one per virtual environment:

1. the release side (``crosscheck_release_side.py``, run with ``--release-python``: a virtual
   environment with transformers 4.51.3, see below) builds a tiny Photon-S2 with seeded random
   weights from the release's own classes, saves it in the release's checkpoint layout, and
   records the patches, prompt ids, M-RoPE positions, ITS scores, threshold, keep probabilities,
   keep decisions, prefill logits and generated tokens for one synthetic volume and question;
2. this process (PhotonLib's environment) converts that checkpoint with
   ``photonlib.model.conversion.convert_released_checkpoint``, builds the same input with
   ``PhotonProcessor`` and compares everything, float32 on both sides (``--dtype bfloat16``
   compares the bf16 path too).

Without a release checkout it prints why it skipped and exits 0. Exit 1 when the two disagree
beyond the tolerances, 2 when it cannot run (no release environment, broken checkout).

The release environment (Python 3.11; no ms-swift needed, the modeling file is loaded alone)::

    python3.11 -m venv /tmp/venv-release
    /tmp/venv-release/bin/pip install torch==2.13.0
    /tmp/venv-release/bin/pip install transformers==4.51.3 safetensors numpy pillow

or let this script make it: ``--make-venv /tmp/venv-release``. Then::

    git clone https://github.com/alibaba-damo-academy/Photon /tmp/photon-release
    .venv/bin/python PhotonLib/scripts/crosscheck_release.py /tmp/photon-release \\
        --release-python /tmp/venv-release/bin/python

Results on the development machine: docs/model.md, "Cross-check against the release".
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
RELEASE_SIDE = HERE / "crosscheck_release_side.py"
RELEASE_TRANSFORMERS = "4.51.3"  # requirements/framework.txt of the Photon repository
DEFAULT_QUESTION = "Is there a lesion in the liver?"
#: An embedding row no tokenizer id maps to: both sides decode exactly --new-tokens tokens.
UNUSED_STOP_ID = 151935


def synthetic_volume(shape: tuple[int, int, int], seed: int) -> np.ndarray:
    """A (D, H, W) volume in [0, 1]: smooth background, a bright ellipsoid and a dark one, some noise."""
    rng = np.random.default_rng(seed)
    d, h, w = shape
    z, y, x = np.meshgrid(np.linspace(-1, 1, d), np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    volume = 0.3 + 0.1 * np.sin(3 * x + 1) * np.cos(2 * y) + 0.05 * z
    volume += 0.5 * (((z - 0.2) / 0.4) ** 2 + ((y + 0.3) / 0.3) ** 2 + ((x - 0.4) / 0.25) ** 2 < 1)
    volume -= 0.2 * (((z + 0.4) / 0.3) ** 2 + ((y - 0.4) / 0.2) ** 2 + ((x + 0.3) / 0.3) ** 2 < 1)
    volume += 0.05 * rng.standard_normal(shape)
    volume = (volume - volume.min()) / (volume.max() - volume.min())
    return volume.astype(np.float32)


def make_release_venv(folder: Path) -> Path:
    """The release's environment: torch 2.13.0 (CPU here), transformers 4.51.3 and what the modeling file imports."""
    python = folder / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)
    pip = [str(python), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "torch==2.13.0"], check=True)
    subprocess.run([*pip, f"transformers=={RELEASE_TRANSFORMERS}", "safetensors", "numpy", "pillow"], check=True)
    return python


def run_release_side(args: argparse.Namespace, python: str, volume_file: Path, out: Path) -> dict:
    from photonlib.model.processing import bundled_qwen_tokenizer_folder

    command = [
        python, str(RELEASE_SIDE), "--checkout", str(args.checkout), "--tokenizer", str(bundled_qwen_tokenizer_folder()),
        "--volume", str(volume_file), "--question", args.question, "--out", str(out), "--layers", str(args.layers),
        "--seed", str(args.seed), "--weight-std", str(args.weight_std), "--new-tokens", str(args.new_tokens),
        "--eos-token-id", str(UNUSED_STOP_ID), "--threads", str(args.threads), "--dtype", args.dtype,
    ]  # fmt: skip
    environment = dict(os.environ, OMP_NUM_THREADS=str(args.threads), TOKENIZERS_PARALLELISM="false")
    done = subprocess.run(command, capture_output=True, text=True, env=environment)
    if done.returncode != 0:
        raise RuntimeError(f"the release side failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
    return json.loads((out / "release_outputs.json").read_text())


def convert(checkpoint: Path, destination: Path, notes: list[str]) -> Path:
    """The release's checkpoint as a PhotonLib model folder, exactly as a user converts it."""
    from photonlib.model.conversion import convert_released_checkpoint

    convert_released_checkpoint(checkpoint, destination, overwrite=True)
    return destination


def max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max()) if a.numel() else 0.0


def compare(args: argparse.Namespace, release: dict, tensors: dict, folder: Path, volume: np.ndarray) -> dict:
    from photonlib.model import PhotonForConditionalGeneration, PhotonProcessor
    from photonlib.model.decoding import DecodingSettings
    from photonlib.model.positions import build_position_ids
    from photonlib.model.tokens import merged_grids

    dtype = getattr(torch, args.dtype)
    from photonlib.model.transformers_adapter import quiet_loading

    with quiet_loading():
        model = PhotonForConditionalGeneration.from_pretrained(folder).to(dtype).eval()
    processor = PhotonProcessor.from_pretrained(folder)
    config = model.config
    batch = processor([volume], [args.question])
    ids_equal = torch.equal(batch["input_ids"], tensors["input_ids"])
    input_ids = tensors["input_ids"]  # the same ids on both sides, even if the processors disagree
    attention_mask = torch.ones_like(input_ids)
    grid = batch["video_grid_thw"]
    positions = build_position_ids(
        input_ids, attention_mask, merged_grids(grid, config.spatial_merge_size), config.video_token_id,
        config.temporal_position_scale,
    )  # fmt: skip

    recorded: dict[str, torch.Tensor] = {}

    def record(module, inputs, output):
        recorded["raw_scores"] = inputs[0].detach().float()[0]
        recorded["threshold"] = output.detach().float().reshape(1)

    hook = model.model.language_model.token_scheduler.register_forward_hook(record)
    with torch.no_grad():
        output = model(
            input_ids, attention_mask, pixel_values=batch["pixel_values"], video_grid_thw=grid, use_cache=True
        )
    hook.remove()
    keep_probability = output.keep_probability[0].float()
    keep = output.keep_mask[0]
    release_keep = tensors["keep"].bool()
    release_p = tensors["keep_probability"].float()

    generations = {}
    for name, decoding in (("greedy", DecodingSettings()), ("generation_config", DecodingSettings.from_folder(folder))):
        with torch.no_grad():
            generated = model.generate(
                input_ids, attention_mask, pixel_values=batch["pixel_values"], video_grid_thw=grid,
                max_new_tokens=args.new_tokens, decoding=decoding, eos_token_id=UNUSED_STOP_ID,
            )  # fmt: skip
        generations[name] = generated.sequences[0].tolist()

    # Control: the same model with one-step temporal positions (as models saved before volume_fps), to
    # show the check sees a difference that matters.
    config.volume_fps = None
    with torch.no_grad():
        control = model(input_ids, attention_mask, pixel_values=batch["pixel_values"], video_grid_thw=grid)
    config.volume_fps = release["fps"]
    control_keep = control.keep_mask[0].cpu()

    pruned_logits = output.logits[0].float()
    same_length = pruned_logits.shape == tensors["pruned_logits"].shape
    return {
        "photonlib_config": {
            "its_layer": config.its_layer,
            "volume_fps": config.volume_fps,
            "temporal_position_scale": config.temporal_position_scale,
            "its_score_precision": config.its_score_precision,
            "attn_implementation": config._attn_implementation,
            "dtype": args.dtype,
        },
        "input_ids_equal": ids_equal,
        "prompt_length": int(input_ids.shape[1]),
        "max_abs_pixel_difference": max_abs(batch["pixel_values"], tensors["pixel_values_videos"]),
        "video_grid_equal": torch.equal(grid, tensors["video_grid_thw"]),
        "position_ids_equal": torch.equal(positions, tensors["position_ids"]),
        "visual_tokens": int(release_keep.numel()),
        "kept_release": int(release_keep.sum()),
        "kept_photonlib": int(keep.sum()),
        "kept_sets_equal": torch.equal(keep.cpu(), release_keep),
        "kept_disagreements": int((keep.cpu() != release_keep).sum()),
        "max_abs_raw_score_difference": max_abs(recorded["raw_scores"], tensors["raw_scores"]),
        "threshold_release": float(tensors["threshold"]),
        "threshold_photonlib": float(recorded["threshold"]),
        "max_abs_keep_probability_difference": max_abs(keep_probability, release_p),
        "closest_probability_to_half": float((release_p - 0.5).abs().min()),
        "max_abs_last_logit_difference": max_abs(pruned_logits[-1], tensors["last_logits"]),
        "max_abs_logit": float(tensors["last_logits"].abs().max()),
        "same_argmax": int(pruned_logits[-1].argmax()) == int(tensors["last_logits"].argmax()),
        "max_abs_pruned_logit_difference": max_abs(pruned_logits, tensors["pruned_logits"]) if same_length else None,
        "control_one_step_positions": {
            "kept": int(control_keep.sum()),
            "kept_disagreements": int((control_keep != release_keep).sum()),
            "max_abs_keep_probability_difference": max_abs(control.keep_probability[0].float(), release_p),
            "max_abs_last_logit_difference": max_abs(control.logits[0, -1].float(), tensors["last_logits"]),
        },
        "generations_release": release["generations"],
        "generations_photonlib": generations,
        "generations_equal": {name: generations[name] == release["generations"][name] for name in generations},
    }


def verdict(result: dict, args: argparse.Namespace) -> list[str]:
    """The checks that failed (empty: the two agree within the tolerances)."""
    failures = []
    for key in ("input_ids_equal", "video_grid_equal", "position_ids_equal", "kept_sets_equal", "same_argmax"):
        if not result[key]:
            failures.append(key)
    if result["max_abs_pixel_difference"] > 0:
        failures.append("pixel values differ")
    if result["max_abs_keep_probability_difference"] > args.probability_tolerance:
        failures.append(f"max |dp| {result['max_abs_keep_probability_difference']:.3g} > {args.probability_tolerance}")
    if result["max_abs_last_logit_difference"] > args.logit_tolerance:
        failures.append(f"max |dlogit| {result['max_abs_last_logit_difference']:.3g} > {args.logit_tolerance}")
    if args.dtype == "float32":
        failures += [f"{name} tokens differ" for name, same in result["generations_equal"].items() if not same]
    return failures


def report(result: dict, release: dict, notes: list[str], failures: list[str]) -> str:
    lines = [
        f"release side: transformers {release['transformers']}, torch {release['torch']}, Python {release['python']}; "
        f"{release['layers']} decoder layers, ITS after layer {release['its_layer']}, seed {release['seed']}",
        f"PhotonLib: {json.dumps(result['photonlib_config'])}",
        f"volume grid {release['video_grid_thw']} patches -> {result['visual_tokens']} visual tokens; "
        f"prompt {result['prompt_length']} ids",
        f"input ids equal: {result['input_ids_equal']}; pixel values max |d| {result['max_abs_pixel_difference']:.3g}; "
        f"M-RoPE position ids equal: {result['position_ids_equal']}",
        f"kept: release {result['kept_release']}, PhotonLib {result['kept_photonlib']} of {result['visual_tokens']}; "
        f"same set: {result['kept_sets_equal']} ({result['kept_disagreements']} tokens differ)",
        f"raw ITS scores max |d| {result['max_abs_raw_score_difference']:.3g}; threshold release "
        f"{result['threshold_release']:.7f}, PhotonLib {result['threshold_photonlib']:.7f}",
        f"keep probability max |d| {result['max_abs_keep_probability_difference']:.3g} "
        f"(closest release p to 0.5: {result['closest_probability_to_half']:.3g} away)",
        f"last-position logits max |d| {result['max_abs_last_logit_difference']:.3g} (largest |logit| "
        f"{result['max_abs_logit']:.3g}); same argmax: {result['same_argmax']}; all pruned positions max |d| "
        f"{result['max_abs_pruned_logit_difference']}",
    ]
    for name, same in result["generations_equal"].items():
        lines.append(
            f"{name} tokens: equal {same}; release {result['generations_release'][name]}, "
            f"PhotonLib {result['generations_photonlib'][name]}"
        )
    control = result["control_one_step_positions"]
    lines.append(
        f"control, PhotonLib with one-step temporal positions (volume_fps null, as models saved before that field): kept "
        f"{control['kept']} ({control['kept_disagreements']} tokens differ from the release), keep probability max |d| "
        f"{control['max_abs_keep_probability_difference']:.3g}, last-position logits max |d| "
        f"{control['max_abs_last_logit_difference']:.3g}"
    )
    lines += notes
    if failures:
        lines.append("DISAGREE: " + "; ".join(failures))
    elif result["photonlib_config"]["dtype"] == "float32":
        lines.append("AGREE")
    else:
        lines.append("AGREE within the bfloat16 tolerances (generated tokens are reported, not required to match)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkout", nargs="?", help="checkout of alibaba-damo-academy/Photon (absent: skip)")
    parser.add_argument("--release-python", help="python of the release environment (transformers 4.51.3)")
    parser.add_argument("--make-venv", type=Path, help="create (or complete) the release environment in this folder")
    parser.add_argument(
        "--workdir", type=Path, help="keep the checkpoints and outputs here (default: a temporary folder)"
    )
    parser.add_argument("--question", default=DEFAULT_QUESTION)
    parser.add_argument("--shape", type=int, nargs=3, default=(56, 168, 168), metavar=("D", "H", "W"))
    parser.add_argument("--layers", type=int, default=8, help="decoder layers (ITS after int(L/4) - 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--weight-std", type=float, default=0.15)
    parser.add_argument("--new-tokens", type=int, default=8)
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--probability-tolerance", type=float, help="max |dp| (default 1e-5; bfloat16: 0.05)")
    parser.add_argument("--logit-tolerance", type=float, help="max |dlogit| (default 1e-4; bfloat16: 0.25)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the figures as JSON")
    args = parser.parse_args(argv)
    # bf16 rounding differs between the two implementations' kernels: each side alone moves by
    # about 0.15 in the logits between float32 and bf16 here, so bf16 is held to that noise level
    # and its generated tokens (random weights: near-ties) are reported, not required to match.
    bf16 = args.dtype == "bfloat16"
    if args.probability_tolerance is None:
        args.probability_tolerance = 0.05 if bf16 else 1e-5
    if args.logit_tolerance is None:
        args.logit_tolerance = 0.25 if bf16 else 1e-4

    if not args.checkout:
        print("crosscheck_release: skipped, no release checkout given (pass a checkout of alibaba-damo-academy/Photon)")
        return 0
    args.checkout = Path(args.checkout).resolve()
    if not (args.checkout / "swift" / "photon" / "modeling_photon_s2.py").exists():
        print(f"crosscheck_release: {args.checkout} has no swift/photon/modeling_photon_s2.py", file=sys.stderr)
        return 2
    python = args.release_python or os.environ.get("PHOTON_RELEASE_PYTHON")
    if args.make_venv:
        python = str(make_release_venv(args.make_venv))
    if not python:
        print(
            "crosscheck_release: no release environment: pass --release-python (a venv with "
            f"transformers=={RELEASE_TRANSFORMERS}) or --make-venv DIR",
            file=sys.stderr,
        )
        return 2
    torch.set_num_threads(args.threads)

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="photon-crosscheck-"))
    workdir.mkdir(parents=True, exist_ok=True)
    volume = synthetic_volume(tuple(args.shape), args.seed)
    volume_file = workdir / "volume.npy"
    np.save(volume_file, volume)
    try:
        release = run_release_side(args, python, volume_file, workdir / "release")
    except RuntimeError as error:
        print(f"crosscheck_release: {error}", file=sys.stderr)
        return 2

    from safetensors.torch import load_file

    tensors = load_file(str(workdir / "release" / "release_outputs.safetensors"))
    notes: list[str] = []
    folder = convert(Path(release["checkpoint"]), workdir / "photonlib", notes)
    result = compare(args, release, tensors, folder, volume)
    failures = verdict(result, args)
    print(report(result, release, notes, failures))
    if args.json:
        args.json.write_text(
            json.dumps({"release": release, "result": result, "notes": notes, "failures": failures}, indent=2)
        )
    if not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
