"""bmp/utils/safe_load.py: weight files are read as data; a file that names code is refused."""

import argparse
import pickle
from collections import OrderedDict

import numpy as np
import pytest
import torch

from bmp.utils.safe_load import CLI_OPT_IN, RefusedPickleError, read_weights_file


def _assert_one_line_refusal(error: Exception, path, opt_in: str) -> None:
    message = str(error)
    assert "\n" not in message
    assert message.startswith(f"{path}: refused to unpickle 'posix.mkdir'")
    assert message.rstrip(".").endswith("lets the file run any code on this machine)")
    assert opt_in in message


@pytest.mark.parametrize("kind", ["pkl", "pth", "legacy_pth"])
def test_a_file_that_names_code_is_refused_in_one_line(crafted_weights, kind):
    files = crafted_weights({"w": torch.ones(2)})
    path = getattr(files, kind)
    with pytest.raises(RefusedPickleError) as e:
        read_weights_file(str(path))
    _assert_one_line_refusal(e.value, path, CLI_OPT_IN)
    assert not files.marker.exists()
    with pytest.raises(RefusedPickleError, match="set SOME.KEY True"):
        read_weights_file(str(path), opt_in="set SOME.KEY True")
    assert not files.marker.exists()


@pytest.mark.parametrize("kind", ["pkl", "pth", "legacy_pth"])
def test_the_opt_in_unpickles_fully(crafted_weights, kind):
    files = crafted_weights({"w": torch.ones(2)})
    data = read_weights_file(str(getattr(files, kind)), unsafe_unpickle=True)
    assert files.marker.is_dir()  # the payload ran: the opt-in is what it says
    assert np.array_equal(np.asarray(data["model"]["w"]), np.ones(2))


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_pkl_of_numpy_arrays_and_plain_containers_is_read(tmp_path, protocol):
    data = {
        "model": OrderedDict(
            [
                ("conv.weight", np.arange(6, dtype=np.float32).reshape(2, 3)),
                ("bn.num_batches_tracked", np.array(7, dtype=np.int64)),
                ("half", np.ones(2, dtype=np.float16)),
            ]
        ),
        "__author__": "someone",
        "matching_heuristics": True,
        "best": np.float64(0.5),
        "dtype": np.dtype("f4"),
        "raw": b"\x00\xff",
        "nested": [1, 2.0, (None, "x")],
    }
    path = tmp_path / "m.pkl"
    with open(path, "wb") as f:
        pickle.dump(data, f, protocol=protocol)
    loaded = read_weights_file(str(path))
    assert list(loaded["model"]) == list(data["model"])
    for key, value in data["model"].items():
        assert loaded["model"][key].dtype == value.dtype
        assert np.array_equal(loaded["model"][key], value)
    assert loaded["best"] == 0.5 and loaded["dtype"] == np.dtype("f4")
    assert loaded["raw"] == b"\x00\xff" and loaded["nested"] == [1, 2.0, (None, "x")]


@pytest.mark.parametrize("zip_format", [True, False])
def test_pth_with_what_training_checkpoints_hold_is_read(tmp_path, zip_format):
    """Tensors, plus the numpy scalars / arrays and argparse arguments the allow-list names."""
    data = {
        "state_dict": OrderedDict([("w", torch.arange(4.0)), ("i", torch.tensor(3))]),
        "epoch": 12,
        "best_miou": np.float64(0.71),
        "confusion": np.eye(3, dtype=np.int64),
        "args": argparse.Namespace(lr=6e-5, backbone="mit_b1"),
    }
    path = tmp_path / "m.pth"
    torch.save(data, path, _use_new_zipfile_serialization=zip_format)
    loaded = read_weights_file(str(path))
    assert torch.equal(loaded["state_dict"]["w"], torch.arange(4.0))
    assert loaded["best_miou"] == np.float64(0.71)
    assert np.array_equal(loaded["confusion"], np.eye(3))
    assert loaded["args"] == argparse.Namespace(lr=6e-5, backbone="mit_b1")


def test_a_global_outside_the_allow_list_is_refused_even_if_harmless(tmp_path):
    """The allow-list is closed: anything it does not name is refused, not judged."""
    path = tmp_path / "m.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": {"w": np.ones(1)}, "when": argparse.Namespace(a=1)}, f)
    with pytest.raises(RefusedPickleError, match="'argparse.Namespace'"):
        read_weights_file(str(path))
