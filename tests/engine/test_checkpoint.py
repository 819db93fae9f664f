"""bmp/engine/checkpoint.py: a crash during a save never corrupts the last checkpoint."""

import os
import socket
import time

import pytest
import torch
from torch import nn

from bmp.engine import checkpoint as ckpt
from bmp.engine.checkpoint import AtomicCheckpointer
from bmp.utils import file_io


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

    monkeypatch.setattr(ckpt.torch, "save", dying_save)
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
