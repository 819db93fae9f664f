"""tools/convert_mit_imagenet.py: SegFormer ImageNet MiT -> backbone.* checkpoint."""

import importlib.util
import os
import pickle
from collections import OrderedDict

import pytest
import torch

from bmp.utils.weights import CheckpointFormatError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_spec = importlib.util.spec_from_file_location(
    "convert_mit_imagenet", os.path.join(ROOT, "tools", "convert_mit_imagenet.py")
)
conv = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(conv)


def _segformer_like():
    return {
        "patch_embed1.proj.weight": torch.ones(4, 3, 7, 7),
        "block1.0.attn.q.weight": torch.ones(4, 4),
        "norm1.weight": torch.ones(4),
        "head.weight": torch.ones(1000, 4),
        "head.bias": torch.ones(1000),
    }


def test_prefix_added_and_head_dropped():
    out, dropped = conv.mit_imagenet_to_d2(_segformer_like())
    assert list(out) == [
        "backbone.patch_embed1.proj.weight",
        "backbone.block1.0.attn.q.weight",
        "backbone.norm1.weight",
    ]
    assert dropped == ["head.weight", "head.bias"]


def test_already_converted_file_is_refused():
    with pytest.raises(CheckpointFormatError, match="already"):
        conv.mit_imagenet_to_d2({"backbone.norm1.weight": torch.ones(4)})


def test_shape_and_name_check():
    expected = {"backbone.a": torch.zeros(2, 3), "backbone.b": torch.zeros(4)}
    conv.check_against_backbone(
        {"backbone.a": torch.ones(2, 3), "backbone.b": torch.ones(4)}, expected
    )
    with pytest.raises(CheckpointFormatError, match=r"missing \['backbone.b'\]"):
        conv.check_against_backbone({"backbone.a": torch.ones(2, 3)}, expected)
    with pytest.raises(CheckpointFormatError, match=r"backbone.a: file \(3, 2\) vs model \(2, 3\)"):
        conv.check_against_backbone(
            {"backbone.a": torch.ones(3, 2), "backbone.b": torch.ones(4)}, expected
        )


def test_cli_checks_against_the_configured_backbone(tmp_path):
    config = os.path.join(ROOT, "configs", "synthetic", "bmp_mit_tiny.yaml")
    expected = conv.backbone_state_dict(config)
    # A SegFormer-style file for exactly that backbone, plus its ImageNet head.
    src_state = {k[len("backbone.") :]: torch.randn(v.shape) for k, v in expected.items()}
    src_state["head.weight"] = torch.zeros(1000, 8)
    src = tmp_path / "mit_tiny.pth"
    torch.save(src_state, src)
    dst = tmp_path / "mit_tiny.pkl"
    assert conv.main([str(src), str(dst), "--config-file", config]) == 0
    assert dst.exists()

    del src_state["norm4.weight"]
    torch.save(src_state, src)
    assert conv.main([str(src), str(tmp_path / "bad.pkl"), "--config-file", config]) == 2
    assert not (tmp_path / "bad.pkl").exists()


@pytest.mark.parametrize("kind", ["pkl", "pth"])
def test_cli_refuses_a_file_that_names_code(
    tmp_path, crafted_weights, cli_refuses_then_trusts, kind
):
    files = crafted_weights({"norm1.weight": torch.ones(4)})
    src, dst = str(getattr(files, kind)), tmp_path / "out.pkl"
    cli_refuses_then_trusts(conv.main, src, dst, files.marker)


@pytest.mark.parametrize("suffix", [".pth", ".pkl"])
def test_cli_reads_segformer_files_as_data(tmp_path, suffix):
    """SegFormer's mit_b*.pth is a plain OrderedDict; some copies nest it under state_dict."""
    state = OrderedDict([("norm1.weight", torch.ones(4)), ("head.weight", torch.ones(10, 4))])
    src = tmp_path / f"mit{suffix}"
    if suffix == ".pth":
        torch.save({"state_dict": state}, src)
    else:
        with open(src, "wb") as f:
            pickle.dump({k: v.numpy() for k, v in state.items()}, f)
    assert conv.main([str(src), str(tmp_path / "out.pth")]) == 0
    out = torch.load(tmp_path / "out.pth", weights_only=True)["model"]
    assert list(out) == ["backbone.norm1.weight"]
