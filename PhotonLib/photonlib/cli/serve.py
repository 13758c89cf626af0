"""``photon serve``: the local inference backend (HTTP API, see docs/api.md)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from photonlib.errors import UsageError
from photonlib.serving.settings import MIB, ServerSettings, check_bind_safety

DEFAULTS = ServerSettings()
TOKEN_ENV = "PHOTON_TOKEN"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run the Photon backend (HTTP API for PhotonSlicer and photon ask --server)",
        description=(
            "Serve a Photon model over HTTP (API under /v1, OpenAPI at /openapi.json). Listens on 127.0.0.1 "
            f"unless --host says otherwise; any other address needs a token (${TOKEN_ENV}, --token-file or "
            "--token), which every request but /v1/health must then send as `Authorization: Bearer <token>`."
        ),
    )
    parser.add_argument("--model", type=Path, help="a Photon model folder (default: the embedded model)")
    parser.add_argument("--host", default=DEFAULTS.host, help=f"address to listen on (default {DEFAULTS.host})")
    parser.add_argument("--port", type=int, default=DEFAULTS.port, help=f"port (default {DEFAULTS.port}; 0 picks a free one)")
    parser.add_argument("--token", help=f"bearer token (visible in `ps`: prefer ${TOKEN_ENV} or --token-file)")
    parser.add_argument("--token-file", type=Path, metavar="FILE", help="read the bearer token from this file")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:N] (default auto)")
    parser.add_argument("--max-upload-mb", type=float, default=DEFAULTS.max_upload_bytes / MIB, metavar="N",
                        help=f"largest upload accepted (default {DEFAULTS.max_upload_bytes // MIB})")  # fmt: skip
    parser.add_argument("--max-voxels", type=int, default=DEFAULTS.read_limits.max_voxels, metavar="N",
                        help=f"largest volume accepted, in voxels (default {DEFAULTS.read_limits.max_voxels:,})")  # fmt: skip
    parser.add_argument("--cache-mb", type=float, default=DEFAULTS.cache_bytes / MIB, metavar="N",
                        help=f"memory for volumes kept between questions (default {DEFAULTS.cache_bytes // MIB})")  # fmt: skip
    parser.add_argument("--cache-volumes", type=int, default=DEFAULTS.cache_entries, metavar="N",
                        help=f"volumes kept between questions (default {DEFAULTS.cache_entries})")  # fmt: skip
    parser.add_argument("--queue", type=int, default=DEFAULTS.queue_size, metavar="N",
                        help=f"questions allowed to wait; more get HTTP 503 (default {DEFAULTS.queue_size})")  # fmt: skip
    parser.add_argument("--job-timeout", type=float, default=DEFAULTS.job_timeout_s, metavar="S",
                        help=f"longest time one question may run (default {DEFAULTS.job_timeout_s:g} s)")  # fmt: skip
    parser.add_argument("--max-new-tokens", type=int, default=DEFAULTS.max_new_tokens, metavar="N",
                        help=f"longest answer a client may ask for (default {DEFAULTS.max_new_tokens})")  # fmt: skip
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    parser.set_defaults(run=run)


def resolve_token(args: argparse.Namespace) -> str | None:
    """--token, else --token-file, else $PHOTON_TOKEN; surrounding whitespace is dropped."""

    if args.token is not None and args.token_file is not None:
        raise UsageError("give --token or --token-file, not both")
    if args.token is not None:
        token = args.token
    elif args.token_file is not None:
        try:
            token = args.token_file.read_text().strip()
        except OSError as error:
            raise UsageError(f"cannot read the token file {args.token_file}: {error.strerror}") from None
    else:
        token = os.environ.get(TOKEN_ENV, "")
    token = token.strip()
    return token or None


def settings_from_args(args: argparse.Namespace, token: str | None) -> ServerSettings:
    from photonlib.volume.image import ReadLimits

    return ServerSettings(
        host=args.host,
        port=args.port,
        token=token,
        max_upload_bytes=int(args.max_upload_mb * MIB),
        read_limits=ReadLimits(max_voxels=args.max_voxels),
        cache_bytes=int(args.cache_mb * MIB),
        cache_entries=args.cache_volumes,
        queue_size=args.queue,
        job_timeout_s=args.job_timeout,
        max_new_tokens=args.max_new_tokens,
        default_max_new_tokens=min(DEFAULTS.default_max_new_tokens, args.max_new_tokens),
    )


def run(args: argparse.Namespace) -> int:
    token = resolve_token(args)
    check_bind_safety(args.host, token)  # before anything slow: refuse at once
    settings = settings_from_args(args, token)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from photonlib.serving.server import bind_socket, run_server, url_of

    def listen():
        try:
            return bind_socket(settings.host, settings.port)
        except OSError as error:
            raise UsageError(
                f"cannot listen on {settings.host}:{settings.port} ({error.strerror or error}); "
                "is another photon serve running? choose another --port"
            ) from None

    # Check the port before the (possibly long) model load, but listen only once the model is
    # there: a client meanwhile hears "not running" at once rather than waiting for a timeout.
    sock = listen()
    if settings.port != 0:
        sock.close()
    print("photon serve: loading the model ...", file=sys.stderr, flush=True)

    from photonlib.inference import PhotonEngine
    from photonlib.serving.app import create_app

    engine = PhotonEngine.load(args.model, args.device)
    if settings.port != 0:
        sock = listen()
    url = url_of(sock)
    app = create_app(engine, settings)
    info = engine.info()

    def ready() -> None:
        auth = "token required" if settings.auth_required else "no token (this machine only)"
        print(
            f"photon serve: {info['name']} on {info['device']}; listening on {url} (API {url}/v1, docs {url}/docs); {auth}",
            file=sys.stderr,
            flush=True,
        )

    run_server(app, sock, on_ready=ready, log_level=args.log_level)
    return 0
