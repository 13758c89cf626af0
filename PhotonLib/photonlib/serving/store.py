"""Volumes held by the server, and their prepared form, in one bounded LRU cache.

An uploaded volume is kept as decoded voxels until its first question; the worker then
prepares it (preprocessing + vision tower) and the entry keeps the :class:`PreparedCase`
instead of the voxels, so later questions skip that work. Entries are dropped least recently
used first when the cache is over its byte or count budget, or on ``DELETE``. Nothing is
written to disk.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np

from photonlib.geometry import VolumeGeometry
from photonlib.volume import PreparedVolume, Volume

if TYPE_CHECKING:
    from photonlib.inference import PreparedCase


@dataclass
class StoredVolume:
    """One cache entry. Jobs hold a reference, so a queued question survives an eviction."""

    volume_id: str
    geometry: VolumeGeometry
    dtype: str
    source_format: str
    voxel_bytes: int
    volume: Volume | None  # until prepared
    case: PreparedCase | None = None
    created_at: float = field(default_factory=time.time)
    last_used_at: float = field(default_factory=time.time)
    questions: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def nbytes(self) -> int:
        held = self.volume.array.nbytes if self.volume is not None else 0
        return held + (self.case.nbytes() if self.case is not None else 0)

    def prepared_case(self, prepare: Callable[[Volume], PreparedCase]) -> tuple[PreparedCase, bool]:
        """The prepared case, preparing it on first use; returns (case, cache_hit)."""
        with self.lock:
            if self.case is not None:
                return self.case, True
            if self.volume is None:  # cannot happen: the voxels go only once a case exists
                raise RuntimeError("volume has neither voxels nor a prepared case")
            self.case = prepare(self.volume)
            self.volume = None  # the prepared case is all later questions need
            return self.case, False

    def describe(self) -> dict:
        return {
            "volume_id": self.volume_id,
            "geometry": self.geometry.to_dict(),
            "dtype": self.dtype,
            "source_format": self.source_format,
            "voxels": self.geometry.voxel_count,
            "voxel_bytes": self.voxel_bytes,
            "prepared": self.case is not None,
            "memory_bytes": self.nbytes,
            "questions": self.questions,
            "created_at": self.created_at,
            "last_used_at": self.last_used_at,
        }


def geometry_only(prepared: PreparedVolume) -> PreparedVolume:
    """The mapping part of a prepared volume (grids, no voxels): enough to map a heatmap back."""
    return replace(prepared, array=np.zeros((0, 0, 0), np.float32))


class VolumeStore:
    """Thread-safe LRU of :class:`StoredVolume` bounded by bytes and by count."""

    def __init__(self, max_bytes: int, max_entries: int):
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self._entries: OrderedDict[str, StoredVolume] = OrderedDict()
        self._lock = threading.Lock()
        self.evictions = 0

    def add(self, volume_id: str, volume: Volume) -> tuple[StoredVolume, bool]:
        """Store a decoded volume; returns (entry, created). A known id only refreshes its entry."""
        with self._lock:
            entry = self._entries.get(volume_id)
            if entry is not None:
                self._touch(entry)
                return entry, False
            entry = StoredVolume(
                volume_id=volume_id,
                geometry=volume.geometry,
                dtype=volume.array.dtype.name,
                source_format=volume.source_format,
                voxel_bytes=int(volume.array.nbytes),
                volume=volume,
            )
            self._entries[volume_id] = entry
            self._evict()
            return entry, True

    def get(self, volume_id: str, *, touch: bool = True) -> StoredVolume | None:
        with self._lock:
            entry = self._entries.get(volume_id)
            if entry is not None and touch:
                self._touch(entry)
            return entry

    def delete(self, volume_id: str) -> bool:
        with self._lock:
            return self._entries.pop(volume_id, None) is not None

    def rebalance(self) -> None:
        """Re-apply the budget after an entry grew (its prepared case was added)."""
        with self._lock:
            self._evict()

    def stats(self) -> dict:
        with self._lock:
            return {
                "entries": len(self._entries),
                "bytes": sum(entry.nbytes for entry in self._entries.values()),
                "max_bytes": self.max_bytes,
                "max_entries": self.max_entries,
                "evictions": self.evictions,
            }

    def _touch(self, entry: StoredVolume) -> None:
        entry.last_used_at = time.time()
        self._entries.move_to_end(entry.volume_id)

    def _evict(self) -> None:
        # The most recently used entry always stays, even when it alone is over budget.
        while len(self._entries) > 1 and (
            len(self._entries) > self.max_entries or sum(e.nbytes for e in self._entries.values()) > self.max_bytes
        ):
            self._entries.popitem(last=False)
            self.evictions += 1
