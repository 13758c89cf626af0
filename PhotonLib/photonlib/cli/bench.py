"""``photon bench --preset cpu|cpu-compute|qwen2.5-vl-3b``: Photon against the 7,000-token Qwen2.5-VL input, side by side."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from photonlib.errors import MissingExtraError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="benchmark Photon (no ITS, ITS) against the Qwen2.5-VL input and VisionZip/HiPrune-style pruning",
        description=(
            "Measure, in one run on one model shape with random weights: the Qwen2.5-VL-style input "
            "(temporal patch 2 x 14 x 14), Photon without ITS, Photon with ITS and fixed-budget "
            "VisionZip- and HiPrune-style pruning at ITS's budget. Per method: visual tokens, vision time, "
            "time to first token and a follow-up question's, decode tokens/s, peak memory, "
            "training samples/s, pruning overhead, per-op framework overhead; ratios to the baseline next to "
            "the limit the token counts allow. See docs/bench.md."
        ),
    )
    parser.add_argument(
        "--preset", required=True, metavar="PRESET",
        help="cpu (a scaled-down model, about a minute on two cores), cpu-compute (the same shape twice as "
        "wide, so compute dominates: the preset for ratios, two to three minutes on two cores) or qwen2.5-vl-3b "
        "(the real shapes, bf16, one CUDA GPU)",
    )  # fmt: skip
    parser.add_argument("--json", type=Path, metavar="OUT", help="write the full report as JSON")
    parser.add_argument(
        "--plot", type=Path, metavar="OUT.png", help="plot time and memory against tokens kept (matplotlib)"
    )
    parser.add_argument("--repeats", type=int, metavar="N", help="timed runs per figure (median; preset default 5)")
    parser.add_argument("--warmup", type=int, metavar="N", help="untimed runs first (preset default 1)")
    parser.add_argument(
        "--new-tokens", type=int, metavar="N", help="tokens decoded per answer, EOS ignored (default 32)"
    )
    parser.add_argument(
        "--keep-ratio", type=float, metavar="R",
        help="share of Photon's visual tokens ITS keeps, and the fixed budgets' (default 0.39: the paper's 0.39K of 1.0K)",
    )  # fmt: skip
    parser.add_argument(
        "--methods", metavar="LIST", help="comma-separated subset of: qwen2.5-vl,photon,photon-its,visionzip,hiprune"
    )
    parser.add_argument("--threads", type=int, metavar="N", help="torch CPU threads (default: one per core)")
    parser.add_argument(
        "--in-process", action="store_true",
        help="measure every method in this process (faster; CPU peak memory is then less clean than one fresh process per method)",
    )  # fmt: skip
    parser.add_argument(
        "--sequential", action="store_true",
        help="time one method after the other instead of interleaving their rounds in one process "
        "(the qwen2.5-vl-3b preset's default: five 3B models do not fit one GPU together)",
    )  # fmt: skip
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from photonlib.benchmarks.report import format_table, write_json, write_plot
    from photonlib.benchmarks.runner import run_bench
    from photonlib.benchmarks.spec import preset

    if args.plot is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise MissingExtraError("--plot needs matplotlib: pip install 'photonlib[bench]'") from None
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip()) if args.methods else None
    spec = preset(
        args.preset, repeats=args.repeats, warmup=args.warmup, new_tokens=args.new_tokens, keep_ratio=args.keep_ratio,
        methods=methods, threads=args.threads, isolate=False if args.in_process else None,
        interleave=False if args.sequential else None,
    )  # fmt: skip
    command = "photon " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:2] == ["bench"] else None
    report = run_bench(spec, progress=lambda message: print(message, file=sys.stderr, flush=True), command=command)
    print(format_table(report))
    if args.json is not None:
        print(f"wrote {write_json(report, args.json)}")
    if args.plot is not None:
        print(f"wrote {write_plot(report, args.plot)}")
    return 0
