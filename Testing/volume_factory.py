"""Helpers that build test volumes with known geometry (imported by tests across folders)."""

from __future__ import annotations

import numpy as np

from photonlib.geometry import VolumeGeometry
from photonlib.volume import Volume


def rotation(seed: int) -> np.ndarray:
    """A random proper rotation (det +1): an oblique direction matrix."""
    matrix, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    return matrix * np.sign(np.linalg.det(matrix))


def voxel_positions_lps(geometry: VolumeGeometry) -> np.ndarray:
    """LPS position of every voxel centre, shape (K, J, I, 3)."""
    k, j, i = np.meshgrid(*(np.arange(n) for n in geometry.array_shape), indexing="ij")
    ijk = np.stack([i, j, k], axis=-1).reshape(-1, 3)
    return geometry.index_to_lps(ijk).reshape(*geometry.array_shape, 3)


def ct_with_sphere(geometry: VolumeGeometry, centre_lps, radius_mm: float, *, inside=800.0, outside=-1000.0):
    """A CT-like volume (HU) of air with a bright sphere at a physical position."""
    distance = np.linalg.norm(voxel_positions_lps(geometry) - np.asarray(centre_lps), axis=-1)
    array = np.where(distance <= radius_mm, inside, outside).astype(np.float32)
    return Volume(array=array, geometry=geometry, source_format="nrrd"), distance <= radius_mm


def gradient_volume(geometry: VolumeGeometry, dtype=np.int16) -> np.ndarray:
    """A KJI array whose value encodes its voxel index (i + 7 j + 31 k): any axis mix-up shows."""
    k, j, i = np.meshgrid(*(np.arange(n) for n in geometry.array_shape), indexing="ij")
    return (i + 7 * j + 31 * k - 500).astype(dtype)
