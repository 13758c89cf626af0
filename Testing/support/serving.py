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
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from photonlib.geometry import VolumeGeometry
from photonlib.inference import PhotonEngine
from photonlib.serving.app import create_app
from photonlib.serving.server import BackgroundServer
from photonlib.serving.settings import ServerSettings

from support.models import RANDOM_MODEL_NAME, random_tiny_model
from support.volumes import rotation

PHOTON = Path(sys.executable).with_name("photon")
TOKEN = "test-token-0123456789abcdef"
#: The tiny random model repeats one token and never ends on its own: long answers are slow
#: enough (about 4 ms a token on 2 CPU cores) to cancel, time out or fill the queue.
LONG_ANSWER = 100_000


@functools.lru_cache(maxsize=1)
def tiny_engine() -> PhotonEngine:
    """One engine for the whole session (servers run one at a time; the engine has a lock)."""
    model, processor = random_tiny_model()
    return PhotonEngine(model, processor, RANDOM_MODEL_NAME, "cpu")


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


#: How long a test waits for a server or a job to reach a state (a child's start-up has its own).
WAIT_S = 20.0
#: Lines of a child's output quoted when it dies or stops answering.
LOG_TAIL_LINES = 30


class ChildOutput:
    """Reads a child process's output in a thread, so neither side ever blocks on the pipe.

    The child never stalls on a full pipe (its log is drained all the time), and the test can
    look for a line with a deadline and quote the last lines when something goes wrong.
    """

    def __init__(self, stream):
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._read, args=(stream,), name="child-output", daemon=True)
        self._thread.start()

    def _read(self, stream) -> None:
        try:
            for line in iter(stream.readline, ""):
                with self._changed:
                    self.lines.append(line.rstrip("\n"))
                    self._changed.notify_all()
        except (OSError, ValueError):  # the pipe was closed under us
            pass
        finally:
            with self._changed:
                self._closed = True
                self._changed.notify_all()

    def wait_for(self, pattern: str, timeout: float) -> re.Match | None:
        """The first line matching ``pattern`` once it arrives; None at the deadline or end of output."""
        deadline = time.monotonic() + timeout
        checked = 0
        with self._changed:
            while True:
                for line in self.lines[checked:]:
                    match = re.search(pattern, line)
                    if match:
                        return match
                checked = len(self.lines)
                remaining = deadline - time.monotonic()
                if self._closed or remaining <= 0:
                    return None
                self._changed.wait(min(remaining, 0.5))

    def tail(self, count: int = LOG_TAIL_LINES) -> str:
        with self._changed:
            return "\n".join(self.lines[-count:])

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)


@dataclass
class ServerProcess:
    """A running ``photon serve`` child: its process, its URL and its output so far."""

    process: subprocess.Popen
    url: str
    output: ChildOutput

    def report(self, what: str) -> str:
        """``what`` with the child's state and its last log lines, for an assertion message."""
        return child_report(what, self.process, self.output)


def child_report(what: str, process: subprocess.Popen, output: ChildOutput) -> str:
    code = process.poll()
    state = "still running" if code is None else f"exited with code {code}"
    return f"{what}; photon serve {state}. Its last log lines:\n{output.tail() or '(no output)'}"


@contextlib.contextmanager
def cli_server(*args: str, env: dict | None = None, startup_timeout: float = 60.0) -> Iterator[ServerProcess]:
    """``photon serve --port 0 ARGS`` in a subprocess, once it listens; killed on exit.

    Fails as soon as the child exits (with its exit code and last log lines), or after
    ``startup_timeout`` seconds without a "listening on" line.
    """
    process = subprocess.Popen(
        [str(PHOTON), "serve", "--port", "0", "--log-level", "warning", *args],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
    )  # fmt: skip
    output = ChildOutput(process.stdout)
    try:
        match = output.wait_for(r"listening on (http://127\.0\.0\.1:\d+)", startup_timeout)
        if match is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(1)  # it closed its output: let it finish dying, for the exit code
            reason = "exited before listening" if process.poll() is not None else f"did not listen within {startup_timeout:g} s"
            raise RuntimeError(child_report(f"photon serve {reason}", process, output))
        yield ServerProcess(process, match.group(1), output)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)
        output.join(5)
        process.stdout.close()


def wait_until(condition, *, timeout: float = WAIT_S, interval: float = 0.01, what: str = "the condition", server: ServerProcess | None = None):
    """Poll ``condition`` until it returns something true; fail after ``timeout`` seconds.

    ``condition`` may raise AssertionError to fail at once (e.g. a job that ended first). With
    ``server``, a dead child fails at once too, and the failure quotes its last log lines.
    """
    deadline = time.monotonic() + timeout
    while True:
        if server is not None and server.process.poll() is not None:
            raise AssertionError(server.report(f"waiting for {what}"))
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            message = f"{what} not reached within {timeout:g} s"
            raise AssertionError(server.report(message) if server is not None else message)
        time.sleep(interval)


def wait_for_tokens(client, job_id: str, count: int, *, timeout: float = WAIT_S, server: ServerProcess | None = None):
    """The job's progress once it has generated more than ``count`` tokens; fails at once if it ends first."""

    def generated():
        progress = client.job(job_id)
        if progress.finished:
            error = progress.raw.get("error") or {}
            message = f"job {job_id} ended ({progress.status}: {error.get('message', 'no error')}) after {progress.tokens_generated} tokens, before {count + 1}"
            raise AssertionError(server.report(message) if server is not None else message)
        return progress if progress.tokens_generated > count else None

    return wait_until(generated, timeout=timeout, what=f"more than {count} tokens of job {job_id}", server=server)


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
