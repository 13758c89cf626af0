"""``photon train --config FILE [key=value ...]``: run a training recipe through accelerate.

Several GPUs: ``accelerate launch --config_file configs/accelerate/deepspeed-zero2-8gpu.yaml
-m photonlib.cli.main train --config ...`` (DDP, FSDP or DeepSpeed, as the accelerate file says).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train or fine-tune Photon (stage 1 alignment, stage 2 ITS + SGP)",
        description="Run a training recipe (YAML) with optional key=value overrides, e.g. max_steps=10.",
    )
    parser.add_argument("--config", type=Path, required=True, help="the recipe (YAML)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="settings to override (dotted keys)")
    parser.add_argument("--resume", metavar="CHECKPOINT", help="a checkpoint folder, or 'latest' in output_dir")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from photonlib.training import load_train_config, train

    config = load_train_config(args.config, args.overrides)
    result = train(config, resume=args.resume)
    print(
        json.dumps(
            {
                "final_model": str(result.final_model),
                "steps": result.steps,
                "last_loss": round(result.last_loss, 5),
                "mean_keep_ratio": result.mean_keep_ratio,
                "samples_per_second": round(result.samples_per_second, 3),
            },
            indent=2,
        )
    )
    return 0
