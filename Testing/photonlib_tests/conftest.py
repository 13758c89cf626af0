"""Fixtures shared by the PhotonLib model tests (module-scoped: each test module gets its own)."""

from __future__ import annotations

import pytest

from support.models import tiny_model, tiny_processor


@pytest.fixture(scope="module")
def model():
    """A tiny seeded Photon whose ITS drops a real share of tokens."""
    return tiny_model(seed=0)


@pytest.fixture(scope="module")
def processor(model):
    return tiny_processor(model)
