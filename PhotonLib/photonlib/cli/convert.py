"""``photon convert SRC DST``: a Photon model folder from a Qwen2.5-VL or released Photon checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path

from photonlib.model.checkpoint_formats import PATCH_INITS, SOURCE_FORMATS, WEIGHT_DTYPES


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="make a Photon model folder from a Qwen2.5-VL or a released Photon-S1/S2 checkpoint",
        description=(
            "Convert a local checkpoint folder (config.json, safetensors weights, tokenizer files) into a "
            "Photon model folder that PhotonForConditionalGeneration.from_pretrained and "
            "PhotonProcessor.from_pretrained load. Qwen2.5-VL: the language model, vision blocks and merger "
            "are kept; the 3D patch embedding and the ITS threshold MLP are new. Released Photon: keys are "
            "renamed to photonlib's layout. Exit code 2 and one line on stderr for unusable input."
        ),
    )
    parser.add_argument("source", metavar="SRC", type=Path, help="checkpoint folder to convert")
    parser.add_argument("destination", metavar="DST", type=Path, help="new (or empty) folder for the Photon model")
    parser.add_argument(
        "--from",
        dest="source_format",
        choices=("auto", *SOURCE_FORMATS),
        default="auto",
        help="checkpoint kind (default auto: a one-channel patch embedding in config.json means released)",
    )
    parser.add_argument(
        "--patch-init",
        choices=PATCH_INITS,
        default=None,
        help="Qwen2.5-VL only: 3D patch embedding from a truncated normal (released, the default) or from the 2D kernel",
    )
    parser.add_argument(
        "--dtype", choices=("auto", *WEIGHT_DTYPES), default="auto", help="weight dtype (default: the checkpoint's)"
    )
    parser.add_argument("--overwrite", action="store_true", help="write into DST even if it is not empty")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from photonlib.model.conversion import convert_checkpoint

    dtype = None if args.dtype == "auto" else getattr(torch, args.dtype)
    report = convert_checkpoint(
        args.source, args.destination, source_format=args.source_format, patch_init=args.patch_init,
        dtype=dtype, overwrite=args.overwrite,
    )  # fmt: skip
    print(report.summary())
    return 0
