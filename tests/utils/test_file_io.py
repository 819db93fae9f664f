"""bmp/utils/file_io.py: atomic writes."""

import torch

from bmp.utils.file_io import atomic_torch_save


def test_atomic_torch_save_replaces_whole_file(tmp_path):
    path = str(tmp_path / "x.pth")
    atomic_torch_save({"a": torch.ones(3)}, path)
    atomic_torch_save({"a": torch.zeros(3)}, path)
    assert torch.equal(torch.load(path)["a"], torch.zeros(3))
