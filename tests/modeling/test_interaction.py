"""Interaction operation (bmp.modeling.interaction)."""

import pytest
import torch
import torch.nn.functional as F

from bmp.modeling.interaction import cam_confidence, reweight_features


def test_cam_confidence_is_max_sigmoid_and_detached():
    logits = torch.tensor([[[[0.0, -10.0]], [[2.0, -20.0]]]], requires_grad=True)
    conf = cam_confidence(logits, (1, 2))
    assert conf.shape == (1, 1, 1, 2)
    assert torch.allclose(conf, torch.sigmoid(torch.tensor([[[[2.0, -10.0]]]])))
    assert not conf.requires_grad
    # Used as interaction weights: no gradient reaches the CAM logits through them.
    feats = torch.ones(1, 4, 1, 2, requires_grad=True)
    (feats * conf).sum().backward()
    assert logits.grad is None
    assert feats.grad is not None


def test_cam_confidence_upsamples_logits_before_the_max():
    # Class A is [4, -4], class B is [-4, 4]: at native resolution the max is 4 everywhere.
    logits = torch.tensor([[[[4.0, -4.0]], [[-4.0, 4.0]]]])
    conf = cam_confidence(logits, (1, 4))
    # Upsampled to width 4: A = [4, 2, -2, -4], B = [-4, -2, 2, 4] -> max [4, 2, 2, 4].
    assert torch.allclose(conf, torch.sigmoid(torch.tensor([[[[4.0, 2.0, 2.0, 4.0]]]])))
    native = F.interpolate(
        torch.sigmoid(logits.amax(dim=1, keepdim=True)), size=(1, 4), mode="bilinear"
    )
    assert torch.allclose(native, torch.full((1, 1, 1, 4), torch.sigmoid(torch.tensor(4.0))))
    assert (conf - native).abs().max() > 0.09  # sigmoid(4) - sigmoid(2) = 0.101


def test_cam_confidence_rejects_bad_input():
    with pytest.raises(ValueError, match="CAM logits"):
        cam_confidence(torch.zeros(2, 3, 4), (4, 4))
    with pytest.raises(ValueError, match="size"):
        cam_confidence(torch.zeros(1, 2, 3, 4), (0, 4))


def test_reweight_features_resizes_the_confidence_per_level():
    conf = torch.tensor([[[[0.0, 1.0], [1.0, 0.5]]]])  # (1, 1, 2, 2)
    feats = {"fine": torch.ones(1, 3, 4, 4), "same": torch.full((1, 2, 2, 2), 2.0)}
    out = reweight_features(feats, conf)
    assert torch.equal(out["same"], 2.0 * conf.expand(1, 2, 2, 2))
    up = F.interpolate(conf, size=(4, 4), mode="bilinear", align_corners=False)
    assert torch.allclose(out["fine"], up.expand(1, 3, 4, 4))
    assert torch.equal(feats["fine"], torch.ones(1, 3, 4, 4))  # inputs untouched
