"""Helpers the test trees share (``Testing/`` is on the test path: see ``Testing/pytest.ini``).

- :mod:`support.volumes`: volumes with known geometry (SimpleITK);
- :mod:`support.dicom_series`: real DICOM series written with pydicom;
- :mod:`support.models`: tiny seeded Photon models and inputs (PyTorch);
- :mod:`support.serving`: real servers around a tiny model, in a thread or a ``photon serve`` process.

This module itself imports nothing beyond the standard library: the Slicer-side tests, which run in
a Python like Slicer's own, import it too.
"""

from pathlib import Path

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]
#: The read-only folder beside the checkout (the 3D-RAD questions, Slicer's Python package).
SHARED = REPOSITORY_ROOT.parent / "shared"
