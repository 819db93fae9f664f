"""SegFormer all-MLP decoder: level order, per-pixel projections, names, and config building."""

import pytest
import torch
import torch.nn.functional as F
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_sem_seg_head

import bmp  # noqa: F401  (registers the head)
from bmp.config import add_bmp_config, derive_keys
from bmp.modeling.heads.segformer_head import SegFormerHead

SHAPES = {
    "mit1": ShapeSpec(channels=3, stride=4),
    "mit2": ShapeSpec(channels=4, stride=8),
    "mit3": ShapeSpec(channels=5, stride=16),
    "mit4": ShapeSpec(channels=6, stride=16),
}


def _features(batch=2, size=8):
    return {
        "mit1": torch.randn(batch, 3, size, size),
        "mit2": torch.randn(batch, 4, size // 2, size // 2),
        "mit3": torch.randn(batch, 5, size // 4, size // 4),
        "mit4": torch.randn(batch, 6, size // 4, size // 4),
    }


def test_levels_are_concatenated_in_order_4_3_2_1():
    head = SegFormerHead(SHAPES, num_classes=1, embed_dim=1, dropout=0.0, norm="").eval()
    with torch.no_grad():
        for i in range(1, 5):
            proj = getattr(head, f"linear_c{i}").proj
            proj.weight.zero_()
            proj.bias.fill_(float(i))  # level i projects to the constant i
        head.linear_fuse.weight.copy_(torch.tensor([1.0, 10.0, 100.0, 1000.0]).view(1, 4, 1, 1))
        head.predictor.weight.fill_(1.0)
        head.predictor.bias.zero_()
        out = head(_features())
    # concat order (4, 3, 2, 1): 1 * 4 + 10 * 3 + 100 * 2 + 1000 * 1
    assert tuple(out.shape) == (2, 1, 8, 8)
    torch.testing.assert_close(out, torch.full_like(out, 1234.0))


def test_matches_a_direct_computation():
    head = SegFormerHead(SHAPES, num_classes=3, embed_dim=4, dropout=0.1, norm="BN").eval()
    with torch.no_grad():
        bn = head.linear_fuse.norm
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        feats = _features()
        out = head(feats)
        projected = []
        for i in range(1, 5):
            proj = getattr(head, f"linear_c{i}").proj
            x = torch.einsum("bchw,ec->behw", feats[f"mit{i}"], proj.weight)
            x = x + proj.bias.view(1, -1, 1, 1)
            projected.append(F.interpolate(x, size=(8, 8), mode="bilinear", align_corners=False))
        x = F.conv2d(torch.cat(projected[::-1], 1), head.linear_fuse.weight)
        x = (x - bn.running_mean.view(1, -1, 1, 1)) / torch.sqrt(bn.running_var + bn.eps).view(
            1, -1, 1, 1
        )
        x = torch.relu(x * bn.weight.view(1, -1, 1, 1) + bn.bias.view(1, -1, 1, 1))
        expected = F.conv2d(x, head.predictor.weight, head.predictor.bias)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_any_feature_names_sorted_by_stride():
    shapes = {
        "res5": ShapeSpec(channels=6, stride=32),
        "res2": ShapeSpec(channels=3, stride=4),
        "res4": ShapeSpec(channels=5, stride=16),
        "res3": ShapeSpec(channels=4, stride=8),
    }
    head = SegFormerHead(shapes, num_classes=2, embed_dim=8, dropout=0.0, norm="BN")
    assert head.in_features == ["res2", "res3", "res4", "res5"]
    assert head.linear_c1.proj.in_features == 3 and head.linear_c4.proj.in_features == 6
    feats = {f"res{i}": torch.randn(2, i + 1, 32 // 2**i, 32 // 2**i) for i in range(2, 6)}
    assert tuple(head(feats).shape) == (2, 2, 8, 8)


def test_state_dict_names_and_config_build():
    cfg = get_cfg()
    add_bmp_config(cfg)
    cfg.MODEL.SEM_SEG_HEAD.NORM = "BN"
    with pytest.raises(ValueError, match="derive_keys"):
        build_sem_seg_head(cfg, SHAPES)  # NUM_CLASSES not derived yet
    derive_keys(cfg)
    head = build_sem_seg_head(cfg, SHAPES)
    shapes = {k: tuple(v.shape) for k, v in head.state_dict().items()}
    expected = {f"linear_c{i}.proj.weight": (256, i + 2) for i in range(1, 5)}
    expected |= {f"linear_c{i}.proj.bias": (256,) for i in range(1, 5)}
    expected |= {"linear_fuse.weight": (256, 1024, 1, 1), "predictor.weight": (21, 256, 1, 1)}
    expected |= {"predictor.bias": (21,), "linear_fuse.norm.num_batches_tracked": ()}
    expected |= {f"linear_fuse.norm.{n}": (256,) for n in ("weight", "bias")}
    expected |= {f"linear_fuse.norm.{n}": (256,) for n in ("running_mean", "running_var")}
    assert shapes == expected
    assert head.dropout.p == 0.1
    cfg.MODEL.SEM_SEG_HEAD.IN_FEATURES = ["mit1", "res5"]
    with pytest.raises(ValueError, match="IN_FEATURES"):
        build_sem_seg_head(cfg, SHAPES)
