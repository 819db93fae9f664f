"""Shared pytest setup: deterministic, quiet, and never touching the user's dataset folders."""

import logging
import os
import pickle
from types import SimpleNamespace

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


class _Payload:
    """Unpickling this creates the folder ``marker``: a harmless stand-in for the code a crafted
    weight file runs when it is unpickled fully."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


@pytest.fixture
def crafted_weights(tmp_path):
    """``make(state)`` writes weight files that run code when unpickled fully: ``state`` (a state
    dict) under ``model`` next to a payload, as ``.pkl`` (pickle.dump, numpy arrays, detectron2's
    layout), ``.pth`` (torch.save) and ``legacy.pth`` (torch's pre-zip format). The payload
    creates ``.marker``, which a test checks for."""

    def make(state):
        folder = tmp_path / "crafted"
        folder.mkdir()
        marker = folder / "payload_ran"
        files = SimpleNamespace(
            pkl=folder / "weights.pkl",
            pth=folder / "weights.pth",
            legacy_pth=folder / "legacy.pth",
            marker=marker,
        )
        arrays = {k: v.numpy() for k, v in state.items()}
        with open(files.pkl, "wb") as f:
            pickle.dump({"model": arrays, "__author__": "x", "payload": _Payload(str(marker))}, f)
        torch.save({"model": dict(state), "payload": _Payload(str(marker))}, files.pth)
        torch.save(
            {"model": dict(state), "payload": _Payload(str(marker))},
            files.legacy_pth,
            _use_new_zipfile_serialization=False,
        )
        return files

    return make


@pytest.fixture
def cli_refuses_then_trusts(capsys):
    """``check(main, src, dst, marker)``: see :func:`_cli_refuses_then_trusts`."""
    return lambda main, src, dst, marker: _cli_refuses_then_trusts(main, src, dst, marker, capsys)


def _cli_refuses_then_trusts(main, src: str, dst, marker, capsys) -> None:
    """A converter's ``main`` refuses the crafted file ``src`` in one line without running it or
    writing ``dst``, and converts it with ``--unsafe-unpickle`` (then its payload runs)."""
    assert main([src, str(dst)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {src}: refused to unpickle")
    assert "'posix.mkdir'" in err and "--unsafe-unpickle" in err
    assert not marker.exists() and not dst.exists()
    assert main([src, str(dst), "--unsafe-unpickle"]) == 0  # the user trusts it
    assert marker.is_dir() and dst.exists()
