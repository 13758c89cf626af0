"""Command-line options shared by every command that reads a volume."""

from __future__ import annotations

import argparse
from pathlib import Path

from photonlib.volume.image import ReadLimits, Volume

#: A small synthetic CT phantom shipped with the package (see PhotonLib/scripts/make_example_volume.py).
EXAMPLE_VOLUME = Path(__file__).resolve().parents[1] / "examples" / "phantom_ct.nrrd"


def add_volume_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "volume",
        type=Path,
        nargs="?",
        default=EXAMPLE_VOLUME,
        help="image file, DICOM series folder or .npy array (default: the bundled example CT phantom)",
    )
    parser.add_argument("--series", metavar="UID", help="DICOM: which series to read when the folder holds several")
    parser.add_argument("--component", type=int, metavar="N", help="multi-component images: component to read")
    parser.add_argument("--timepoint", type=int, metavar="N", help="4D images: volume (time point) to read")
    parser.add_argument(
        "--max-voxels",
        type=int,
        default=ReadLimits().max_voxels,
        metavar="N",
        help=f"refuse volumes with more voxels (default {ReadLimits().max_voxels:,})",
    )


def read_volume_from_args(args: argparse.Namespace) -> Volume:
    from photonlib.volume.reader import read_volume

    return read_volume(
        args.volume,
        series_uid=args.series,
        component=args.component,
        timepoint=args.timepoint,
        limits=ReadLimits(max_voxels=args.max_voxels),
    )
