"""Multi-scale + flip fusion, normalisation and CAM confidence (bmp.modeling.cam)."""

import pytest
import torch
import torch.nn.functional as F

from bmp.modeling.cam import (
    cam_confidence,
    fuse_multiscale_cams,
    fuse_multiscale_seg,
    merge_flip,
    minmax_normalize,
)


def _flip_pair(x: torch.Tensor, flipped_maps: torch.Tensor) -> torch.Tensor:
    """(2B, ...) batch of maps of images and of their flipped copies."""
    return torch.cat([x, flipped_maps], dim=0)


def test_merge_flip_unflips_the_second_half():
    orig = torch.tensor([[[[1.0, 2.0, 3.0]]]])  # (1, 1, 1, 3), asymmetric
    flipped_maps = torch.tensor([[[[30.0, 0.0, 10.0]]]])  # maps of the flipped image
    x = _flip_pair(orig, flipped_maps)
    # Un-flipped second half is [10, 0, 30].
    assert merge_flip(x, "max").tolist() == [[[[10.0, 2.0, 30.0]]]]
    assert merge_flip(x, "mean").tolist() == [[[[5.5, 1.0, 16.5]]]]


def test_merge_flip_of_true_flip_maps_is_identity():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 4, 5)
    pair = _flip_pair(x, x.flip(-1))
    assert torch.equal(merge_flip(pair, "max"), x)
    assert torch.allclose(merge_flip(pair, "mean"), x)


def test_merge_flip_rejects_bad_mode_and_odd_batch():
    with pytest.raises(ValueError, match="max"):
        merge_flip(torch.zeros(2, 1, 2, 2), "sum")
    with pytest.raises(ValueError, match="even"):
        merge_flip(torch.zeros(3, 1, 2, 2), "max")


def _reference_fuse(maps, size, mode):
    total = 0
    for x in maps:
        r = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        m = merge_flip(r, mode)
        total = total + (F.relu(m) if mode == "max" else m)
    return total


def test_fuse_multiscale_cams_matches_resize_merge_relu_sum():
    torch.manual_seed(0)
    b, k = 2, 3
    maps = [torch.randn(2 * b, k, 5, 6), torch.randn(2 * b, k, 3, 3), torch.randn(2 * b, k, 8, 9)]
    out = fuse_multiscale_cams(maps, (10, 12))
    assert out.shape == (b, k, 10, 12)
    assert torch.allclose(out, _reference_fuse(maps, (10, 12), "max"), atol=1e-6)
    assert (out >= 0).all()


def test_fuse_multiscale_cams_relu_per_scale_by_hand():
    # Two scales already at the target size: relu(max) then sum.
    s1 = torch.tensor([[[[-1.0, 2.0]]], [[[-3.0, -5.0]]]])  # orig [-1, 2], flip -> [-5, -3]
    s2 = torch.tensor([[[[4.0, -2.0]]], [[[1.0, -1.0]]]])  # orig [4, -2], flip -> [-1, 1]
    out = fuse_multiscale_cams([s1, s2], (1, 2))
    # scale1: max -> [-1, 2] -> relu [0, 2]; scale2: max -> [4, 1]
    assert out.tolist() == [[[[4.0, 3.0]]]]


def test_fuse_multiscale_seg_matches_resize_mean_sum_without_relu():
    torch.manual_seed(1)
    maps = [torch.randn(4, 4, 6, 6), torch.randn(4, 4, 3, 4)]
    out = fuse_multiscale_seg(maps, (12, 12))
    assert out.shape == (2, 4, 12, 12)
    assert torch.allclose(out, _reference_fuse(maps, (12, 12), "mean"), atol=1e-6)
    assert (out < 0).any()  # no ReLU


def test_fuse_without_flip_and_bad_inputs():
    x = torch.randn(2, 3, 4, 4)
    assert torch.allclose(fuse_multiscale_seg([x, x], (4, 4), flip=False), 2 * x)
    with pytest.raises(ValueError, match="no scales"):
        fuse_multiscale_cams([], (4, 4))
    with pytest.raises(ValueError, match="same batch"):
        fuse_multiscale_cams([torch.zeros(4, 3, 2, 2), torch.zeros(4, 2, 2, 2)], (2, 2))


def test_minmax_normalize_is_per_image_and_per_channel():
    x = torch.tensor(
        [
            [[[1.0, 3.0], [5.0, 9.0]], [[-2.0, -2.0], [0.0, 2.0]]],
            [[[10.0, 20.0], [30.0, 50.0]], [[7.0, 7.0], [7.0, 7.0]]],
        ]
    )
    out = minmax_normalize(x)
    expected = torch.tensor(
        [
            [[[0.0, 2 / 8], [4 / 8, 1.0]], [[0.0, 0.0], [2 / 4, 1.0]]],
            [[[0.0, 10 / 40], [20 / 40, 1.0]], [[0.0, 0.0], [0.0, 0.0]]],
        ]
    )
    assert torch.allclose(out, expected, atol=1e-5)
    # The eps is added to the shifted max, so the max maps slightly below 1.
    assert out[0, 0, 1, 1].item() == pytest.approx(8 / (8 + 1e-5), abs=2e-7)
    assert out[0, 0, 1, 1].item() < 1.0
    assert minmax_normalize(x, eps=1.0)[0, 0, 1, 1].item() == pytest.approx(8 / 9)


def test_cam_confidence_is_max_sigmoid_and_detached():
    logits = torch.tensor([[[[0.0, -10.0]], [[2.0, -20.0]]]], requires_grad=True)
    conf = cam_confidence(logits)
    assert conf.shape == (1, 1, 1, 2)
    assert torch.allclose(conf, torch.sigmoid(torch.tensor([[[[2.0, -10.0]]]])))
    assert not conf.requires_grad
    # Used as interaction weights: no gradient reaches the CAM logits through them.
    feats = torch.ones(1, 4, 1, 2, requires_grad=True)
    (feats * conf).sum().backward()
    assert logits.grad is None
    assert feats.grad is not None


def test_fuse_does_not_modify_inputs_and_supports_autograd():
    x = torch.randn(2, 3, 4, 4, requires_grad=True)
    before = x.detach().clone()
    out = fuse_multiscale_cams([x], (4, 4), flip=False)
    assert torch.equal(x.detach(), before)
    assert torch.equal(out, F.relu(before))
    pair = torch.randn(4, 3, 2, 2, requires_grad=True)
    fuse_multiscale_cams([pair, pair], (4, 4)).sum().backward()
    assert pair.grad is not None and torch.isfinite(pair.grad).all()
