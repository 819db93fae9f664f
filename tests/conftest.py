"""Shared pytest setup: deterministic, quiet, and never touching the user's dataset folders."""

import os

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _private_datasets_root(tmp_path_factory):
    """Tests never read or write the user's $DETECTRON2_DATASETS: an empty root by default."""
    saved = os.environ.get("DETECTRON2_DATASETS")
    os.environ["DETECTRON2_DATASETS"] = str(tmp_path_factory.mktemp("no_datasets"))
    yield
    if saved is None:
        del os.environ["DETECTRON2_DATASETS"]
    else:
        os.environ["DETECTRON2_DATASETS"] = saved


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
