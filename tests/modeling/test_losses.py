"""Losses (bmp.modeling.losses)."""

import math

import pytest
import torch
import torch.nn.functional as F

from bmp.modeling.losses import affinity_loss, c2s_loss, classification_loss, s2c_loss

IGN = 255


def _softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_classification_loss_is_multilabel_soft_margin():
    logits = torch.tensor([[2.0, -1.0, 0.0]])
    label = torch.tensor([[1.0, 0.0, 1.0]])
    # mean over classes of softplus(-x) for positives, softplus(x) for negatives.
    by_hand = (_softplus(-2.0) + _softplus(-1.0) + _softplus(-0.0)) / 3
    assert classification_loss(logits, label).item() == pytest.approx(by_hand, rel=1e-6)
    logits = torch.randn(4, 5)
    label = (torch.rand(4, 5) > 0.5).float()
    expected = F.multilabel_soft_margin_loss(logits, label)
    assert torch.allclose(classification_loss(logits, label), expected)


def _two_pixels():
    # (B=1, K+1=3, H=1, W=2): pixel 0 logits [1, -1, 0], pixel 1 logits [0, 2, -2].
    return torch.tensor([[[[1.0, 0.0]], [[-1.0, 2.0]], [[0.0, -2.0]]]], requires_grad=True)


def test_c2s_mlsm_two_pixels_by_hand():
    seg = _two_pixels()
    labels = torch.tensor([[[0, 2]]])
    p0 = (_softplus(-1.0) + _softplus(-1.0) + _softplus(0.0)) / 3  # target channel 0
    p1 = (_softplus(0.0) + _softplus(2.0) + _softplus(2.0)) / 3  # target channel 2
    loss = c2s_loss(seg, labels, mode="mlsm")
    assert loss.item() == pytest.approx((p0 + p1) / 2, rel=1e-6)
    # Ignoring pixel 1 leaves pixel 0 alone.
    assert c2s_loss(seg, torch.tensor([[[0, IGN]]])).item() == pytest.approx(p0, rel=1e-6)


def test_c2s_mlsm_matches_torch_on_flattened_pixels():
    gen = torch.Generator().manual_seed(0)
    seg = torch.randn(2, 4, 5, 6, generator=gen)
    labels = torch.randint(0, 4, (2, 5, 6), generator=gen)
    labels[0, :2] = IGN
    keep = labels != IGN
    flat = seg.permute(0, 2, 3, 1)[keep]
    onehot = F.one_hot(labels[keep], 4).float()
    expected = F.multilabel_soft_margin_loss(flat, onehot)
    assert torch.allclose(c2s_loss(seg, labels, mode="mlsm"), expected, atol=1e-6)


def test_c2s_ce_matches_cross_entropy_with_ignore():
    gen = torch.Generator().manual_seed(1)
    seg = torch.randn(2, 4, 5, 6, generator=gen)
    labels = torch.randint(0, 4, (2, 5, 6), generator=gen)
    labels[1, :, :3] = IGN
    expected = F.cross_entropy(seg, labels, ignore_index=IGN)
    assert torch.allclose(c2s_loss(seg, labels, mode="ce"), expected, atol=1e-6)


def test_s2c_ce_and_mlsm_by_hand():
    cam = torch.tensor([[[[2.0, 0.0]], [[0.0, 1.0]]]])  # (1, K=2, 1, 2)
    labels = torch.tensor([[[0, 1]]])
    ce0 = -math.log(math.exp(2) / (math.exp(2) + 1))
    ce1 = -math.log(math.e / (1 + math.e))
    assert s2c_loss(cam, labels, mode="ce").item() == pytest.approx((ce0 + ce1) / 2, rel=1e-6)
    bce0 = (_softplus(-2.0) + _softplus(0.0)) / 2
    bce1 = (_softplus(0.0) + _softplus(-1.0)) / 2
    assert s2c_loss(cam, labels, mode="mlsm").item() == pytest.approx((bce0 + bce1) / 2, rel=1e-6)
    assert s2c_loss(cam, torch.tensor([[[IGN, 1]]])).item() == pytest.approx(ce1, rel=1e-6)


def test_s2c_mlsm_matches_binary_cross_entropy():
    gen = torch.Generator().manual_seed(2)
    cam = torch.randn(2, 3, 4, 4, generator=gen)
    labels = torch.randint(0, 3, (2, 4, 4), generator=gen)
    labels[1, 0] = IGN
    keep = labels != IGN
    flat = cam.permute(0, 2, 3, 1)[keep]
    expected = F.binary_cross_entropy_with_logits(flat, F.one_hot(labels[keep], 3).float())
    assert torch.allclose(s2c_loss(cam, labels, mode="mlsm"), expected, atol=1e-6)


def test_mlsm_is_stable_for_large_logits():
    seg = torch.tensor([[[[80.0]], [[-80.0]]]], requires_grad=True)
    loss = c2s_loss(seg, torch.tensor([[[0]]]))
    loss.backward()
    assert torch.isfinite(loss) and loss.item() < 1e-6
    assert torch.isfinite(seg.grad).all()


def test_affinity_loss_by_hand():
    aff = torch.tensor([[[0.9, 0.2], [0.4, 0.7]]], requires_grad=True)
    labels = torch.tensor([[[1, 0], [IGN, 1]]], dtype=torch.uint8)
    # positives: (1 - 0.9) + (1 - 0.7) = 0.4 over 2 + 1 pairs; negatives: 0.2 over 1 + 1 pairs.
    assert affinity_loss(aff, labels).item() == pytest.approx(0.5 * 0.4 / 3 + 0.5 * 0.2 / 2)
    only_pos = torch.tensor([[[1, IGN], [IGN, 1]]])
    assert affinity_loss(aff, only_pos).item() == pytest.approx(0.5 * 0.4 / 3)  # no negatives: 0


@pytest.mark.parametrize(
    "make_loss",
    [
        lambda x: c2s_loss(x, torch.full((1, 2, 3), IGN), mode="mlsm"),
        lambda x: c2s_loss(x, torch.full((1, 2, 3), IGN), mode="ce"),
        lambda x: s2c_loss(x, torch.full((1, 2, 3), IGN), mode="ce"),
        lambda x: s2c_loss(x, torch.full((1, 2, 3), IGN), mode="mlsm"),
    ],
)
def test_all_ignored_gives_zero_with_gradient_path(make_loss):
    logits = torch.randn(1, 4, 2, 3, requires_grad=True)
    loss = make_loss(logits)
    assert loss.item() == 0.0
    assert loss.requires_grad
    loss.backward()
    assert logits.grad is not None and torch.equal(logits.grad, torch.zeros_like(logits))


def test_affinity_loss_all_ignored_is_zero_with_gradient_path():
    aff = torch.rand(2, 4, 4, requires_grad=True)
    loss = affinity_loss(aff, torch.full((2, 4, 4), IGN, dtype=torch.uint8))
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.equal(aff.grad, torch.zeros_like(aff))


def test_losses_reject_bad_inputs():
    with pytest.raises(ValueError, match="MODEL.BMP.C2S.LOSS"):
        c2s_loss(torch.zeros(1, 2, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long), mode="dice")
    with pytest.raises(ValueError, match="MODEL.BMP.S2C.LOSS"):
        s2c_loss(torch.zeros(1, 2, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long), mode="bce")
    with pytest.raises(ValueError, match="resize"):
        c2s_loss(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="cls_label"):
        classification_loss(torch.zeros(2, 3), torch.zeros(2, 4))
