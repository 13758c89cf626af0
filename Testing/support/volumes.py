"""Helpers that build test volumes with known geometry (imported by tests across folders)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from photonlib.geometry import VolumeGeometry
from photonlib.volume import Volume, write_volume


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


def question_dataset(folder, answers) -> Path:
    """Small CT-like volumes (real NIfTI files, one per answer) and a JSON Lines file of a yes/no
    question about each, answered with ``answers[index]``; returns the JSONL path."""
    folder = Path(folder)
    rows = []
    for index, answer in enumerate(answers):
        geometry = VolumeGeometry((40, 40, 20), (3.0, 3.0, 6.0), (0.0, 0.0, 0.0), np.eye(3))
        array = np.random.default_rng(index).normal(0, 300, geometry.array_shape).astype(np.int16)
        array[0, 0, 0] = -1000
        write_volume(folder / f"case{index}.nii.gz", array, geometry)
        rows.append({"volume": f"case{index}.nii.gz", "question": f"Is there a lesion in case {index}?", "answer": answer})
    (folder / "data.jsonl").write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    return folder / "data.jsonl"
