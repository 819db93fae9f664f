"""A run stopped at a random iteration and resumed ends with the uninterrupted run's weights."""

import os
import random

import pytest
import torch
from detectron2.engine import hooks

import bmp  # noqa: F401
from bmp.config import load_config
from bmp.data.synthetic import ensure_synthetic_wsss
from bmp.engine.trainer import BMPTrainer
from bmp.seeding import seed_all

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = os.path.join(ROOT, "configs", "synthetic", "bmp_mit_tiny.yaml")
MAX_ITER = 8


class _Stopped(Exception):
    pass


class _StopAfter(hooks.HookBase):
    """Raise after iteration ``iteration`` (and after its checkpoint, if one is due)."""

    def __init__(self, iteration: int) -> None:
        self.iteration = iteration

    def after_step(self) -> None:
        if self.trainer.iter == self.iteration:
            raise _Stopped()


def _cfg(out_dir, workers: int):
    return load_config(
        TINY,
        [
            "OUTPUT_DIR", str(out_dir),
            "SEED", "0",
            "SOLVER.IMS_PER_BATCH", "2",
            "SOLVER.MAX_ITER", str(MAX_ITER),
            "SOLVER.WARMUP_ITERS", "2",
            "SOLVER.CHECKPOINT_PERIOD", "2",
            "INPUT.CROP.SIZE", "[64,64]",
            "MODEL.BMP.PSEUDO.SCALES", "[1.0]",
            "MODEL.BMP.C2S.START_ITER", "2",
            "MODEL.BMP.S2C.START_ITER", "2",
            "MODEL.BMP.AFFINITY.START_ITER", "2",
            "MODEL.BMP.BSP.START_ITER", "4",
            "MODEL.SEM_SEG_HEAD.DROPOUT", "0.5",  # the model draws random numbers every step
            "DATALOADER.NUM_WORKERS", str(workers),
            "TEST.EVAL_PERIOD", "0",
            "DATASETS.TEST", "()",
        ],
    )  # fmt: skip


def _train(cfg, resume: bool, stop_after: int = -1) -> BMPTrainer:
    trainer = BMPTrainer(cfg)
    if stop_after >= 0:
        trainer.register_hooks([_StopAfter(stop_after)])
    trainer.resume_or_load(resume=resume)
    try:
        trainer.train()
    except _Stopped:
        pass
    return trainer


def _final_state(out_dir):
    return torch.load(os.path.join(out_dir, "model_final.pth"), weights_only=True)["model"]


@pytest.mark.slow
def test_resumed_run_equals_uninterrupted_run(datasets_root, tmp_path):
    ensure_synthetic_wsss(str(datasets_root / "synthetic_wsss"), num_train=7, num_val=2)
    stop = random.Random().randrange(1, MAX_ITER - 1)

    seed_all(0)  # as default_setup does: the model starts from the same weights in both runs
    _train(_cfg(tmp_path / "straight", workers=0), resume=False)
    seed_all(0)
    _train(_cfg(tmp_path / "stopped", workers=2), resume=False, stop_after=stop)
    assert not (tmp_path / "stopped" / "model_final.pth").exists()
    seed_all(12345)  # a new process: its RNGs are wherever they are
    resumed = _train(_cfg(tmp_path / "stopped", workers=0), resume=True)
    assert resumed.start_iter == stop + (1 if stop % 2 == 1 else 0), stop

    straight, stopped = _final_state(tmp_path / "straight"), _final_state(tmp_path / "stopped")
    assert straight.keys() == stopped.keys()
    differ = [k for k in straight if not torch.equal(straight[k], stopped[k])]
    assert differ == [], f"stopped after iteration {stop}: {len(differ)} tensors differ"
