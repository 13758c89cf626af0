"""The one geometry type of PhotonLib: where every voxel of a volume sits in the patient.

Conventions (the same as ITK, SimpleITK and Slicer):

* A voxel index is ``(i, j, k)``: ``i`` runs fastest in memory. A NumPy array of the volume
  is indexed ``array[k, j, i]`` (SimpleITK's ``GetArrayFromImage`` and Slicer's
  ``arrayFromVolume`` both give this "KJI" order), so ``array.shape == size[::-1]``.
* ``spacing`` is the distance in millimetres between voxel centres along ``i``, ``j``, ``k``.
* ``direction`` is a 3x3 matrix whose columns are the unit vectors of the ``i``, ``j``, ``k``
  axes in patient coordinates. It may be oblique; it is orthonormal (possibly left-handed).
* Patient coordinates are stored in **LPS** (x toward patient Left, y toward Posterior, z
  toward Superior), as ITK and DICOM do. Slicer's world is **RAS**; the two differ by a sign
  flip of x and y: ``ras = diag(-1, -1, 1) @ lps``.
* The physical position of the centre of voxel ``(i, j, k)`` is
  ``origin + direction @ diag(spacing) @ (i, j, k)``; ``ijk_to_lps`` is that 4x4 affine and
  ``ijk_to_ras = diag(-1, -1, 1, 1) @ ijk_to_lps`` (what Slicer calls IJKToRAS).
* An orientation code such as ``"LPS"`` or ``"RAI"`` names, axis by axis (i, j, k), the
  anatomical direction toward which the index increases (DICOM/ITK convention: an identity
  direction is ``"LPS"``). Oblique axes take the closest anatomical direction.

This module needs NumPy only, so the HTTP client and the Slicer module can share it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

#: Multiplying LPS coordinates by this (or its 4x4 form) gives RAS, and the other way round.
LPS_TO_RAS_3X3 = np.diag([-1.0, -1.0, 1.0])
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

_AXIS_LETTERS_LPS = (("L", "R"), ("P", "A"), ("S", "I"))  # (positive, negative) per LPS axis


def _as_triple(values: Sequence[float], name: str, cast=float) -> tuple:
    triple = tuple(cast(v) for v in values)
    if len(triple) != 3:
        raise ValueError(f"{name} needs 3 values, got {len(triple)}")
    return triple


@dataclass(frozen=True)
class VolumeGeometry:
    """Size, spacing, origin and direction of a 3D voxel grid in patient space (LPS).

    Immutable and hashable; use :meth:`isclose` to compare with a tolerance.
    """

    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin_lps: tuple[float, float, float]
    direction_lps: tuple[tuple[float, float, float], ...]  # 3x3, row-major, columns = axes

    def __post_init__(self) -> None:
        object.__setattr__(self, "size", _as_triple(self.size, "size", int))
        object.__setattr__(self, "spacing", _as_triple(self.spacing, "spacing"))
        object.__setattr__(self, "origin_lps", _as_triple(self.origin_lps, "origin"))
        direction = np.asarray(self.direction_lps, dtype=float).reshape(3, 3)
        object.__setattr__(self, "direction_lps", tuple(tuple(float(v) for v in row) for row in direction))
        if any(n < 0 for n in self.size):
            raise ValueError(f"size must not be negative, got {self.size}")
        if not all(np.isfinite(s) and s > 0 for s in self.spacing):
            raise ValueError(f"spacing must be positive and finite, got {self.spacing}")
        if not np.all(np.isfinite(self.origin_lps)):
            raise ValueError(f"origin must be finite, got {self.origin_lps}")
        if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-4):
            raise ValueError(f"direction must be orthonormal, got {direction.tolist()}")

    # ----------------------------------------------------------------- constructors
    @classmethod
    def identity(cls, size: Sequence[int], spacing: Sequence[float] = (1.0, 1.0, 1.0)) -> VolumeGeometry:
        """A grid at the origin with identity direction (LPS axes) and the given spacing."""
        return cls(tuple(size), tuple(spacing), (0.0, 0.0, 0.0), np.eye(3))

    @classmethod
    def from_ijk_to_lps(cls, matrix: np.ndarray, size: Sequence[int]) -> VolumeGeometry:
        """Split a 4x4 IJK->LPS affine (no shear) into spacing, direction and origin."""
        matrix = np.asarray(matrix, dtype=float)
        if matrix.shape != (4, 4):
            raise ValueError(f"an IJK->LPS matrix must be 4x4, got shape {matrix.shape}")
        linear = matrix[:3, :3]
        spacing = np.linalg.norm(linear, axis=0)
        if np.any(spacing <= 0):
            raise ValueError("an IJK->LPS matrix must not have a zero column")
        return cls(tuple(size), tuple(spacing), tuple(matrix[:3, 3]), linear / spacing)

    @classmethod
    def from_ijk_to_ras(cls, matrix: np.ndarray, size: Sequence[int]) -> VolumeGeometry:
        """Build from Slicer's IJKToRAS 4x4 matrix and the (I, J, K) size."""
        return cls.from_ijk_to_lps(LPS_TO_RAS @ np.asarray(matrix, dtype=float), size)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VolumeGeometry:
        """Inverse of :meth:`to_dict` (JSON-friendly, used by the HTTP API)."""
        return cls(data["size"], data["spacing"], data["origin_lps"], data["direction_lps"])

    def to_dict(self) -> dict[str, Any]:
        """Plain lists and floats, safe for JSON."""
        return {
            "size": list(self.size),
            "spacing": list(self.spacing),
            "origin_lps": list(self.origin_lps),
            "direction_lps": [list(row) for row in self.direction_lps],
        }

    # ----------------------------------------------------------------- derived views
    @property
    def direction(self) -> np.ndarray:
        """Direction cosines in LPS as a 3x3 array (columns are the i, j, k axes)."""
        return np.array(self.direction_lps, dtype=float)

    @property
    def array_shape(self) -> tuple[int, int, int]:
        """Shape of the NumPy array of this grid, in KJI order."""
        return self.size[::-1]

    @property
    def voxel_count(self) -> int:
        return int(np.prod(self.size, dtype=np.int64))

    @property
    def origin_ras(self) -> tuple[float, float, float]:
        return tuple(LPS_TO_RAS_3X3 @ np.array(self.origin_lps))

    @property
    def direction_ras(self) -> np.ndarray:
        return LPS_TO_RAS_3X3 @ self.direction

    @property
    def ijk_to_lps(self) -> np.ndarray:
        """4x4 affine from voxel index (i, j, k, 1) to LPS millimetres."""
        matrix = np.eye(4)
        matrix[:3, :3] = self.direction @ np.diag(self.spacing)
        matrix[:3, 3] = self.origin_lps
        return matrix

    @property
    def ijk_to_ras(self) -> np.ndarray:
        """4x4 affine from voxel index to RAS millimetres (Slicer's IJKToRAS)."""
        return LPS_TO_RAS @ self.ijk_to_lps

    @property
    def lps_to_ijk(self) -> np.ndarray:
        return np.linalg.inv(self.ijk_to_lps)

    @property
    def ras_to_ijk(self) -> np.ndarray:
        return np.linalg.inv(self.ijk_to_ras)

    @property
    def orientation_code(self) -> str:
        """Closest anatomical orientation, e.g. ``"LPS"`` for an identity direction."""
        direction = self.direction
        letters = []
        used: set[int] = set()
        # Greedy by the strongest component so oblique axes never claim the same LPS axis twice.
        order = np.argsort(-np.max(np.abs(direction), axis=0))
        chosen: dict[int, str] = {}
        for column in order:
            candidates = [a for a in np.argsort(-np.abs(direction[:, column])) if a not in used]
            axis = int(candidates[0])
            used.add(axis)
            positive, negative = _AXIS_LETTERS_LPS[axis]
            chosen[int(column)] = positive if direction[axis, column] > 0 else negative
        for column in range(3):
            letters.append(chosen[column])
        return "".join(letters)

    @property
    def is_oblique(self) -> bool:
        """True when some axis is not parallel to an LPS axis (beyond 1e-6)."""
        direction = np.abs(self.direction)
        return bool(np.any((direction > 1e-6) & (direction < 1 - 1e-6)))

    @property
    def center_lps(self) -> np.ndarray:
        """Physical position of the centre of the grid's field of view."""
        return self.index_to_lps((np.array(self.size, dtype=float) - 1) / 2)

    # ----------------------------------------------------------------- mapping points
    def index_to_lps(self, ijk: np.ndarray) -> np.ndarray:
        """Continuous (i, j, k) indices, shape (3,) or (N, 3), to LPS millimetres."""
        ijk = np.asarray(ijk, dtype=float)
        return ijk @ (self.direction @ np.diag(self.spacing)).T + np.array(self.origin_lps)

    def index_to_ras(self, ijk: np.ndarray) -> np.ndarray:
        return self.index_to_lps(ijk) @ LPS_TO_RAS_3X3.T

    def lps_to_index(self, points_lps: np.ndarray) -> np.ndarray:
        """LPS millimetres, shape (3,) or (N, 3), to continuous (i, j, k) indices."""
        points = np.asarray(points_lps, dtype=float) - np.array(self.origin_lps)
        return points @ np.linalg.inv(self.direction @ np.diag(self.spacing)).T

    def ras_to_index(self, points_ras: np.ndarray) -> np.ndarray:
        return self.lps_to_index(np.asarray(points_ras, dtype=float) @ LPS_TO_RAS_3X3.T)

    # ----------------------------------------------------------------- comparison
    def isclose(self, other: VolumeGeometry, atol_mm: float = 1e-4, atol_direction: float = 1e-6) -> bool:
        """Same size, and spacing/origin/direction equal within tolerances."""
        return (
            self.size == other.size
            and np.allclose(self.spacing, other.spacing, atol=atol_mm, rtol=0)
            and np.allclose(self.origin_lps, other.origin_lps, atol=atol_mm, rtol=0)
            and np.allclose(self.direction, other.direction, atol=atol_direction, rtol=0)
        )

    def describe(self) -> dict[str, Any]:
        """Human/JSON summary used by ``photon info``."""
        return {
            "size": list(self.size),
            "spacing_mm": [round(s, 6) for s in self.spacing],
            "origin_lps_mm": [round(v, 6) for v in self.origin_lps],
            "origin_ras_mm": [round(float(v), 6) for v in self.origin_ras],
            "direction_lps": [[round(v, 6) for v in row] for row in self.direction_lps],
            "orientation": self.orientation_code,
            "oblique": self.is_oblique,
            "ijk_to_ras": [[round(float(v), 6) for v in row] for row in self.ijk_to_ras],
        }
