"""Real servers for the serving tests: uvicorn on 127.0.0.1 in a thread, or ``photon serve`` in a
subprocess, around a seeded tiny random Photon (fast on a CPU)."""

from __future__ import annotations

import contextlib
import functools
import os
import re
import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from photonlib.geometry import VolumeGeometry
from photonlib.inference import PhotonEngine
from photonlib.inference.engine import random_tiny_model
from photonlib.serving.app import create_app
from photonlib.serving.server import BackgroundServer
from photonlib.serving.settings import ServerSettings

from volume_factory import rotation

PHOTON = Path(sys.executable).with_name("photon")
TOKEN = "test-token-0123456789abcdef"
#: The tiny random model repeats one token and never ends on its own: long answers are slow
#: enough (about 4 ms a token on 2 CPU cores) to cancel, time out or fill the queue.
LONG_ANSWER = 100_000


@functools.lru_cache(maxsize=1)
def tiny_engine() -> PhotonEngine:
    """One engine for the whole session (servers run one at a time; the engine has a lock)."""
    model, processor = random_tiny_model()
    return PhotonEngine(model, processor, "photon-tiny-random", "cpu")


@dataclass
class RunningServer:
    url: str
    app: object
    settings: ServerSettings

    @property
    def service(self):
        return self.app.state.service


@contextlib.contextmanager
def running_server(engine: PhotonEngine | None = None, **settings) -> Iterator[RunningServer]:
    """A real uvicorn server on a free 127.0.0.1 port, stopped on exit."""
    settings.setdefault("port", 0)
    settings.setdefault("max_new_tokens", LONG_ANSWER)
    server_settings = ServerSettings(**settings)
    app = create_app(engine or tiny_engine(), server_settings)
    with BackgroundServer(app) as server:
        yield RunningServer(server.url, app, server_settings)


def oblique_geometry(size=(30, 26, 14)) -> VolumeGeometry:
    """Rotated, anisotropic: any axis or LPS/RAS mix-up shows in the heatmap's geometry."""
    return VolumeGeometry(size, (0.7, 0.9, 2.5), (-12.5, 30.0, 81.0), rotation(7))


def ct_array(geometry: VolumeGeometry, seed: int = 0) -> np.ndarray:
    """An int16 CT-like volume (air around a bright blob), KJI order."""
    rng = np.random.default_rng(seed)
    k, j, i = np.meshgrid(*(np.linspace(-1, 1, n) for n in geometry.array_shape), indexing="ij")
    blob = np.exp(-((k - 0.2) ** 2 + (j + 0.1) ** 2 + (i - 0.3) ** 2) / 0.1)
    return (-1000 + 1500 * blob + 20 * rng.normal(size=geometry.array_shape)).astype(np.int16)


@contextlib.contextmanager
def cli_server(*args: str, env: dict | None = None, startup_timeout: float = 90.0) -> Iterator[tuple[subprocess.Popen, str]]:
    """``photon serve --port 0 ARGS`` in a subprocess; yields (process, url) once it listens."""
    process = subprocess.Popen(
        [str(PHOTON), "serve", "--port", "0", "--log-level", "warning", *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, **(env or {})},
    )  # fmt: skip
    try:
        url, seen = None, []
        deadline = time.monotonic() + startup_timeout
        while url is None and time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line and process.poll() is not None:
                break
            seen.append(line)
            match = re.search(r"listening on (http://127\.0\.0\.1:\d+)", line)
            url = match.group(1) if match else None
        if url is None:
            raise RuntimeError("photon serve did not start:\n" + "".join(seen))
        yield process, url
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)
        process.stdout.close()


def raw_http(url: str, head: bytes, body_chunks=(), *, wait: float = 10.0) -> tuple[int, dict, bytes, int]:
    """Send a request by hand: the head, then body chunks until the server answers.

    Returns (status, headers, start of the response body, body bytes sent before the answer).
    """
    host, port = url.removeprefix("http://").split(":")
    sent = 0
    with socket.create_connection((host, int(port)), timeout=wait) as sock:
        sock.sendall(head)
        answered = False
        for chunk in body_chunks:
            view = memoryview(chunk)
            while view and not answered:
                readable, writable, _ = select.select([sock], [sock], [], wait)
                answered = bool(readable)
                if writable and not answered:
                    try:
                        count = sock.send(view)
                    except (BrokenPipeError, ConnectionResetError):
                        answered = True
                        break
                    view, sent = view[count:], sent + count
            if answered:
                break
        response = b""
        with contextlib.suppress(ConnectionResetError, TimeoutError):
            while not _complete(response):
                data = sock.recv(65536)
                if not data:
                    break
                response += data
    head_part, _, body = response.partition(b"\r\n\r\n")
    lines = head_part.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
    return status, headers, body, sent


def _complete(response: bytes) -> bool:
    head, separator, body = response.partition(b"\r\n\r\n")
    if not separator:
        return False
    match = re.search(rb"content-length:\s*(\d+)", head, flags=re.IGNORECASE)
    return match is None or len(body) >= int(match.group(1))
