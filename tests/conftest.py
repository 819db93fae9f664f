"""Shared pytest setup: deterministic, quiet, and never touching the user's dataset folders."""

import os

import pytest
import torch


def pytest_configure(config):
    # Generated datasets in tests go to per-test temp dirs; this default only guards against
    # writing into a user's real $DETECTRON2_DATASETS by accident.
    os.environ.setdefault("BMP_TESTING", "1")


@pytest.fixture(autouse=True)
def _seed_everything():
    torch.manual_seed(0)
    yield


@pytest.fixture
def datasets_root(tmp_path, monkeypatch):
    """A private $DETECTRON2_DATASETS for tests that generate or register data."""
    root = tmp_path / "datasets"
    root.mkdir()
    monkeypatch.setenv("DETECTRON2_DATASETS", str(root))
    return root
