"""``photon ask VOLUME "QUESTION"``: an answer, the tokens kept, and the heatmap on the volume."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from photonlib.cli.volume_options import add_volume_arguments, read_volume_from_args
from photonlib.errors import UsageError

if TYPE_CHECKING:
    from photonlib.client import AskResult, BusyWait
    from photonlib.volume import Volume

#: ``--busy-wait``: someone at a terminal would rather wait a minute or two than run the command again.
BUSY_WAIT_S = 120.0


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
    parser.add_argument(
        "--png", type=Path, metavar="OUT",
        help="write a picture: axial, coronal and sagittal slices through the most-kept region, heatmap overlaid (matplotlib)",
    )  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    remote = parser.add_argument_group("asking a running server (photon serve) instead of loading a model here")
    remote.add_argument("--server", metavar="URL", help="e.g. http://127.0.0.1:8765: send the volume's voxels and geometry there")
    remote.add_argument("--token", help="the server's token (default: $PHOTON_TOKEN)")
    remote.add_argument("--timeout", type=float, default=600.0, metavar="S", help="give up (and cancel) after S seconds (default 600)")
    remote.add_argument(
        "--busy-wait", type=float, default=BUSY_WAIT_S, metavar="S",
        help=f"when the server is busy (its queue full), wait up to S seconds for a place, asking again when it says "
        f"(default {BUSY_WAIT_S:g}; 0: fail at once)",
    )  # fmt: skip
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if not args.question.strip():
        raise UsageError("the question is empty")
    if args.max_new_tokens < 1:
        raise UsageError("--max-new-tokens must be at least 1")
    if args.png:
        from photonlib.inference.overlay import require_matplotlib

        require_matplotlib()  # before minutes of work, not after
    volume = read_volume_from_args(args)
    if args.server:
        return run_remote(args, volume)
    if args.token:
        raise UsageError("--token needs --server")

    from photonlib.inference import PhotonEngine

    engine = PhotonEngine.load(args.model, args.device)
    case = engine.prepare(volume)
    answer = engine.ask(case, args.question, max_new_tokens=args.max_new_tokens)
    if args.heatmap:
        engine.write_heatmap(args.heatmap, answer, case)
    if args.png:
        from photonlib.inference.overlay import Caption
        from photonlib.volume.heatmap import map_to_source

        kept = map_to_source(answer.keep_mask.astype(np.float32), case.prepared) > 0.5  # each voxel: its token kept?
        caption = Caption(args.question, answer.answer, answer.tokens_kept, answer.tokens_total, engine.info()["name"])
        save_picture(args.png, volume, engine.heatmap(answer, case), case.prepared.intensity_mode == "ct", caption, kept)
    result = {
        "answer": answer.answer,
        "tokens_total": answer.tokens_total,
        "tokens_kept": answer.tokens_kept,
        "timings": {name: round(seconds, 4) for name, seconds in answer.timings.items()},
        "model": engine.info()["name"],
        "heatmap": str(args.heatmap) if args.heatmap else None,
        "png": str(args.png) if args.png else None,
    }
    print_result(result, args.json)
    return 0


def save_picture(path: Path, volume: Volume, heatmap: np.ndarray, is_ct: bool, caption, keep_mask=None) -> None:
    """Axial, coronal and sagittal slices through the most-kept region, heatmap and caption on them."""
    from photonlib.inference.overlay import display_window, write_overlay_png

    window = display_window(volume.array, is_ct)
    write_overlay_png(path, volume.array, heatmap, volume.geometry, window, keep_mask_kji=keep_mask, caption=caption)


def print_result(result: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(result, indent=2))
    else:
        print(result["answer"])
        print(
            f"[{result['tokens_kept']} of {result['tokens_total']} visual tokens kept; "
            f"{result['timings'].get('total', 0.0):.2f} s; model {result['model']}]"
        )
        # Absolute paths, so the files can be opened (e.g. in Slicer) from wherever this ran.
        if result["heatmap"]:
            heatmap_path = Path(result["heatmap"]).resolve()
            print(f"heatmap (keep probability per voxel, in the volume's geometry): {heatmap_path}")
        if result["png"]:
            print(f"picture (axial, coronal, sagittal slices with the heatmap): {Path(result['png']).resolve()}")


def run_remote(args: argparse.Namespace, volume: Volume) -> int:
    """Upload the voxels and geometry (never DICOM tags) to ``photon serve``, ask, print."""
    from photonlib.client import PhotonClient, PhotonClientError

    if args.model is not None or args.device != "auto":
        raise UsageError("--model and --device choose a local model; with --server the server's model answers")
    if not (args.busy_wait >= 0 and math.isfinite(args.busy_wait)):
        raise UsageError(f"--busy-wait must be 0 (do not wait) or a number of seconds, not {args.busy_wait}")
    client = PhotonClient(args.server, token=args.token, timeout=60.0, busy_wait_s=args.busy_wait)
    job_id = None
    try:
        client.check_server()
        uploaded = client.upload_array(volume.array, volume.geometry, modality=volume.modality, on_busy=say_busy)
        job = client.submit(uploaded.volume_id, args.question, max_new_tokens=args.max_new_tokens, on_busy=say_busy)
        job_id = job.job_id
        answer = client.wait(job_id, timeout=args.timeout)
        job_id = None
        if args.heatmap:
            save_heatmap(args.heatmap, answer)
        if args.png:
            from photonlib.inference.overlay import Caption

            heatmap, _ = answer.heatmap()
            is_ct = volume.modality == "CT" or (volume.modality is None and float(volume.array.min()) <= -500)
            caption = Caption(args.question, answer.answer, answer.tokens_kept, answer.tokens_total, str(answer.model.get("name")))
            save_picture(args.png, volume, heatmap, is_ct, caption)  # the server sends no keep mask: p > 0.5 is ITS's rule
    except KeyboardInterrupt:
        if job_id is not None:  # do not leave the server working for nobody
            try:
                client.cancel(job_id)
            except PhotonClientError:
                pass
        raise
    result = {
        "answer": answer.answer,
        "tokens_total": answer.tokens_total,
        "tokens_kept": answer.tokens_kept,
        "timings": {name: round(seconds, 4) for name, seconds in answer.timings.items()},
        "model": answer.model.get("name"),
        "heatmap": str(args.heatmap) if args.heatmap else None,
        "png": str(args.png) if args.png else None,
    }
    print_result(result, args.json)
    return 0


def say_busy(wait: BusyWait) -> None:
    """On stderr (stdout may be --json): the server is busy and the command waits for it."""
    print(
        f"photon ask: the server is busy ({wait.code}); asking again in {wait.delay_s:.0f} s "
        f"(waited {wait.waited_s:.0f} s of at most {wait.limit_s:g} s)",
        file=sys.stderr, flush=True,
    )  # fmt: skip


def save_heatmap(path: Path, answer: AskResult) -> None:
    """The server's NRRD as is; other suffixes (.nii.gz, .mha) converted with the same geometry."""
    if path.name.lower().endswith(".nrrd"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(answer.heatmap_nrrd())
        return
    from photonlib.volume import write_volume

    array, geometry = answer.heatmap()
    write_volume(path, array, geometry)
