"""How ``photon serve`` is configured, and the one rule that decides whether it may start."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from photonlib.errors import ConfigurationError
from photonlib.volume.image import ReadLimits

MIB = 1024 * 1024
#: Shorter tokens are refused: a bearer token is the only thing between the network and the model.
MIN_TOKEN_LENGTH = 16


class UnsafeBindError(ConfigurationError):
    """Listening on a non-loopback address without a token (or with a weak one)."""


@dataclass(frozen=True)
class ServerSettings:
    """Everything the HTTP service needs besides the engine. Sizes in bytes, times in seconds."""

    host: str = "127.0.0.1"
    port: int = 8765
    token: str | None = field(default=None, repr=False)  # never printed, never logged
    max_upload_bytes: int = 1024 * MIB
    read_limits: ReadLimits = ReadLimits()
    cache_bytes: int = 4096 * MIB  # prepared volumes kept for further questions
    cache_entries: int = 16
    queue_size: int = 8  # questions waiting for the worker (the running one not counted)
    job_timeout_s: float = 600.0  # one question, from the moment the worker starts it
    upload_timeout_s: float = 300.0  # whole upload
    upload_idle_timeout_s: float = 30.0  # longest wait for the next chunk of an upload
    ask_wait_s: float = 300.0  # POST /v1/ask waits this long, then answers 202 with the job
    max_new_tokens: int = 1024
    default_max_new_tokens: int = 128
    max_question_chars: int = 4000
    max_history_turns: int = 32
    jobs_kept: int = 256  # finished jobs remembered (results, heatmaps); oldest dropped first
    retry_after_s: int = 5  # Retry-After of a 503 when the queue is full

    def __post_init__(self) -> None:
        for name in ("max_upload_bytes", "cache_bytes", "cache_entries", "queue_size", "max_new_tokens", "jobs_kept"):
            if getattr(self, name) < 1:
                raise ConfigurationError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("job_timeout_s", "upload_timeout_s", "upload_idle_timeout_s", "ask_wait_s"):
            if not getattr(self, name) > 0:
                raise ConfigurationError(f"{name} must be positive, got {getattr(self, name)}")
        if not 1 <= self.default_max_new_tokens <= self.max_new_tokens:
            raise ConfigurationError("default_max_new_tokens must be between 1 and max_new_tokens")
        if not 0 <= self.port <= 65535:
            raise ConfigurationError(f"port must be 0..65535, got {self.port}")

    @property
    def auth_required(self) -> bool:
        return self.token is not None

    def limits(self) -> dict:
        """The limits a client may want to check before sending (``GET /v1/info``)."""
        return {
            "max_upload_bytes": self.max_upload_bytes,
            "max_voxels": self.read_limits.max_voxels,
            "max_dimension": self.read_limits.max_dimension,
            "max_new_tokens": self.max_new_tokens,
            "default_max_new_tokens": self.default_max_new_tokens,
            "max_question_chars": self.max_question_chars,
            "max_history_turns": self.max_history_turns,
            "queue_size": self.queue_size,
            "job_timeout_s": self.job_timeout_s,
            "upload_timeout_s": self.upload_timeout_s,
        }


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost: it may resolve to anything


def check_bind_safety(host: str, token: str | None) -> None:
    """Refuse to listen beyond this machine without a token, and refuse weak tokens anywhere."""
    if token is not None and len(token) < MIN_TOKEN_LENGTH:
        raise UnsafeBindError(
            f"the token is {len(token)} characters long; use at least {MIN_TOKEN_LENGTH} random characters, "
            "e.g. python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )
    if token is None and not is_loopback(host):
        raise UnsafeBindError(
            f"refusing to listen on {host} without a token: anyone who can reach this address could use the "
            "server; set PHOTON_TOKEN (or --token-file FILE) or listen on 127.0.0.1"
        )
