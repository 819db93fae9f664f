"""The harness that runs the authors' training loop (tools/official_harness.py), on a fake
checkout written here: their code is not installable, so the syntax-tree surgery is tested on a
small train_voc.py of the same shape."""

import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))

import compare_training_step as step  # noqa: E402
import official_harness as harness  # noqa: E402

TRAIN_VOC = """
import argparse
import torch
from utils.helpers import double, unused_needs_a_missing_package

parser = argparse.ArgumentParser()
parser.add_argument("--config", default="missing.yaml", type=str)
parser.add_argument("--crop_size", default=8, type=int)
parser.add_argument("--warm", default=2, type=int)


def train(cfg):
    torch.cuda.set_device(0)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.optimizer.lr)
    for n_iter in range(cfg.train.max_iters):
        _, x, _, _ = next(train_loader_iter)
        weight = 0.0 if n_iter <= args.warm else 1.0
        loss = double(model(x)).sum() * weight
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if (n_iter + 1) % cfg.train.log_iters == 0:
            raise RuntimeError("the logging block ran")


if __name__ == "__main__":
    args = parser.parse_args()
    cfg.dataset.crop_size = args.crop_size
    cfg.work_dir.dir = "must not run"
"""

RUN_TRAIN = """crop=16
port=29552
CUDA_VISIBLE_DEVICES=0,4 python -m torch.distributed.launch --nproc_per_node=2 \\
        --master_port=$port train_voc.py \\
        --config c.yaml \\
        --crop_size $crop \\
        --warm 3
"""

CONFIG = """optimizer:
  lr: 1e-1
train:
  max_iters: 10
  log_iters: 1
  eval_iters: 1
dataset:
  crop_size: 4
work_dir:
  dir: out
"""


@pytest.fixture
def checkout(tmp_path: Path) -> SimpleNamespace:
    for name in ("libs/model.py", "utils/camutils.py", "utils/__init__.py"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("")
    (tmp_path / "utils" / "helpers.py").write_text("def double(x):\n    return 2 * x\n")
    (tmp_path / "train_voc.py").write_text(TRAIN_VOC)
    (tmp_path / "runTrain.sh").write_text(RUN_TRAIN)
    (tmp_path / "c.yaml").write_text(CONFIG)
    for name in list(sys.modules):
        if name == "utils" or name.startswith("utils."):
            del sys.modules[name]
    yield SimpleNamespace(path=harness.check_checkout(tmp_path))
    for name in list(sys.modules):
        if name == "utils" or name.startswith("utils."):
            del sys.modules[name]


def test_flags_come_from_their_run_script(checkout):
    flags = harness.run_train_flags(checkout.path / "runTrain.sh")
    assert flags == ["--config", "c.yaml", "--crop_size", "16", "--warm", "3"]


def test_their_loop_body_runs_with_their_setup_args_and_config(checkout):
    model = nn.Linear(2, 1)
    loop = harness.TheirTrainingLoop(checkout, model, ["--crop_size", "24"])
    # runTrain.sh's flags, then ours; the __main__ block's cfg.dataset overrides; YAML 6e-5
    # style floats are floats (as OmegaConf reads them); the logging block is pushed out.
    assert loop.args.warm == 3 and loop.args.crop_size == 24
    assert loop.cfg.dataset.crop_size == 24 and loop.cfg.work_dir.dir == "out"
    assert loop.cfg.optimizer.lr == 0.1 and isinstance(loop.optimizer, torch.optim.SGD)
    before = model.weight.detach().clone()
    batch = (torch.ones(1, 2), None, None)
    ns = loop.step(3, *batch)  # n_iter <= warm: weight 0, no change
    assert torch.equal(model.weight, before) and float(ns["loss"]) == 0.0
    ns = loop.step(4, *batch)
    assert not torch.equal(model.weight, before) and ns["n_iter"] == 4


def test_a_wrong_checkout_is_one_clear_error(tmp_path: Path):
    with pytest.raises(SystemExit, match="BMP-WSSS checkout"):
        harness.check_checkout(tmp_path)


def test_exact_colours_keep_only_values_their_round_trip_keeps():
    # A stand-in for their transforms whose round trip loses odd values (v -> v - 1).
    official = SimpleNamespace(
        transforms=SimpleNamespace(normalize_img=lambda img: np.asarray(img, np.float32) / 3),
        imutils=SimpleNamespace(
            denormalize_img=lambda x: (torch.round(x * 3).to(torch.int64) // 2 * 2).to(torch.uint8)
        ),
    )
    crop = np.array([[[0, 1, 2], [3, 254, 255]]], dtype=np.uint8)
    out = step.exact_colours(official, crop)
    assert out.tolist() == [[[0, 0, 2], [2, 254, 254]]]


def test_gradients_that_are_zero_on_both_sides_are_left_apart():
    theirs = {"w": torch.tensor([1.0, -2.0]), "b": torch.tensor([3e-9])}
    ours = {"w": torch.tensor([1.0, -2.0002]), "b": torch.tensor([-2e-9])}
    worst, name, zeros = step._worst(ours, theirs, zero_below=1e-6)
    assert name == "w" and worst == pytest.approx(1e-4, rel=1e-3) and zeros == ["b"]
    worst, name, zeros = step._worst(ours, theirs)
    assert name == "b" and zeros == []
