"""Batch and branch outputs (bmp.modeling.structures)."""

import pytest
import torch
import torch.nn.functional as F

from bmp.modeling.structures import Batch, BranchOutputs


def test_upsampled_logits_and_missing_segmentation():
    cam = torch.rand(1, 2, 3, 4)
    out = BranchOutputs(torch.zeros(1, 2), cam, None, None, (6, 8))
    expected = F.interpolate(cam, size=(6, 8), mode="bilinear", align_corners=False)
    torch.testing.assert_close(out.cam_up(), expected)
    with pytest.raises(ValueError, match="no segmentation"):
        out.seg_up()
    same = BranchOutputs(torch.zeros(1, 2), cam, cam, None, (3, 4))
    assert same.seg_up() is cam  # already at the input size: no resize


def test_batch_size():
    batch = Batch(torch.zeros(2, 3, 5, 7), torch.zeros(2, 3, 5, 7), torch.ones(2, 5, 7), None)
    assert batch.size == (5, 7)
