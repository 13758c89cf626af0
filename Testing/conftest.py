"""Shared pytest setup and fixtures.

Tests never touch the network or a model hub; volumes are made here, written to real files
and read back.
"""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture
def oblique_direction():
    # Imported here, not at the top: the Slicer-side tests also run in a Python that has only
    # what Slicer's Python has (no SimpleITK, which support.volumes needs), see Testing/photonslicer_tests/conftest.py.
    from support.volumes import rotation

    return rotation(7)


@pytest.fixture(scope="session")
def example_volume_path():
    from photonlib.cli.volume_options import EXAMPLE_VOLUME

    return EXAMPLE_VOLUME
