"""bmp/engine/checkpoint.py: a crash during a save never corrupts the last checkpoint, and the
files it reads (MODEL.WEIGHTS, resumed checkpoints) are read as data."""

import os
import pickle
import socket
import time
from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn

from bmp.engine import checkpoint as ckpt
from bmp.engine.checkpoint import AtomicCheckpointer
from bmp.utils import file_io
from bmp.utils.safe_load import RefusedPickleError
from bmp.utils.weights import CheckpointFormatError, save_d2_checkpoint


def _model(value: float) -> nn.Module:
    m = nn.Linear(2, 2)
    nn.init.constant_(m.weight, value)
    return m


def test_save_writes_file_and_tags_last(tmp_path):
    c = AtomicCheckpointer(_model(1.0), str(tmp_path))
    c.save("model_0000009", iteration=9)
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000009.pth"
    assert c.get_checkpoint_file() == str(tmp_path / "model_0000009.pth")
    assert torch.load(tmp_path / "model_0000009.pth")["iteration"] == 9
    assert [p.name for p in tmp_path.iterdir() if ".tmp" in p.name] == []


def test_crash_during_save_keeps_previous_last_checkpoint(tmp_path, monkeypatch):
    c = AtomicCheckpointer(_model(1.0), str(tmp_path))
    c.save("model_final", iteration=9)
    good = (tmp_path / "model_final.pth").read_bytes()

    def dying_save(obj, f, *args, **kwargs):
        f.write(b"\x80half a pickle")
        raise KeyboardInterrupt("killed while saving")

    monkeypatch.setattr(torch, "save", dying_save)
    c2 = AtomicCheckpointer(_model(5.0), str(tmp_path))
    with pytest.raises(KeyboardInterrupt):
        c2.save("model_final", iteration=19)  # same name: overwriting must not corrupt it
    with pytest.raises(KeyboardInterrupt):
        c2.save("model_0000019", iteration=19)
    monkeypatch.undo()

    assert (tmp_path / "model_final.pth").read_bytes() == good
    assert not (tmp_path / "model_0000019.pth").exists()
    assert (tmp_path / "last_checkpoint").read_text() == "model_final.pth"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last_checkpoint", "model_final.pth"]
    fresh = _model(0.0)
    extra = AtomicCheckpointer(fresh, str(tmp_path)).resume_or_load("", resume=True)
    assert extra["iteration"] == 9
    assert torch.all(fresh.weight == 1.0)


def test_crash_while_tagging_keeps_old_tag(tmp_path, monkeypatch):
    c = AtomicCheckpointer(_model(1.0), str(tmp_path))
    c.save("model_0000004")
    real_replace = os.replace

    def failing_replace(src, dst):
        if os.path.basename(dst) == "last_checkpoint":
            raise OSError("disk full")
        real_replace(src, dst)

    monkeypatch.setattr(ckpt.os, "replace", failing_replace)
    with pytest.raises(OSError):
        c.save("model_0000009")
    monkeypatch.undo()
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000004.pth"
    assert (tmp_path / "model_0000009.pth").exists()  # whole, just not tagged yet


def test_no_save_dir_or_not_main_process_writes_nothing(tmp_path):
    AtomicCheckpointer(_model(1.0), "").save("m")
    AtomicCheckpointer(_model(1.0), str(tmp_path), save_to_disk=False).save("m")
    assert list(tmp_path.iterdir()) == []


def test_leftover_temp_files_are_removed_on_start(tmp_path):
    c = AtomicCheckpointer(_model(1.0), str(tmp_path))
    c.save("model_0000009", iteration=9)
    here = socket.gethostname()
    dead_pid = 2**22 + 12345  # above Linux's pid_max: no such process
    leftovers = [
        f".model_0000019.pth.tmp@{here}@{dead_pid}",
        f".last_checkpoint.tmp@{here}@{dead_pid}",
    ]
    (tmp_path / leftovers[0]).write_bytes(b"\x80half a pickle")
    (tmp_path / leftovers[1]).write_bytes(b"")
    live = tmp_path / f".model_0000029.pth.tmp@{here}@{os.getpid()}"  # a writer still running
    live.write_bytes(b"")
    # A live process id but untouched for hours: a leftover whose id was handed out again.
    reused = tmp_path / f".model_0000039.pth.tmp@{here}@1"  # pid 1 is always running
    reused.write_bytes(b"")
    os.utime(reused, (time.time() - 2 * file_io.STALE_AFTER_S,) * 2)
    other_host = tmp_path / f".model_0000049.pth.tmp@another-host@{dead_pid}"  # not ours
    other_host.write_bytes(b"")
    unrelated = tmp_path / ".hidden.tmp"
    unrelated.write_bytes(b"keep")

    AtomicCheckpointer(_model(1.0), str(tmp_path))
    names = sorted(p.name for p in tmp_path.iterdir())
    kept = [".hidden.tmp", live.name, other_host.name, "last_checkpoint", "model_0000009.pth"]
    assert names == sorted(kept)
    AtomicCheckpointer(_model(1.0), str(tmp_path), save_to_disk=False)  # other ranks: no I/O
    assert live.exists()


def test_resume_falls_back_from_a_damaged_checkpoint(tmp_path, caplog):
    c = AtomicCheckpointer(_model(1.0), str(tmp_path))
    c.save("model_0000004", iteration=4)
    os.utime(tmp_path / "model_0000004.pth", (1, 1))  # clearly older than the next one
    nn.init.constant_(c.model.weight, 2.0)
    c.save("model_0000009", iteration=9)
    c.save("model_final", iteration=14)
    data = (tmp_path / "model_final.pth").read_bytes()
    (tmp_path / "model_final.pth").write_bytes(data[: len(data) // 2])  # truncated copy

    fresh = _model(0.0)
    with caplog.at_level("WARNING"):
        extra = AtomicCheckpointer(fresh, str(tmp_path)).resume_or_load("", resume=True)
    assert extra["iteration"] == 9  # the newest readable one
    assert torch.all(fresh.weight == 2.0)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "\n" not in warnings[0]
    assert str(tmp_path / "model_final.pth") in warnings[0] and "damaged" in warnings[0]
    assert "model_0000009.pth" in warnings[0]


def test_resume_with_no_readable_checkpoint_is_one_error(tmp_path):
    c = AtomicCheckpointer(_model(1.0), str(tmp_path))
    c.save("model_final", iteration=3)
    (tmp_path / "model_final.pth").write_bytes(b"")
    with pytest.raises(ckpt.DamagedCheckpointError, match="no readable checkpoint"):
        AtomicCheckpointer(_model(0.0), str(tmp_path)).resume_or_load("", resume=True)


@pytest.mark.parametrize("zip_format", [True, False])
def test_checkpoint_damage(tmp_path, zip_format):
    path = tmp_path / "m.pth"
    torch.save({"w": torch.arange(1000.0)}, path, _use_new_zipfile_serialization=zip_format)
    assert ckpt.checkpoint_damage(str(path)) is None
    data = path.read_bytes()
    if zip_format:  # flip bytes inside the stored tensor: the archive is whole, its CRC is not
        at = data.index(torch.arange(1000.0).numpy().tobytes()[:64]) + 100
        path.write_bytes(data[:at] + bytes(b ^ 0xFF for b in data[at : at + 8]) + data[at + 8 :])
        assert "CRC" in ckpt.checkpoint_damage(str(path))
    path.write_bytes(data[: len(data) // 2])
    assert ckpt.checkpoint_damage(str(path)) is not None


# ------------------------------------------------------------- files are read as data

_WEIGHTS = {"weight": torch.full((2, 2), 3.0), "bias": torch.tensor([1.0, 2.0])}


def _loaded_into_fresh(path: str, **kwargs) -> nn.Module:
    model = _model(0.0)
    AtomicCheckpointer(model, **kwargs).load(path)
    return model


@pytest.mark.parametrize("kind", ["pkl", "pth", "legacy_pth"])
def test_model_weights_that_name_code_are_refused_in_one_line(crafted_weights, kind):
    files = crafted_weights(_WEIGHTS)
    path = str(getattr(files, kind))
    with pytest.raises(RefusedPickleError) as e:
        _loaded_into_fresh(path)
    message = str(e.value)
    assert "\n" not in message and message.startswith(f"{path}: refused to unpickle 'posix.mkdir'")
    assert "set MODEL.WEIGHTS_UNSAFE_UNPICKLE True" in message
    assert not files.marker.exists()

    # The opt-in (MODEL.WEIGHTS_UNSAFE_UNPICKLE True) unpickles it fully: the payload runs.
    model = _loaded_into_fresh(path, unsafe_unpickle=True)
    assert files.marker.is_dir()
    assert torch.equal(model.weight, _WEIGHTS["weight"])


def test_model_weights_layouts_are_read_as_data(tmp_path):
    """A plain state dict, one under ``model``, detectron2's ``.pkl`` of numpy arrays (with
    name matching), and what our converters write (``.pkl`` and ``.pth``)."""
    arrays = {k: v.numpy() for k, v in _WEIGHTS.items()}
    torch.save(OrderedDict(_WEIGHTS), tmp_path / "plain.pth")
    torch.save({"model": _WEIGHTS, "iteration": 7}, tmp_path / "model.pth")
    with open(tmp_path / "zoo.pkl", "wb") as f:
        pickle.dump({"model": arrays, "__author__": "x", "matching_heuristics": True}, f, 2)
    save_d2_checkpoint(_WEIGHTS, str(tmp_path / "converted.pkl"), "test")
    save_d2_checkpoint(_WEIGHTS, str(tmp_path / "converted.pth"), "test")
    for name in ("plain.pth", "model.pth", "zoo.pkl", "converted.pkl", "converted.pth"):
        model = _loaded_into_fresh(str(tmp_path / name))
        assert torch.equal(model.weight, _WEIGHTS["weight"]), name
        assert torch.equal(model.bias, _WEIGHTS["bias"]), name


def test_caffe2_and_pycls_layouts_keep_detectron2s_reading(tmp_path):
    with open(tmp_path / "c2.pkl", "wb") as f:
        pickle.dump({"blobs": {"conv1_w": np.ones(2), "conv1_w_momentum": np.ones(2)}}, f)
    torch.save(
        {"model_state": {"w": torch.ones(1), "bn.num_batches_tracked": torch.tensor(1)}},
        tmp_path / "m.pyth",
    )
    c = AtomicCheckpointer(_model(0.0))
    c2 = c._load_file(str(tmp_path / "c2.pkl"))
    assert list(c2["model"]) == ["conv1_w"] and c2["__author__"] == "Caffe2"
    assert c2["matching_heuristics"] is True
    pycls = c._load_file(str(tmp_path / "m.pyth"))
    assert list(pycls["model"]) == ["w"] and pycls["__author__"] == "pycls"
    torch.save(torch.ones(2), tmp_path / "tensor.pth")
    with pytest.raises(CheckpointFormatError, match="tensor.pth holds a Tensor"):
        c._load_file(str(tmp_path / "tensor.pth"))


class _TrainerState:
    """What our trainer checkpoints: iteration, hooks, optimizer, grad scaler, data position."""

    def __init__(self, optimizer, scheduler) -> None:
        self.optimizer, self.scheduler, self.loaded = optimizer, scheduler, None

    def state_dict(self):
        return {
            "iteration": 9,
            "hooks": {"LRScheduler": self.scheduler.state_dict()},
            "_trainer": {
                "optimizer": self.optimizer.state_dict(),
                "grad_scaler": torch.amp.GradScaler("cpu", init_scale=1024.0).state_dict(),
            },
            "train_data": {"seed": 3, "samples": 18},
        }

    def load_state_dict(self, state) -> None:
        self.loaded = state


def test_our_training_checkpoint_resumes_read_as_data(tmp_path):
    model = _model(1.0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: 0.5)
    model(torch.ones(1, 2)).sum().backward()
    optimizer.step()
    scheduler.step()
    AtomicCheckpointer(model, str(tmp_path), trainer=_TrainerState(optimizer, scheduler)).save(
        "model_0000009", iteration=9
    )
    resumed = _TrainerState(None, None)
    fresh = _model(0.0)
    extra = AtomicCheckpointer(fresh, str(tmp_path), trainer=resumed).resume_or_load("")
    assert extra["iteration"] == 9 and torch.equal(fresh.weight, model.weight)
    state = resumed.loaded
    assert state["train_data"] == {"seed": 3, "samples": 18}
    assert state["_trainer"]["grad_scaler"]["scale"] == 1024.0
    moments = state["_trainer"]["optimizer"]["state"][0]["exp_avg"]
    assert torch.equal(moments, optimizer.state_dict()["state"][0]["exp_avg"])
    assert state["hooks"]["LRScheduler"] == scheduler.state_dict()


def test_damage_check_and_resume_never_unpickle_code(tmp_path, crafted_weights):
    """A legacy-format file is checked by reading it as data: code it names is not run, and is
    refused at load rather than skipped as damage."""
    files = crafted_weights(_WEIGHTS)
    assert ckpt.checkpoint_damage(str(files.legacy_pth)) is None
    assert not files.marker.exists()
    c = AtomicCheckpointer(_model(1.0), str(tmp_path))
    c.save("model_0000004", iteration=4)
    (tmp_path / "model_final.pth").write_bytes(files.legacy_pth.read_bytes())
    c.tag_last_checkpoint("model_final.pth")
    with pytest.raises(RefusedPickleError, match="model_final.pth: refused to unpickle"):
        AtomicCheckpointer(_model(0.0), str(tmp_path)).resume_or_load("", resume=True)
    assert not files.marker.exists()
