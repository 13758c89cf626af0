"""``photon phantoms make OUT --n N --seed S``: synthetic CT phantoms with known lesions and questions."""

from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "phantoms",
        help="make synthetic CT phantoms with lesions, label maps and questions",
        description="Synthetic CT phantoms with known lesions (a data set to train and test on).",
    )
    actions = parser.add_subparsers(dest="phantoms_action", metavar="ACTION", required=True)
    make = actions.add_parser(
        "make",
        help="write N cases, their label maps, phantoms.jsonl and manifest.json to OUT",
        description=(
            "Write N CT-like volumes in HU (.nii.gz) with body, lungs, liver, spleen, kidneys, aorta and "
            "spine, a lesion in a share of them, label maps in the same geometry, questions in the 3D-RAD "
            "task families (OUT/phantoms.jsonl, read with load_dataset('phantoms', OUT)) and "
            "OUT/manifest.json. The same seed gives identical files."
        ),
    )
    make.add_argument("out", metavar="OUT", help="output folder (new or empty, unless --overwrite)")
    make.add_argument("--n", type=int, required=True, help="number of cases")
    make.add_argument("--seed", type=int, required=True, help="random seed (a non-negative integer)")
    make.add_argument(
        "--size", default="small", help="grid: small (96 x 96 x 48 voxels, default) or tiny (48 x 48 x 24, for tests)"
    )
    make.add_argument(
        "--lesion-probability",
        type=float,
        default=0.5,
        metavar="P",
        help="share of the cases with a lesion, between 0 and 1 (default 0.5)",
    )
    make.add_argument(
        "--lesion-profile",
        default="realistic",
        metavar="NAME",
        help="realistic (15-45 mm, 30-80 HU vs the organ; default) or conspicuous (30-60 mm, 150-300 HU)",
    )
    make.add_argument("--overwrite", action="store_true", help="replace a previous phantom set in OUT")
    make.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    make.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from photonlib.data.phantoms import make_phantoms

    made = make_phantoms(
        args.out,
        args.n,
        args.seed,
        size=args.size,
        lesion_probability=args.lesion_probability,
        profile=args.lesion_profile,
        overwrite=args.overwrite,
    )
    if args.json:
        print(
            json.dumps(
                {
                    "folder": str(made.folder),
                    "jsonl": str(made.jsonl),
                    "manifest": str(made.manifest),
                    "cases": made.cases,
                    "cases_with_lesion": made.cases_with_lesion,
                    "questions": made.questions,
                    "seconds": round(made.seconds, 3),
                }
            )
        )
    else:
        print(made.summary())
    return 0
