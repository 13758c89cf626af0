"""DICOM series reading (placeholder, being written)."""

from __future__ import annotations

from pathlib import Path

from photonlib.volume.image import ReadLimits, Volume


def read_dicom_series(path: Path, *, series_uid: str | None = None, limits: ReadLimits = ReadLimits()) -> Volume:
    raise NotImplementedError
