"""Shared pytest setup: deterministic, quiet, and never touching the user's dataset folders."""

import logging
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


def _all_loggers():
    named = [v for v in logging.root.manager.loggerDict.values() if isinstance(v, logging.Logger)]
    return [logging.root] + named


@pytest.fixture(autouse=True)
def _drop_log_handlers_added_by_the_test():
    """detectron2's ``setup_logger`` attaches handlers to the stream pytest captured for one test;
    left in place, a later test's logging writes to that closed stream."""
    before = {id(lg): set(lg.handlers) for lg in _all_loggers()}
    yield
    for lg in _all_loggers():
        for handler in set(lg.handlers) - before.get(id(lg), set()):
            lg.removeHandler(handler)


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
