"""The release side of ``crosscheck_release.py``: run the authors' own Photon-S2 modeling code.

Runs in a SEPARATE virtual environment with the transformers release the Photon repository
pins (``requirements/framework.txt``: ``transformers==4.51.3``); it imports neither photonlib
nor ms-swift. From a checkout of ``alibaba-damo-academy/Photon`` it loads
``swift/photon/modeling_photon_s2.py`` (with its ``utils.py`` and ``patcher.py``) as a package,
builds a tiny Photon-S2 with seeded random weights, saves it in the release's checkpoint layout
(``config.json`` + ``model.safetensors`` + tokenizer files + ``generation_config.json``), and
records what the release computes for one synthetic volume and one question:

* the patches, from transformers 4.51.3's ``Qwen2VLImageProcessor`` configured by the release's
  ``configs/preprocessor_config.json`` and called as its Photon template calls it
  (``do_resize/do_rescale/do_normalize=False``), fed at FPS=1 (``second_per_grid_ts`` 14);
* the prompt ids, tokenized piece by piece as ms-swift's ``qwen2_5_vl`` chat template does
  (default system prompt, ``<video>`` before the question);
* the ITS inputs (``vision_mask``, ``question_mask``) from the release's ``build_its_kwargs``;
* the raw visual scores, threshold, keep probabilities and keep decisions of the ITS layer,
  the last-position logits of the prefill, and greedy / generation-config tokens from the
  release's ``generate``.

The released model runs only with ``attn_implementation="flash_attention_2"`` (only that
attention class accepts the ITS keywords and has ``atp_forward``). flash-attn cannot be built
without CUDA, so the flash kernel is replaced by :func:`sdpa_flash_attention_forward`, the same
attention (causal, bottom-right aligned as flash-attn >= 2.1, key padding masked) in plain
PyTorch. The vision tower uses the release's own SDPA attention class.

Usage (normally started by crosscheck_release.py)::

    python crosscheck_release_side.py --checkout PHOTON --tokenizer TOKENIZER_DIR --volume vol.npy \
        --question "Is there a lesion in the liver?" --out WORKDIR
"""

from __future__ import annotations

import argparse
import importlib
import json
import shutil
import sys
import types
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

RELEASE_PACKAGE = "photon_release"
MODELING = "swift/photon/modeling_photon_s2.py"

#: Qwen2.5-VL-3B-Instruct's generation_config.json (the released Photon decodes with it).
RELEASE_GENERATION_CONFIG = {
    "bos_token_id": 151643,
    "pad_token_id": 151643,
    "do_sample": True,
    "eos_token_id": [151645, 151643],
    "repetition_penalty": 1.05,
    "temperature": 0.1,
    "top_p": 0.001,
    "top_k": 1,
}


def tiny_release_config(layers: int, tokens_per_second: int = 2) -> dict:
    """A tiny config.json in the release's own layout (configs/config.json, shapes shrunk)."""
    return {
        "architectures": ["Qwen2_5_VLForConditionalGeneration"],
        "attention_dropout": 0.0,
        "bos_token_id": 151643,
        "eos_token_id": 151645,
        "vision_start_token_id": 151652,
        "vision_end_token_id": 151653,
        "vision_token_id": 151654,
        "image_token_id": 151655,
        "video_token_id": 151656,
        "hidden_act": "silu",
        "hidden_size": 64,
        "initializer_range": 0.02,
        "intermediate_size": 128,
        "max_position_embeddings": 128000,
        "max_window_layers": 70,
        "model_type": "qwen2_5_vl",
        "num_attention_heads": 4,
        "num_hidden_layers": layers,
        "num_key_value_heads": 2,
        "rms_norm_eps": 1e-06,
        "rope_theta": 1000000.0,
        "sliding_window": 32768,
        "tie_word_embeddings": True,
        "torch_dtype": "float32",
        "use_cache": True,
        "use_sliding_window": False,
        "vision_config": {
            "depth": 2,
            "hidden_act": "silu",
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "in_chans": 1,
            "out_hidden_size": 64,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "spatial_patch_size": 14,
            "window_size": 112,
            "fullatt_block_indexes": [1],
            "tokens_per_second": tokens_per_second,  # the released config.json's
            "temporal_patch_size": 14,
        },
        "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]},
        "vocab_size": 151936,
    }


def sdpa_flash_attention_forward(
    query_states, key_states, value_states, attention_mask, query_length, is_causal=True, dropout=0.0,
    sliding_window=None, use_top_left_mask=False, softmax_scale=None, **_unused,
):  # fmt: skip
    """transformers' ``_flash_attention_forward`` contract in plain PyTorch (no flash-attn here).

    Inputs (B, L, H, D) as flash-attn takes them; ``attention_mask`` None or a 2D (B, Lk) padding
    mask (1 = real). Causal masking is bottom-right aligned (flash-attn >= 2.1), so a single
    decoding query sees every cached key. Padded query rows come back as zeros, as flash-attn's
    unpad / pad does.
    """
    if sliding_window is not None:
        raise NotImplementedError("sliding-window attention is off in every Photon config")
    query = query_states.transpose(1, 2)
    key = key_states.transpose(1, 2)
    value = value_states.transpose(1, 2)
    q_len, k_len = query.shape[2], key.shape[2]
    allowed = torch.ones((q_len, k_len), dtype=torch.bool, device=query.device)
    if is_causal and not (use_top_left_mask and q_len == 1):
        offset = k_len - q_len
        allowed = torch.arange(k_len, device=query.device)[None, :] <= (
            torch.arange(q_len, device=query.device)[:, None] + offset
        )
    allowed = allowed[None, None].expand(query.shape[0], 1, q_len, k_len)
    if attention_mask is not None:
        real = attention_mask.bool()
        allowed = allowed & real[:, None, None, -k_len:]
    output = F.scaled_dot_product_attention(query, key, value, attn_mask=allowed, dropout_p=0.0, scale=softmax_scale)
    if attention_mask is not None:
        output = output * attention_mask[:, None, -q_len:, None].to(output.dtype)
    return output.transpose(1, 2).contiguous()


def load_release_modeling(checkout: Path):
    """``swift/photon`` as a package (modeling_photon_s2 + its utils and patcher), without ms-swift."""
    folder = checkout / "swift" / "photon"
    if not (checkout / MODELING).exists():
        raise FileNotFoundError(f"{checkout} has no {MODELING}: not a checkout of alibaba-damo-academy/Photon")
    package = types.ModuleType(RELEASE_PACKAGE)
    package.__path__ = [str(folder)]
    sys.modules[RELEASE_PACKAGE] = package
    modeling = importlib.import_module(f"{RELEASE_PACKAGE}.modeling_photon_s2")
    utils = importlib.import_module(f"{RELEASE_PACKAGE}.utils")
    if not hasattr(modeling, "_flash_attention_forward"):
        # Only imported there when flash-attn is installed; the attention classes call it by name.
        modeling._flash_attention_forward = sdpa_flash_attention_forward
    return modeling, utils


def build_release_model(modeling, raw_config: dict, seed: int, weight_std: float):
    from transformers.models.qwen2_5_vl.configuration_qwen2_5_vl import Qwen2_5_VLConfig

    config = Qwen2_5_VLConfig.from_dict(raw_config)
    # The release needs flash_attention_2 in the language model (see the module docstring);
    # setting it directly skips transformers' flash-attn availability check.
    config._attn_implementation_internal = "flash_attention_2"
    config._attn_implementation_autoset = True
    config.vision_config._attn_implementation_internal = "sdpa"
    config.vision_config._attn_implementation_autoset = True
    torch.manual_seed(seed)
    model = modeling.Qwen2_5_VLForConditionalGeneration(config)
    # Seeded random weights with some spread (the release's normal(0, 0.02) init makes every
    # visual token look alike): norms near 1, everything else normal(0, weight_std). The ITS
    # threshold MLP keeps the release's init shape but gets bias 0, so theta sits mid-range and
    # the keep decision splits the tokens.
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            noise = torch.randn(parameter.shape, generator=generator)
            if "norm" in name:
                parameter.copy_(1.0 + 0.1 * noise)
            elif name.endswith("atp.predictor.mlp.2.bias"):
                parameter.zero_()
            else:
                parameter.copy_(weight_std * noise)
    model.tie_weights()
    return model.eval()


def release_patches(checkout: Path, volume: np.ndarray, fps: float) -> dict:
    """Patches as the release's Photon template makes them from a (D, H, W) volume in [0, 1]."""
    from transformers import Qwen2VLImageProcessor

    settings = json.loads((checkout / "configs" / "preprocessor_config.json").read_text())
    settings.pop("image_processor_type", None)
    settings.pop("processor_class", None)
    processor = Qwen2VLImageProcessor(**settings)
    # load_volume returns (D, 1, H, W) (a one-channel video of D frames); the template calls the
    # processor with do_resize/do_rescale/do_normalize False for volumes.
    video = torch.from_numpy(volume.astype(np.float32))[:, None]
    inputs = processor(
        images=None, videos=[video], return_tensors="pt", do_resize=False, do_rescale=False, do_normalize=False
    )
    inputs["second_per_grid_ts"] = [processor.temporal_patch_size / fps]
    return dict(inputs)


def release_prompt_ids(tokenizer_folder: Path, question: str, visual_tokens: int) -> list[int]:
    """ms-swift's qwen2_5_vl template: system prefix + prompt, each context tokenized on its own."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_folder / "tokenizer.json"))

    def encode(text: str) -> list[int]:
        return tokenizer.encode(text, add_special_tokens=False).ids

    video_pad = tokenizer.token_to_id("<|video_pad|>")
    pieces = [
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n",  # system_prefix, DEFAULT_SYSTEM
        "<|im_start|>user\n",
        "<|vision_start|><|video_pad|><|vision_end|>",  # replace_tag('video')
        question,
        "<|im_end|>\n<|im_start|>assistant\n",
    ]
    ids: list[int] = []
    for piece in pieces:
        ids += encode(piece)
    at = ids.index(video_pad)
    return ids[:at] + [video_pad] * visual_tokens + ids[at + 1 :]


def run(args: argparse.Namespace) -> dict:
    import transformers
    from safetensors.torch import save_file

    torch.set_num_threads(args.threads)
    checkout, out = Path(args.checkout), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    modeling, utils = load_release_modeling(checkout)
    raw_config = tiny_release_config(args.layers)
    model = build_release_model(modeling, raw_config, args.seed, args.weight_std)
    its_layer = int(len(model.model.layers) / 4 - 1)  # as the release's __init__ attaches it

    checkpoint = out / "release_checkpoint"
    if checkpoint.exists():
        shutil.rmtree(checkpoint)
    model.save_pretrained(checkpoint, safe_serialization=True)
    saved = json.loads((checkpoint / "config.json").read_text())
    saved.get("vision_config", {}).pop("_attn_implementation_autoset", None)  # our bypass, not the release's
    (checkpoint / "config.json").write_text(json.dumps(saved, indent=2))
    (checkpoint / "generation_config.json").write_text(json.dumps(RELEASE_GENERATION_CONFIG, indent=2))
    for name in ("tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json"):
        if (Path(args.tokenizer) / name).exists():
            shutil.copy(Path(args.tokenizer) / name, checkpoint / name)

    model = model.to(getattr(torch, args.dtype))  # saved in float32; run in the requested dtype
    volume = np.load(args.volume)
    media = release_patches(checkout, volume, args.fps)
    grid = media["video_grid_thw"]
    merge = raw_config["vision_config"]["spatial_merge_size"]
    visual_tokens = int(grid[0].prod()) // merge**2
    input_ids = torch.tensor([release_prompt_ids(Path(args.tokenizer), args.question, visual_tokens)])
    attention_mask = torch.ones_like(input_ids)
    its = utils.build_its_kwargs({"input_ids": input_ids}, 151655, 151656, 151653, 151645)
    second_per_grid_ts = torch.tensor(media["second_per_grid_ts"])
    position_ids, rope_deltas = model.get_rope_index(input_ids, None, grid, second_per_grid_ts, attention_mask)

    layer = model.model.layers[its_layer]
    recorded: dict[str, torch.Tensor] = {}
    hooks = [
        layer.atp.register_forward_hook(
            lambda module, inputs, output: recorded.update(
                raw_scores=inputs[1].detach().float().clone(), keep_probability_full=output[1].detach().float().clone()
            )
        ),
        layer.atp.predictor.register_forward_hook(
            lambda module, inputs, output: recorded.update(threshold=(output.detach().float() * 0.9).clone())
        ),
    ]
    common = dict(
        input_ids=input_ids, attention_mask=attention_mask, pixel_values_videos=media["pixel_values_videos"],
        video_grid_thw=grid, second_per_grid_ts=second_per_grid_ts, **its,
    )  # fmt: skip
    with torch.no_grad():
        model.rope_deltas = None
        output = model(**common, use_cache=True)
    for hook in hooks:
        hook.remove()
    vision_mask = its["vision_mask"][0]
    keep_probability = recorded["keep_probability_full"][0][vision_mask]
    keep = layer.atp.last_keep_bool[0][vision_mask] > 0.5  # the release's own decision (p_full > 0.5)
    kept_count = int(output.logits.shape[1]) - int((~vision_mask).sum())

    generations = {}
    for name, settings in (
        ("greedy", dict(do_sample=False, repetition_penalty=1.0, temperature=None, top_k=None, top_p=None)),
        ("generation_config", {key: RELEASE_GENERATION_CONFIG[key] for key in ("do_sample", "repetition_penalty", "temperature", "top_k", "top_p")}),
    ):  # fmt: skip
        model.rope_deltas = None
        with torch.no_grad():
            sequences = model.generate(
                **common, max_new_tokens=args.new_tokens, eos_token_id=args.eos_token_id,
                pad_token_id=151643, use_cache=True, **settings,
            )  # fmt: skip
        generations[name] = sequences[0, input_ids.shape[1] :].tolist()

    tensors = {
        "input_ids": input_ids,
        "pixel_values_videos": media["pixel_values_videos"].float().contiguous(),
        "video_grid_thw": grid,
        "position_ids": position_ids.contiguous(),
        "vision_mask": its["vision_mask"],
        "question_mask": its["question_mask"],
        "raw_scores": recorded["raw_scores"][0].contiguous(),
        "threshold": recorded["threshold"].reshape(1).contiguous(),
        "keep_probability": keep_probability.contiguous(),
        "keep": keep.contiguous(),
        "last_logits": output.logits[0, -1].float().clone(),
        "pruned_logits": output.logits[0].float().clone(),
    }
    save_file(tensors, str(out / "release_outputs.safetensors"))
    summary = {
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "its_layer": its_layer,
        "layers": args.layers,
        "seed": args.seed,
        "weight_std": args.weight_std,
        "fps": args.fps,
        "dtype": args.dtype,
        "video_grid_thw": grid[0].tolist(),
        "visual_tokens": visual_tokens,
        "kept": int(tensors["keep"].sum()),
        "kept_from_sequence_length": kept_count,
        "rope_deltas": int(rope_deltas.reshape(-1)[0]),
        "generations": generations,
        "checkpoint": str(checkpoint),
    }
    (out / "release_outputs.json").write_text(json.dumps(summary, indent=2))
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkout", required=True, help="checkout of alibaba-damo-academy/Photon")
    parser.add_argument("--tokenizer", required=True, help="folder with Qwen's tokenizer.json")
    parser.add_argument("--volume", required=True, help=".npy (D, H, W) volume in [0, 1]")
    parser.add_argument("--question", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--weight-std", type=float, default=0.15)
    parser.add_argument("--fps", type=float, default=1.0, help="the release's FPS (test_photon_s2.sh: 1)")
    parser.add_argument("--new-tokens", type=int, default=8)
    parser.add_argument(
        "--eos-token-id", type=int, default=151935, help="stop id for generate (default: an unused row)"
    )
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--threads", type=int, default=2)
    summary = run(parser.parse_args(argv))
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
