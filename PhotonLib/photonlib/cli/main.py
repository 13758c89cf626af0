"""Entry point of the ``photon`` command.

Every sub-command module exposes ``register(subparsers)`` and a ``run(args) -> int``. Input a
user can fix (a wrong file, a bad option value) ends the command with exit code 2 and one line
on stderr; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from photonlib import __version__
from photonlib.cli import ask, bench, convert, evaluate, info, phantoms, serve, train

SUBCOMMANDS = (info, ask, convert, train, evaluate, serve, phantoms, bench)
USAGE_ERROR = 2


class UserInputError(Exception):
    """Raised by sub-commands for problems with what the user gave (message shown as is)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="photon",
        description="Photon: ask questions about CT and MR volumes (PhotonLib command line).",
    )
    parser.add_argument("--version", action="version", version=f"photonlib {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in SUBCOMMANDS:
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # Imported here so `photon --help` stays fast (SimpleITK, torch are heavy to import).
    from photonlib.volume.errors import VolumeError

    try:
        return int(args.run(args) or 0)
    except (VolumeError, UserInputError, ValueError) as error:
        message = " ".join(str(error).split())
        print(f"photon {args.command}: error: {message}", file=sys.stderr)
        return USAGE_ERROR
    except KeyboardInterrupt:
        print(f"photon {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
