"""tools/convert_bmp_official.py: the authors' key names -> BMP-D2's, strict and reversible."""

import importlib.util
import os
import pickle
from collections import OrderedDict

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer

from bmp.engine.checkpoint import AtomicCheckpointer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _load_tool(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "tools", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


conv = _load_tool("convert_bmp_official")


def _theirs(prefix: str = "") -> "OrderedDict[str, torch.Tensor]":
    """A tiny checkpoint with every kind of key their code writes (K=3, C=4, E=2, A=2)."""
    g = torch.Generator().manual_seed(0)
    shapes = OrderedDict(
        [
            ("encoder.patch_embed1.proj.weight", (4, 3, 7, 7)),
            ("encoder.patch_embed1.norm.weight", (4,)),
            ("encoder.block1.0.attn.q.weight", (4, 4)),
            ("encoder.block1.0.attn.kv.weight", (8, 4)),
            ("encoder.block1.0.mlp.dwconv.dwconv.weight", (16, 1, 3, 3)),
            ("encoder.norm4.bias", (4,)),
            *[(f"decoder.linear_c{i}.proj.weight", (2, 4)) for i in range(1, 5)],
            *[(f"decoder.linear_c{i}.proj.bias", (2,)) for i in range(1, 5)],
            ("decoder.linear_fuse.conv.weight", (2, 8, 1, 1)),
            ("decoder.linear_fuse.bn.weight", (2,)),
            ("decoder.linear_fuse.bn.bias", (2,)),
            ("decoder.linear_fuse.bn.running_mean", (2,)),
            ("decoder.linear_fuse.bn.running_var", (2,)),
            ("decoder.linear_pred.weight", (4, 2, 1, 1)),
            ("decoder.linear_pred.bias", (4,)),
            ("classifier.weight", (3, 4, 1, 1)),
            ("attn_proj.weight", (1, 2, 1, 1)),
            ("attn_proj.bias", (1,)),
        ]
    )
    state = OrderedDict((prefix + k, torch.randn(s, generator=g)) for k, s in shapes.items())
    state[prefix + "decoder.linear_fuse.bn.num_batches_tracked"] = torch.tensor(7)
    return state


def test_mapping_follows_the_contract():
    ours, dropped = conv.official_to_bmp_d2(_theirs())
    assert dropped == []
    theirs = _theirs()
    expected = {
        "encoder.block1.0.attn.kv.weight": "backbone.block1.0.attn.kv.weight",
        "encoder.norm4.bias": "backbone.norm4.bias",
        "decoder.linear_c3.proj.weight": "sem_seg_head.linear_c3.proj.weight",
        "decoder.linear_fuse.conv.weight": "sem_seg_head.linear_fuse.weight",
        "decoder.linear_fuse.bn.running_var": "sem_seg_head.linear_fuse.norm.running_var",
        "decoder.linear_fuse.bn.num_batches_tracked": (
            "sem_seg_head.linear_fuse.norm.num_batches_tracked"
        ),
        "decoder.linear_pred.bias": "sem_seg_head.predictor.bias",
        "classifier.weight": "cls_head.classifier.weight",
        "attn_proj.weight": "affinity_head.attn_proj.weight",
    }
    for their_key, our_key in expected.items():
        assert ours[our_key] is theirs[their_key] or torch.equal(ours[our_key], theirs[their_key])
    assert len(ours) == len(theirs)


def test_module_prefix_is_stripped():
    plain, _ = conv.official_to_bmp_d2(_theirs())
    prefixed, _ = conv.official_to_bmp_d2(_theirs("module."))
    assert list(plain) == list(prefixed)


def test_unknown_keys_are_listed_not_dropped():
    state = _theirs()
    state["decoder.extra.weight"] = torch.zeros(1)
    state["proj_head.bias"] = torch.zeros(1)
    with pytest.raises(conv.ConversionError, match="decoder.extra.weight, proj_head.bias"):
        conv.official_to_bmp_d2(state)


def test_imagenet_head_in_encoder_is_reported_as_dropped():
    state = _theirs()
    state["encoder.head.weight"] = torch.zeros(2, 4)
    ours, dropped = conv.official_to_bmp_d2(state)
    assert dropped == ["encoder.head.weight"]
    assert not any("head.weight" in k and k.startswith("backbone") for k in ours)


def test_round_trip_is_identity():
    theirs = _theirs()
    ours, _ = conv.official_to_bmp_d2(theirs)
    back, _ = conv.bmp_d2_to_official(ours)
    assert list(back) == list(theirs)
    again, _ = conv.official_to_bmp_d2(back)
    assert list(again) == list(ours)
    assert all(torch.equal(again[k], ours[k]) for k in ours)


@pytest.mark.parametrize("suffix", [".pth", ".pkl"])
def test_cli_writes_a_detectron2_checkpoint(tmp_path, suffix, capsys):
    src = tmp_path / "theirs.pth"
    torch.save({"state_dict": _theirs("module."), "iter": 20000}, src)
    dst = tmp_path / f"ours{suffix}"
    assert conv.main([str(src), str(dst)]) == 0
    if suffix == ".pkl":
        with open(dst, "rb") as f:
            data = pickle.load(f)
    else:
        data = torch.load(dst, weights_only=False)
    assert "__author__" in data
    assert "cls_head.classifier.weight" in data["model"]
    expected = conv.official_to_bmp_d2(_theirs())[0]
    target = _module_with_buffers({k: torch.zeros_like(v) for k, v in expected.items()})
    DetectionCheckpointer(target).load(str(dst))
    loaded = target.state_dict()
    assert set(loaded) == set(expected)
    assert all(torch.equal(loaded[k], expected[k]) for k in expected)


def _module_with_buffers(state) -> torch.nn.Module:
    """A module whose state dict has exactly ``state``'s keys (all buffers), to load into."""
    root = torch.nn.Module()
    for key, value in state.items():
        *path, leaf = key.split(".")
        node = root
        for name in path:
            if not hasattr(node, name):
                node.add_module(name, torch.nn.Module())
            node = getattr(node, name)
        node.register_buffer(leaf, value)
    return root


def test_cli_reports_unknown_keys_in_one_line(tmp_path, capsys):
    src = tmp_path / "bad.pth"
    state = _theirs()
    state["mystery"] = torch.zeros(1)
    torch.save(state, src)
    assert conv.main([str(src), str(tmp_path / "out.pth")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "mystery" in err[0]
    assert not (tmp_path / "out.pth").exists()


@pytest.mark.parametrize("kind", ["pkl", "pth"])
def test_cli_refuses_a_file_that_names_code(
    tmp_path, crafted_weights, cli_refuses_then_trusts, kind
):
    files = crafted_weights(_theirs())
    src, dst = str(getattr(files, kind)), tmp_path / "ours.pth"
    cli_refuses_then_trusts(conv.main, src, dst, files.marker)
    assert "cls_head.classifier.weight" in torch.load(dst, weights_only=True)["model"]


def test_cli_reads_their_plain_state_dict_as_data(tmp_path):
    """Their train_voc.py saves ``model.state_dict()``: an OrderedDict of tensors."""
    src, dst = tmp_path / "theirs.pth", tmp_path / "ours.pkl"
    torch.save(_theirs(), src)
    assert conv.main([str(src), str(dst)]) == 0
    target = _module_with_buffers(
        {k: torch.zeros_like(v) for k, v in conv.official_to_bmp_d2(_theirs())[0].items()}
    )
    AtomicCheckpointer(target).load(str(dst))  # our converter's .pkl, read as data
    assert torch.equal(
        target.state_dict()["cls_head.classifier.weight"], _theirs()["classifier.weight"]
    )
