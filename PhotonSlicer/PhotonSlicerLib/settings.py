"""The backend's settings (Edit > Application Settings > Photon), without Qt.

Three things are remembered between Slicer sessions, in Slicer's settings (``qt.QSettings``):
the Python that runs the local backend, the device it runs the model on, and the remote
backends used recently. Never a token: tokens live in memory only.
:class:`BackendSettings` reads and writes them through any object with QSettings' ``value`` and
``setValue`` (a dict-backed store in tests).
"""

from __future__ import annotations

from typing import Any, Protocol

PYTHON_KEY = "PhotonSlicer/BackendPython"
DEVICE_KEY = "PhotonSlicer/Device"
RECENT_URLS_KEY = "PhotonSlicer/RecentUrls"
KEYS = (PYTHON_KEY, DEVICE_KEY, RECENT_URLS_KEY)

#: ``auto``: the GPU when the backend's PyTorch sees one, else the CPU.
DEVICES = ("auto", "cuda", "cpu")
DEVICE_LABELS = {
    "auto": "auto (GPU if there is one)",
    "cuda": "cuda (NVIDIA GPU)",
    "cpu": "cpu (slow, no GPU memory needed)",
}
DEFAULT_DEVICE = "auto"
MAX_RECENT_URLS = 8


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
    def recent_urls(self) -> list[str]:
        return _as_list(self.store.value(RECENT_URLS_KEY, []))[:MAX_RECENT_URLS]

    def add_recent_url(self, url: str) -> list[str]:
        """Remember a remote backend that answered (its token is not remembered)."""
        urls = remember_url(self.recent_urls, url)
        self.store.setValue(RECENT_URLS_KEY, urls)
        return urls

    def clear_recent_urls(self) -> None:
        self.store.setValue(RECENT_URLS_KEY, [])
