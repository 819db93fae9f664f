"""Mix Transformer backbone: shapes, strides, attention logits and SegFormer parameter names."""

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_backbone

import bmp  # noqa: F401  (registers the backbone)
from bmp.config import add_bmp_config
from bmp.modeling.backbone.mit import MIT_PRESETS, MixTransformer


def _tiny(**kwargs) -> MixTransformer:
    return MixTransformer(**{**MIT_PRESETS["mit_tiny"], "drop_path_rate": 0.0, **kwargs}).eval()


def _segformer_keys(depths, sr_ratios):
    """The key list of SegFormer's released mit_b* checkpoints (without their ``head.*``)."""
    keys = set()
    for i in range(1, 5):
        for p in ("proj", "norm"):
            keys |= {f"patch_embed{i}.{p}.weight", f"patch_embed{i}.{p}.bias"}
        for j in range(depths[i - 1]):
            mods = ["norm1", "attn.q", "attn.kv", "attn.proj", "norm2", "mlp.fc1"]
            mods += ["mlp.dwconv.dwconv", "mlp.fc2"]
            if sr_ratios[i - 1] > 1:
                mods += ["attn.sr", "attn.norm"]
            keys |= {f"block{i}.{j}.{m}.{t}" for m in mods for t in ("weight", "bias")}
        keys |= {f"norm{i}.weight", f"norm{i}.bias"}
    return keys


def test_feature_shapes_and_strides_default_patch_strides():
    model = _tiny()
    feats = model(torch.randn(2, 3, 64, 96))
    assert {k: tuple(v.shape) for k, v in feats.items()} == {
        "mit1": (2, 16, 16, 24),
        "mit2": (2, 32, 8, 12),
        "mit3": (2, 64, 4, 6),
        "mit4": (2, 128, 4, 6),
    }
    assert model.output_shape() == {
        "mit1": ShapeSpec(channels=16, stride=4),
        "mit2": ShapeSpec(channels=32, stride=8),
        "mit3": ShapeSpec(channels=64, stride=16),
        "mit4": ShapeSpec(channels=128, stride=16),
    }


def test_odd_sizes_round_up_and_custom_strides():
    feats = _tiny()(torch.randn(1, 3, 65, 97))
    assert tuple(feats["mit1"].shape[-2:]) == (17, 25)
    assert tuple(feats["mit4"].shape[-2:]) == (5, 7)
    model = _tiny(patch_strides=(4, 2, 2, 2), out_features=("mit2", "mit4"))
    assert {k: v.stride for k, v in model.output_shape().items()} == {"mit2": 8, "mit4": 32}
    feats = model(torch.randn(1, 3, 64, 64))
    assert set(feats) == {"mit2", "mit4"} and tuple(feats["mit4"].shape) == (1, 128, 2, 2)


def test_attention_logits_are_unscaled_q_kT_of_the_last_blocks():
    model = _tiny()
    assert model.num_attention_maps == 2 * 8
    captured = {}
    last = model.block4[-1]

    def hook(module, args, out):
        captured["x"] = args[0]

    last.attn.register_forward_hook(hook)
    x = torch.randn(2, 3, 64, 64)
    feats, attn = model.forward_with_attention(x)
    n = 4 * 4
    assert tuple(attn.shape) == (2, 16, n, n)
    tokens = captured["x"]  # (B, N, C) after norm1
    c, heads = 128, 8
    q = last.attn.q(tokens).reshape(2, n, heads, c // heads).transpose(1, 2)
    k = last.attn.kv(tokens)[..., :c].reshape(2, n, heads, c // heads).transpose(1, 2)
    expected = q @ k.transpose(-2, -1)
    torch.testing.assert_close(attn[:, 8:], expected, rtol=1e-5, atol=1e-5)
    # The fused path used by forward() gives the same features.
    plain = model(x)
    for name in feats:
        torch.testing.assert_close(plain[name], feats[name], rtol=1e-5, atol=1e-5)


def test_no_attention_blocks_and_bad_settings():
    model = _tiny(attn_blocks=0)
    assert model.num_attention_maps == 0
    assert model.forward_with_attention(torch.randn(1, 3, 64, 64))[1] is None
    with pytest.raises(ValueError, match="SR_RATIOS"):
        _tiny(sr_ratios=(8, 4, 2, 2))
    with pytest.raises(ValueError, match="ATTN_BLOCKS"):
        _tiny(attn_blocks=3)
    with pytest.raises(ValueError, match="OUT_FEATURES"):
        _tiny(out_features=("res5",))
    with pytest.raises(ValueError, match="too small"):
        _tiny()(torch.randn(1, 3, 16, 16))


def test_parameter_names_and_shapes_match_segformer_mit_b1():
    model = MixTransformer(**MIT_PRESETS["mit_b1"])
    state = model.state_dict()
    assert set(state) == _segformer_keys((2, 2, 2, 2), (8, 4, 2, 1))
    shapes = {
        "patch_embed1.proj.weight": (64, 3, 7, 7),
        "patch_embed2.proj.weight": (128, 64, 3, 3),
        "block1.0.attn.sr.weight": (64, 64, 8, 8),
        "block4.1.attn.kv.weight": (1024, 512),
        "block4.1.mlp.dwconv.dwconv.weight": (2048, 1, 3, 3),
        "norm4.weight": (512,),
    }
    assert {k: tuple(state[k].shape) for k in shapes} == shapes
    # ImageNet MiT-B1 has 13.7M parameters with its 1000-way head (512 * 1000 + 1000).
    assert sum(v.numel() for v in model.parameters()) + 513_000 == pytest.approx(13.66e6, rel=0.01)


def test_weight_init_and_stochastic_depth_schedule():
    model = MixTransformer(**MIT_PRESETS["mit_b1"], drop_path_rate=0.1)
    fc1 = model.block1[0].mlp.fc1
    assert fc1.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert torch.count_nonzero(fc1.bias) == 0
    conv = model.patch_embed1.proj  # fan_out = 7 * 7 * 64
    assert conv.weight.std().item() == pytest.approx((2.0 / (49 * 64)) ** 0.5, rel=0.1)
    rates = [b.drop_path for i in range(1, 5) for b in getattr(model, f"block{i}")]
    assert rates == pytest.approx([0.1 * i / 7 for i in range(8)])
    assert model.block1[0].norm1.eps == 1e-6 and model.norm4.eps == 1e-6


def test_build_from_config_preset_and_overrides():
    cfg = get_cfg()
    add_bmp_config(cfg)
    cfg.merge_from_file("configs/synthetic/bmp_mit_tiny.yaml")
    model = build_backbone(cfg)
    assert isinstance(model, MixTransformer)
    assert model.num_attention_maps == 16
    assert model.output_shape()["mit4"] == ShapeSpec(channels=128, stride=16)
    cfg.MODEL.MIT.EMBED_DIMS = [8, 16, 24, 32]
    cfg.MODEL.MIT.ATTN_BLOCKS = 1
    model = build_backbone(cfg)
    assert [s.channels for s in model.output_shape().values()] == [8, 16, 24, 32]
    assert model.num_attention_maps == 8
    cfg.MODEL.MIT.NAME = "mit_b9"
    with pytest.raises(ValueError, match="MODEL.MIT.NAME"):
        build_backbone(cfg)
