"""``photon info VOLUME``: what a volume is, where it sits, and what the model would see."""

from __future__ import annotations

import argparse
import json
from typing import Any

from photonlib.cli.volume_options import add_volume_arguments, read_volume_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "info",
        help="print size, spacing, origin, direction, orientation and intensity range of a volume",
        description=(
            "Print the geometry and intensity range of a volume (NIfTI, NRRD, MetaImage, a DICOM "
            "series folder or a .npy array). Exit code 2 and one line on stderr for unusable input."
        ),
    )
    add_volume_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.add_argument(
        "--preprocess",
        metavar="PRESET",
        nargs="?",
        const="photon",
        help="also show the model grid this volume becomes (preset: photon, small, tiny; default photon)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    volume = read_volume_from_args(args)
    summary: dict[str, Any] = {"path": str(args.volume)}
    summary.update(volume.describe())
    if args.preprocess:
        from photonlib.volume.preprocess import PreprocessConfig, prepare_volume

        prepared = prepare_volume(volume, PreprocessConfig.preset(args.preprocess))
        summary["model_input"] = {
            "preset": args.preprocess,
            "shape_dhw": list(prepared.array.shape),
            "intensity_mode": prepared.intensity_mode,
            "intensity_window": list(prepared.intensity_window),
            "geometry": prepared.geometry.describe(),
            "notes": list(prepared.notes),
        }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(format_summary(summary))
    return 0


def _vector(values: Any, digits: int = 4) -> str:
    return "(" + ", ".join(f"{float(v):.{digits}g}" if isinstance(v, float) else str(v) for v in values) + ")"


def format_summary(summary: dict[str, Any]) -> str:
    """Readable text for people; the JSON form carries the same facts."""
    low, high = summary["intensity_range"]
    lines = [
        f"file:         {summary['path']}",
        f"format:       {summary['format']}" + (f" ({summary['modality']})" if summary["modality"] else ""),
        f"size (i,j,k): {_vector(summary['size'])}  voxels",
        f"spacing:      {_vector(summary['spacing_mm'])}  mm",
        f"origin LPS:   {_vector(summary['origin_lps_mm'], 6)}  mm",
        f"origin RAS:   {_vector(summary['origin_ras_mm'], 6)}  mm",
        "direction:    " + "  ".join(_vector(row, 6) for row in summary["direction_lps"]) + "  (LPS, rows)",
        f"orientation:  {summary['orientation']}" + ("  (oblique)" if summary["oblique"] else ""),
        f"intensities:  [{low:g}, {high:g}]  ({summary['dtype']})",
    ]
    for note in summary["notes"]:
        lines.append(f"note:         {note}")
    model = summary.get("model_input")
    if model:
        geometry = model["geometry"]
        lines += [
            f"model input:  {model['preset']} preset, D x H x W = {' x '.join(map(str, model['shape_dhw']))}",
            f"  spacing:    {_vector(geometry['spacing_mm'])}  mm, orientation {geometry['orientation']}",
            f"  intensity:  {model['intensity_mode']} window {_vector(model['intensity_window'])}",
        ]
        lines += [f"  note:       {note}" for note in model["notes"]]
    return "\n".join(lines)
