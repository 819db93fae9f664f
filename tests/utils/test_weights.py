"""bmp/utils/weights.py: weight files of every layout the tools meet."""

import pickle
from collections import OrderedDict

import pytest
import torch

from bmp.utils.safe_load import RefusedPickleError
from bmp.utils.weights import CheckpointFormatError, load_state_dict_file, save_d2_checkpoint


def test_state_dict_file_formats(tmp_path):
    state = {"backbone.w": torch.arange(3.0)}
    for name in ("a.pth", "a.pkl"):
        save_d2_checkpoint(state, str(tmp_path / name), "test")
        loaded = load_state_dict_file(str(tmp_path / name))
        assert list(loaded) == ["backbone.w"]
        assert torch.equal(torch.as_tensor(loaded["backbone.w"]), torch.arange(3.0))
    torch.save({"state_dict": state, "epoch": 3}, tmp_path / "nested.pth")
    assert list(load_state_dict_file(str(tmp_path / "nested.pth"))) == ["backbone.w"]
    torch.save({"epoch": 3}, tmp_path / "empty.pth")
    with pytest.raises(CheckpointFormatError, match="empty.pth"):
        load_state_dict_file(str(tmp_path / "empty.pth"))
    with pytest.raises(CheckpointFormatError, match="does not exist"):
        load_state_dict_file(str(tmp_path / "missing.pth"))


@pytest.mark.parametrize("kind", ["pkl", "pth"])
def test_state_dict_file_that_names_code_is_refused(crafted_weights, kind):
    files = crafted_weights({"backbone.w": torch.ones(2)})
    with pytest.raises(RefusedPickleError, match=r"'posix.mkdir'.*--unsafe-unpickle") as e:
        load_state_dict_file(str(getattr(files, kind)))
    assert "\n" not in str(e.value) and str(getattr(files, kind)) in str(e.value)
    assert not files.marker.exists()
    loaded = load_state_dict_file(str(getattr(files, kind)), unsafe_unpickle=True)
    assert files.marker.is_dir() and list(loaded) == ["backbone.w"]


def test_state_dict_file_layouts_read_as_data(tmp_path):
    """What SegFormer, the authors and detectron2 write: a plain state dict (an OrderedDict),
    one under ``model`` or ``state_dict``, and detectron2's ``.pkl`` of numpy arrays."""
    state = OrderedDict(
        [("block1.0.attn.q.weight", torch.ones(2, 2)), ("norm1.bias", torch.ones(2))]
    )
    torch.save(state, tmp_path / "plain.pth")
    torch.save({"model": state, "iteration": 5}, tmp_path / "model.pth")
    torch.save({"state_dict": state, "meta": {"epoch": 3}}, tmp_path / "state_dict.pt")
    arrays = {k: v.numpy() for k, v in state.items()}
    with open(tmp_path / "d2.pkl", "wb") as f:
        pickle.dump({"model": arrays, "__author__": "x", "matching_heuristics": True}, f)
    for name in ("plain.pth", "model.pth", "state_dict.pt", "d2.pkl"):
        loaded = load_state_dict_file(str(tmp_path / name))
        assert list(loaded) == list(state), name
        assert all(torch.equal(torch.as_tensor(loaded[k]), state[k]) for k in state), name
