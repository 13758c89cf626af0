"""The backend's settings (Edit > Application Settings > Photon), without Qt.

Four things are remembered between Slicer sessions, in Slicer's settings (``qt.QSettings``):
the Python that runs the local backend, the device it runs the model on, the remote backends
used recently, and how long a question waits for a busy backend. Never a token: tokens live in
memory only.
:class:`BackendSettings` reads and writes them through any object with QSettings' ``value`` and
``setValue`` (a dict-backed store in tests).
"""

from __future__ import annotations

import math
from typing import Any, Protocol

PYTHON_KEY = "PhotonSlicer/BackendPython"
DEVICE_KEY = "PhotonSlicer/Device"
RECENT_URLS_KEY = "PhotonSlicer/RecentUrls"
BUSY_WAIT_KEY = "PhotonSlicer/BusyWaitSeconds"
KEYS = (PYTHON_KEY, DEVICE_KEY, RECENT_URLS_KEY, BUSY_WAIT_KEY)

#: ``auto``: the GPU when the backend's PyTorch sees one, else the CPU.
DEVICES = ("auto", "cuda", "cpu")
DEVICE_LABELS = {
    "auto": "auto (GPU if there is one)",
    "cuda": "cuda (NVIDIA GPU)",
    "cpu": "cpu (slow, no GPU memory needed)",
}
DEFAULT_DEVICE = "auto"
MAX_RECENT_URLS = 8
#: Seconds a question waits for a backend busy with other questions (its queue full) before it
#: fails; 0: fail at once. On by default: someone sharing a backend would rather wait a minute or
#: two than press Ask again and again.
DEFAULT_BUSY_WAIT_S = 120
MAX_BUSY_WAIT_S = 3600


class SettingsStore(Protocol):
    """``qt.QSettings`` as far as it is used here."""

    def value(self, key: str, default: Any = None) -> Any: ...

    def setValue(self, key: str, value: Any) -> None: ...  # noqa: N802


class DictStore:
    """A :class:`SettingsStore` in memory (tests, scripts)."""

    def __init__(self, values: dict[str, Any] | None = None):
        self.values = dict(values or {})

    def value(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    def setValue(self, key: str, value: Any) -> None:  # noqa: N802
        self.values[key] = value


def normalise_device(value: Any) -> str:
    """A stored device as one of :data:`DEVICES` (``cuda:1`` kept as given; anything else: auto)."""
    text = str(value or "").strip().lower()
    if text in DEVICES or (text.startswith("cuda:") and text[5:].isdigit()):
        return text
    return DEFAULT_DEVICE


def normalise_busy_wait(value: Any) -> int:
    """A stored wait as whole seconds in 0..:data:`MAX_BUSY_WAIT_S` (not a number: the default)."""
    try:
        seconds = float(str(value).strip())  # QSettings may give back a string
    except ValueError:
        return DEFAULT_BUSY_WAIT_S
    if math.isnan(seconds):
        return DEFAULT_BUSY_WAIT_S
    return int(min(max(seconds, 0), MAX_BUSY_WAIT_S))


def _as_list(value: Any) -> list[str]:
    # QSettings gives back a list, a single string (one entry) or None, depending on the platform.
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [value]
    return [str(item) for item in value if str(item).strip()]


def remember_url(recent: list[str], url: str, limit: int = MAX_RECENT_URLS) -> list[str]:
    """``url`` first, then the others (no duplicates, trailing slash ignored), at most ``limit``."""
    url = url.strip().rstrip("/")
    if not url:
        return list(recent)[:limit]
    others = [item for item in recent if item.strip().rstrip("/") != url]
    return ([url] + others)[:limit]


class BackendSettings:
    """The Photon settings in ``store`` (``qt.QSettings()`` in Slicer)."""

    def __init__(self, store: SettingsStore):
        self.store = store

    @property
    def python(self) -> str:
        """The local backend's Python ("" = Slicer's own PythonSlicer)."""
        return str(self.store.value(PYTHON_KEY, "") or "").strip()

    @python.setter
    def python(self, value: str) -> None:
        self.store.setValue(PYTHON_KEY, str(value or "").strip())

    @property
    def device(self) -> str:
        return normalise_device(self.store.value(DEVICE_KEY, DEFAULT_DEVICE))

    @device.setter
    def device(self, value: str) -> None:
        device = normalise_device(value)
        if device != str(value or "").strip().lower():
            raise ValueError(f"device must be one of {', '.join(DEVICES)} (or cuda:N), not {value!r}")
        self.store.setValue(DEVICE_KEY, device)

    @property
    def busy_wait_s(self) -> int:
        """Seconds a question waits for a busy backend (0: it fails at once)."""
        return normalise_busy_wait(self.store.value(BUSY_WAIT_KEY, DEFAULT_BUSY_WAIT_S))

    @busy_wait_s.setter
    def busy_wait_s(self, value: int) -> None:
        try:
            seconds = int(value)
        except (TypeError, ValueError):
            seconds = -1
        if seconds != value or not 0 <= seconds <= MAX_BUSY_WAIT_S:
            raise ValueError(f"the wait for a busy backend is 0 to {MAX_BUSY_WAIT_S} whole seconds, not {value!r}")
        self.store.setValue(BUSY_WAIT_KEY, seconds)

    @property
    def recent_urls(self) -> list[str]:
        return _as_list(self.store.value(RECENT_URLS_KEY, []))[:MAX_RECENT_URLS]

    def add_recent_url(self, url: str) -> list[str]:
        """Remember a remote backend that answered (its token is not remembered)."""
        urls = remember_url(self.recent_urls, url)
        self.store.setValue(RECENT_URLS_KEY, urls)
        return urls

    def clear_recent_urls(self) -> None:
        self.store.setValue(RECENT_URLS_KEY, [])
