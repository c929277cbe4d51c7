"""Shared fixtures. Tests run on CPU, offline, in minutes."""

import os

import pytest
import torch

# Two cores on CI: keep each worker to one BLAS/OpenMP thread so pytest-xdist's two workers do not fight.
torch.set_num_threads(1)
os.environ.setdefault("SALIENCY_CACHE", os.path.join(os.path.dirname(__file__), ".cache-never-used"))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """No test reads or writes the user's weight cache, and none may reach the network."""
    monkeypatch.setenv("SALIENCY_CACHE", str(tmp_path / "cache"))
    yield


@pytest.fixture
def procedural_generator():
    from discovery.generators import create_generator

    return create_generator("procedural")
