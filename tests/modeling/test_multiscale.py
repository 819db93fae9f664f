"""Multi-scale + flip passes, fusion and normalisation (bmp.modeling.multiscale)."""

import pytest
import torch
import torch.nn.functional as F

from bmp.modeling.multiscale import (
    fuse_multiscale,
    merge_flip,
    minmax_normalize,
    multiscale_logits,
    upsample_twice,
)
from bmp.modeling.structures import BranchOutputs


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


def _reference_fuse(maps, size, mode, pass_sizes=None):
    """Resize each pass's maps (to its pass size, then to ``size``), un-flip, merge, sum."""
    total = 0
    for i, x in enumerate(maps):
        if pass_sizes is not None:
            x = F.interpolate(x, size=pass_sizes[i], mode="bilinear", align_corners=False)
        r = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        m = merge_flip(r, mode)
        total = total + (F.relu(m) if mode == "max" else m)
    return total


def test_upsample_twice_by_hand_differs_from_one_resize():
    x = torch.tensor([[[[0.0, 1.0]]]])
    # [0, 1] -> width 3 gives [0, 0.5, 1]; that -> width 4 gives [0, 0.3125, 0.6875, 1].
    two = upsample_twice(x, (1, 3), (1, 4))
    assert torch.allclose(two, torch.tensor([[[[0.0, 0.3125, 0.6875, 1.0]]]]))
    # One resize straight to width 4 gives [0, 0.25, 0.75, 1]: a different map.
    one = F.interpolate(x, size=(1, 4), mode="bilinear", align_corners=False)
    assert torch.allclose(one, torch.tensor([[[[0.0, 0.25, 0.75, 1.0]]]]))
    # A pass already at the target size (scale 1.0) is resized once.
    assert torch.equal(upsample_twice(x, (1, 2), (1, 4)), one)


def test_fuse_with_pass_sizes_resizes_in_two_steps():
    torch.manual_seed(2)
    b, k = 1, 2
    maps = [torch.randn(2 * b, k, 3, 3), torch.randn(2 * b, k, 5, 5)]
    pass_sizes = [(10, 10), (18, 18)]  # e.g. scales 0.5 and 1.5 of a 20x20 input at stride ~3
    for branch, mode in (("cam", "max"), ("seg", "mean")):
        two = fuse_multiscale(maps, (20, 20), branch, pass_sizes=pass_sizes)
        assert torch.allclose(two, _reference_fuse(maps, (20, 20), mode, pass_sizes), atol=1e-6)
        # ... which is measurably not the single resize.
        assert (two - fuse_multiscale(maps, (20, 20), branch)).abs().max() > 1e-3
    with pytest.raises(ValueError, match="pass sizes"):
        fuse_multiscale(maps, (20, 20), "cam", pass_sizes=[(10, 10)])
    with pytest.raises(ValueError, match="branch must be"):
        fuse_multiscale(maps, (20, 20), "aff")


def test_fuse_multiscale_cams_matches_resize_merge_relu_sum():
    torch.manual_seed(0)
    b, k = 2, 3
    maps = [torch.randn(2 * b, k, 5, 6), torch.randn(2 * b, k, 3, 3), torch.randn(2 * b, k, 8, 9)]
    out = fuse_multiscale(maps, (10, 12), "cam")
    assert out.shape == (b, k, 10, 12)
    assert torch.allclose(out, _reference_fuse(maps, (10, 12), "max"), atol=1e-6)
    assert (out >= 0).all()


def test_fuse_multiscale_cams_relu_per_scale_by_hand():
    # Two scales already at the target size: relu(max) then sum.
    s1 = torch.tensor([[[[-1.0, 2.0]]], [[[-3.0, -5.0]]]])  # orig [-1, 2], flip -> [-5, -3]
    s2 = torch.tensor([[[[4.0, -2.0]]], [[[1.0, -1.0]]]])  # orig [4, -2], flip -> [-1, 1]
    out = fuse_multiscale([s1, s2], (1, 2), "cam")
    # scale1: max -> [-1, 2] -> relu [0, 2]; scale2: max -> [4, 1]
    assert out.tolist() == [[[[4.0, 3.0]]]]


def test_fuse_multiscale_seg_matches_resize_mean_sum_without_relu():
    torch.manual_seed(1)
    maps = [torch.randn(4, 4, 6, 6), torch.randn(4, 4, 3, 4)]
    out = fuse_multiscale(maps, (12, 12), "seg")
    assert out.shape == (2, 4, 12, 12)
    assert torch.allclose(out, _reference_fuse(maps, (12, 12), "mean"), atol=1e-6)
    assert (out < 0).any()  # no ReLU


def test_fuse_without_flip_and_bad_inputs():
    x = torch.randn(2, 3, 4, 4)
    assert torch.allclose(fuse_multiscale([x, x], (4, 4), "seg", flip=False), 2 * x)
    with pytest.raises(ValueError, match="no scales"):
        fuse_multiscale([], (4, 4), "cam")
    with pytest.raises(ValueError, match="same batch"):
        fuse_multiscale([torch.zeros(4, 3, 2, 2), torch.zeros(4, 2, 2, 2)], (2, 2), "cam")


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


def test_fuse_does_not_modify_inputs_and_supports_autograd():
    x = torch.randn(2, 3, 4, 4, requires_grad=True)
    before = x.detach().clone()
    out = fuse_multiscale([x], (4, 4), "cam", flip=False)
    assert torch.equal(x.detach(), before)
    assert torch.equal(out, F.relu(before))
    pair = torch.randn(4, 3, 2, 2, requires_grad=True)
    fuse_multiscale([pair, pair], (4, 4), "cam").sum().backward()
    assert pair.grad is not None and torch.isfinite(pair.grad).all()


def _fake_forward(calls):
    """A forward whose CAM is the input's first channel pooled 4x (a stride-4 'classifier')."""

    def forward(x, with_seg):
        calls.append((x.shape[0], tuple(x.shape[-2:]), with_seg))
        cam = F.avg_pool2d(x[:, :1], 4)
        seg = torch.cat([cam, -cam], dim=1) if with_seg else None
        return BranchOutputs(cam.amax((2, 3)), cam, seg, None, tuple(x.shape[-2:]))

    return forward


def test_scale_one_is_one_pass_on_the_batch_and_its_flip_as_the_authors_run_it():
    """Their multi_scale_cam_with_aff_mat_seg runs model(cat([x, x.flip(-1)])) at scale 1, so
    train-mode BatchNorm normalises with the statistics of that 2B batch."""
    x = torch.rand(2, 3, 16, 24)
    seen = []

    def forward(inputs, with_seg):
        seen.append(inputs.clone())
        cam = F.avg_pool2d(inputs[:, :1], 4)
        return BranchOutputs(cam.amax((2, 3)), cam, None, None, tuple(inputs.shape[-2:]))

    main = forward(x, False)
    seen.clear()
    out = multiscale_logits(forward, x, main, (1.0, 0.5), True, False, reuse_main=False)
    assert torch.equal(seen[0], torch.cat([x, x.flip(-1)]))
    assert seen[1].shape == (4, 3, 8, 12) and out.pass_sizes == [(16, 24), (8, 12)]
    # The main pass is not reused: the scale-1 maps are the ones of the joint pass.
    assert torch.equal(out.cams[0], F.avg_pool2d(seen[0][:, :1], 4))


def test_multiscale_logits_can_reuse_the_main_pass_and_batches_flips():
    x = torch.rand(2, 3, 16, 24)
    calls = []
    forward = _fake_forward(calls)
    main = forward(x, True)
    calls.clear()
    out = multiscale_logits(forward, x, main, (1.0, 0.5, 1.5), flip=True, with_seg=True)
    # scale 1.0: only the flip; other scales: originals + flips in one pass.
    assert calls == [(2, (16, 24), True), (4, (8, 12), True), (4, (24, 36), True)]
    assert out.pass_sizes == [(16, 24), (8, 12), (24, 36)]
    assert [c.shape[0] for c in out.cams] == [4, 4, 4] and len(out.segs) == 3
    assert torch.equal(out.cams[0][:2], main.cam_logits)
    assert torch.allclose(out.cams[0][2:], F.avg_pool2d(x.flip(-1)[:, :1], 4))
    fused = out.fused_cams((16, 24), flip=True)
    assert fused.shape == (2, 1, 16, 24) and fused.min() >= 0 and fused.max() < 1
    assert out.fused_segs((16, 24), flip=True).shape == (2, 2, 16, 24)


def test_multiscale_logits_without_seg_or_flip_and_by_factor():
    x = torch.rand(1, 3, 18, 18)
    calls = []
    forward = _fake_forward(calls)
    main = forward(x, False)
    calls.clear()
    out = multiscale_logits(forward, x, main, (1.0, 0.75), flip=False, with_seg=False)
    assert calls == [(1, (13, 13), False)] and out.segs is None
    with pytest.raises(ValueError, match="no segmentation"):
        out.fused_segs((18, 18), flip=False)
    # scale_factor resizing samples with s itself: same size, other values when 0.75 * 18 is not
    # an integer.
    by_size = multiscale_logits(forward, x, main, (0.75,), flip=False, with_seg=False)
    by_factor = multiscale_logits(
        forward, x, main, (0.75,), flip=False, with_seg=False, resize_by_factor=True
    )
    assert by_size.pass_sizes == by_factor.pass_sizes == [(13, 13)]
    assert not torch.allclose(by_size.cams[0], by_factor.cams[0])
