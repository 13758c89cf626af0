"""``photon ask VOLUME "QUESTION"``: an answer, the tokens kept, and the heatmap on the volume."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from photonlib.cli.volume_options import add_volume_arguments, read_volume_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "ask",
        help="ask Photon a question about a volume",
        description=(
            "Answer a question about a volume with a Photon model (default: the embedded model). "
            "Exit code 2 and one line on stderr for unusable input."
        ),
    )
    add_volume_arguments(parser)
    parser.add_argument("question", help="the question, in quotes")
    parser.add_argument("--model", type=Path, help="a Photon model folder (default: the embedded model)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:N] (default auto)")
    parser.add_argument("--max-new-tokens", type=int, default=128, metavar="N", help="answer length limit (default 128)")
    parser.add_argument("--heatmap", type=Path, metavar="OUT", help="write keep probabilities in the volume's geometry (.nrrd, .nii.gz)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from photonlib.inference import PhotonEngine

    if not args.question.strip():
        raise ValueError("the question is empty")
    if args.max_new_tokens < 1:
        raise ValueError("--max-new-tokens must be at least 1")
    volume = read_volume_from_args(args)
    engine = PhotonEngine.load(args.model, args.device)
    case = engine.prepare(volume)
    answer = engine.ask(case, args.question, max_new_tokens=args.max_new_tokens)
    if args.heatmap:
        engine.write_heatmap(args.heatmap, answer, case)
    result = {
        "answer": answer.answer,
        "tokens_total": answer.tokens_total,
        "tokens_kept": answer.tokens_kept,
        "timings": {name: round(seconds, 4) for name, seconds in answer.timings.items()},
        "model": engine.info()["name"],
        "heatmap": str(args.heatmap) if args.heatmap else None,
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(answer.answer)
        print(
            f"[{answer.tokens_kept} of {answer.tokens_total} visual tokens kept; "
            f"{answer.timings['total']:.2f} s; model {result['model']}]"
        )
    return 0
