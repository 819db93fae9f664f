"""The comparison tool's own logic (their code itself is not installable, so not run here)."""

import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))

import compare_with_official as cmp  # noqa: E402
import official_harness as harness  # noqa: E402


def test_padded_case_is_black_outside_its_box():
    image = np.full((30, 40, 3), 200, dtype=np.uint8)
    crop, box = cmp.make_case(image, 64, padded=True)
    y0, y1, x0, x1 = box
    assert crop.shape == (64, 64, 3) and 0 < y0 < y1 < 64 and 0 < x0 < x1 < 64
    inside = np.zeros((64, 64), dtype=bool)
    inside[y0:y1, x0:x1] = True
    assert (crop[~inside] == 0).all()
    assert (crop[inside] == 200).all()
    plain, full = cmp.make_case(image, 64, padded=False)
    assert plain.shape == (64, 64, 3) and full == [0, 64, 0, 64]


def test_conv_module_stand_in_has_their_parameter_names():
    m = harness._ConvModuleStandIn(8, 4, kernel_size=1, norm_cfg={"type": "SyncBN"})
    assert set(m.state_dict()) == {
        "conv.weight",
        "bn.weight",
        "bn.bias",
        "bn.running_mean",
        "bn.running_var",
        "bn.num_batches_tracked",
    }
    assert (m.eval()(torch.randn(1, 8, 3, 3)) >= 0).all()  # ends in a ReLU


def test_metrics():
    theirs = torch.tensor([0.0, 2.0, 4.0])
    assert cmp.rel_diff(theirs + torch.tensor([0.0, 0.1, 0.0]), theirs) == pytest.approx(0.025)
    assert cmp.agreement(torch.tensor([1, 2, 255, 3]), torch.tensor([1, 2, 255, 0])) == 75.0


def test_a_wrong_checkout_path_is_one_clear_error(tmp_path: Path):
    with pytest.raises(SystemExit, match="BMP-WSSS checkout"):
        cmp.import_official(tmp_path)


def _fake_official():
    """Their model stands in as one layer; a checkpoint is loaded into it strictly."""
    model = SimpleNamespace(BMP=lambda *args, **kwargs: torch.nn.Linear(2, 1, bias=False))
    return SimpleNamespace(model=model, stand_ins=[])


def test_a_checkpoint_that_names_code_is_refused(tmp_path, crafted_weights, capsys, monkeypatch):
    files = crafted_weights({"weight": torch.full((1, 2), 3.0)})
    monkeypatch.setattr(cmp, "import_official", lambda path: _fake_official())
    argv = ["--official", str(tmp_path), "--checkpoint", str(files.pth)]
    with torch.enable_grad():  # main() turns gradients off for the process; restored on exit
        assert cmp.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {files.pth}: refused to unpickle")
    assert "'posix.mkdir'" in err and "--unsafe-unpickle" in err
    assert not files.marker.exists()

    # With the opt-in the file is unpickled fully (the payload runs) and its weights are loaded.
    model = harness.build_their_model(_fake_official(), 0, str(files.pth), unsafe_unpickle=True)
    assert files.marker.is_dir()
    assert torch.equal(model.weight, torch.full((1, 2), 3.0))


def test_their_plain_state_dict_is_read_as_data(tmp_path):
    path = tmp_path / "theirs.pth"
    torch.save({"module.weight": torch.full((1, 2), 5.0)}, path)  # DataParallel's prefix
    model = harness.build_their_model(_fake_official(), 0, str(path))
    assert torch.equal(model.weight, torch.full((1, 2), 5.0))
