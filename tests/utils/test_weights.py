"""bmp/utils/weights.py: weight files of every layout the tools meet."""

import pytest
import torch

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
