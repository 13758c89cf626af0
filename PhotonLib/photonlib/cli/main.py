"""Entry point of the ``photon`` command.

Every sub-command module exposes ``register(subparsers)`` and a ``run(args) -> int``. How a
command ends:

* exit 0: done;
* exit 2 and one line on stderr: a problem the user can fix, raised as a named error
  (:class:`photonlib.errors.PhotonInputError` for a file, option or setting,
  :class:`photonlib.errors.PhotonEnvironmentError` for a missing or unsupported package, a
  client error for an unreachable or refusing server, an ``OSError`` naming a file);
* exit 1: any other exception, which is a bug: one line says so and where its traceback was
  written; ``--debug`` prints the traceback instead (for exit 2 too);
* exit 130: interrupted; exit 141: the reader of the output went away (``photon ask | head``).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import traceback
from collections.abc import Sequence

from photonlib import __version__
from photonlib.cli import ask, bench, convert, evaluate, info, phantoms, serve, train
from photonlib.errors import PhotonEnvironmentError, PhotonInputError

SUBCOMMANDS = (info, ask, convert, train, evaluate, serve, phantoms, bench)
USER_ERROR = 2
BUG = 1
INTERRUPTED = 130
BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a process whose reader closed the pipe


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="photon",
        description="Photon: ask questions about CT and MR volumes (PhotonLib command line).",
    )
    parser.add_argument("--version", action="version", version=f"photonlib {__version__}")
    debug_help = "print the full traceback of any error (for bug reports)"
    parser.add_argument("--debug", action="store_true", help=debug_help)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in SUBCOMMANDS:
        module.register(subparsers)
    # Also accepted after the sub-command (`photon ask ... --debug`); SUPPRESS keeps the
    # top-level value when it is not given there.
    for subparser in subparsers.choices.values():
        subparser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=debug_help)
    return parser


def _is_user_error(error: BaseException) -> bool:
    if isinstance(error, (PhotonInputError, PhotonEnvironmentError)):
        return True
    if isinstance(error, OSError) and getattr(error, "filename", None) is not None:
        return True  # a file the user named cannot be read or written: the message names it
    # The client is imported only by the commands that talk to a server.
    client = sys.modules.get("photonlib.client")
    return client is not None and isinstance(error, client.PhotonClientError)


def _one_line(error: BaseException) -> str:
    if isinstance(error, OSError) and error.filename is not None and error.strerror:
        return f"{error.filename}: {error.strerror}"
    return " ".join(str(error).split()) or type(error).__name__


def _write_traceback(error: BaseException) -> str | None:
    """The traceback in a private temporary file; its path, or None if it could not be written."""
    try:
        descriptor, path = tempfile.mkstemp(prefix="photon-error-", suffix=".txt")
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(f"photonlib {__version__}, Python {sys.version.split()[0]}\n")
            traceback.print_exception(type(error), error, error.__traceback__, file=handle)
    except OSError:
        return None
    return path


def _silence_stdout() -> None:
    """After a broken pipe, point stdout at devnull so the interpreter's final flush is quiet."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    prefix = f"photon {args.command}"
    try:
        code = int(args.run(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
        return code
    except KeyboardInterrupt:
        print(f"{prefix}: interrupted", file=sys.stderr)
        return INTERRUPTED
    except BrokenPipeError:
        _silence_stdout()
        return BROKEN_PIPE
    except Exception as error:
        if args.debug:
            traceback.print_exc()
        if _is_user_error(error):
            print(f"{prefix}: error: {_one_line(error)}", file=sys.stderr)
            return USER_ERROR
        if args.debug:
            print(f"{prefix}: internal error (a bug in PhotonLib; traceback above)", file=sys.stderr)
            return BUG
        where = _write_traceback(error)
        saved = f"its traceback is in {where}" if where else "its traceback could not be saved"
        message = _one_line(error)
        if len(message) > 200:
            message = message[:197] + "..."
        print(
            f"{prefix}: internal error: {type(error).__name__}: {message} -- this is a bug in PhotonLib, not a "
            f"problem with your input; {saved} (run again with --debug to print it)",
            file=sys.stderr,
        )
        return BUG


if __name__ == "__main__":
    sys.exit(main())
