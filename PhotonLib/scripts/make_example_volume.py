"""Rebuild the bundled example volume ``photonlib/examples/phantom_ct.nrrd``.

A small synthetic chest/abdomen CT in Hounsfield units (no patient data): body, lungs, liver
with one hypodense lesion, spleen, kidneys, aorta and spine, on an axial grid with anisotropic
spacing (3.5 x 3.5 x 5 mm, LPS). Deterministic: running it again gives the same file.

    python PhotonLib/scripts/make_example_volume.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

SIZE_IJK = (96, 96, 48)
SPACING_MM = (3.5, 3.5, 5.0)
OUTPUT = Path(__file__).resolve().parents[1] / "photonlib" / "examples" / "phantom_ct.nrrd"


def ellipsoid(points: np.ndarray, centre, radii) -> np.ndarray:
    offset = (points - np.asarray(centre)) / np.asarray(radii)
    return np.sum(offset**2, axis=-1) <= 1.0


def main() -> None:
    size, spacing = np.array(SIZE_IJK), np.array(SPACING_MM)
    origin = -(size - 1) * spacing / 2  # field of view centred on the patient origin
    k, j, i = np.meshgrid(*(np.arange(n) for n in SIZE_IJK[::-1]), indexing="ij")
    # LPS millimetres of every voxel centre: x toward patient left, y posterior, z superior.
    points = np.stack([origin[0] + i * spacing[0], origin[1] + j * spacing[1], origin[2] + k * spacing[2]], axis=-1)
    x, y, z = points[..., 0], points[..., 1], points[..., 2]

    hu = np.full(points.shape[:3], -1000.0)  # air
    body = (x / 150) ** 2 + (y / 105) ** 2 <= 1
    hu[body] = -90.0  # fat
    hu[body & ((x / 135) ** 2 + (y / 92) ** 2 <= 1)] = 40.0  # soft tissue
    chest = z > 20
    hu[chest & ellipsoid(points, (-65, 0, 70), (50, 70, 60))] = -850.0  # right lung
    hu[chest & ellipsoid(points, (65, 0, 70), (48, 70, 60))] = -850.0  # left lung
    hu[ellipsoid(points, (-60, -5, -10), (65, 60, 45))] = 60.0  # liver (patient right)
    hu[ellipsoid(points, (-45, -10, -5), (15, 15, 15))] = 15.0  # liver lesion, 30 mm
    hu[ellipsoid(points, (75, 25, -5), (25, 35, 30))] = 50.0  # spleen
    hu[ellipsoid(points, (-55, 55, -60), (22, 18, 45))] = 35.0  # right kidney
    hu[ellipsoid(points, (55, 55, -55), (22, 18, 45))] = 35.0  # left kidney
    hu[((x - 10) / 12) ** 2 + ((y - 35) / 12) ** 2 <= 1] = 180.0  # aorta (contrast)
    hu[(x / 18) ** 2 + ((y - 70) / 18) ** 2 <= 1] = 700.0  # vertebral bodies

    image = sitk.GetImageFromArray(np.round(hu).astype(np.int16))
    image.SetSpacing(tuple(float(s) for s in spacing))
    image.SetOrigin(tuple(float(o) for o in origin))
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(OUTPUT), True)
    print(f"wrote {OUTPUT} ({OUTPUT.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
