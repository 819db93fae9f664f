"""Mixed-precision training (bmp/engine/amp.py): bfloat16 on CPU, resume across AMP on and off."""

import os

import pytest
import torch

import bmp  # noqa: F401
from bmp.config import ConfigError, check_config, load_config
from bmp.data.synthetic import ensure_synthetic_wsss
from bmp.engine.amp import MixedPrecisionTrainer
from bmp.engine.trainer import BMPTrainer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = os.path.join(ROOT, "configs", "synthetic", "bmp_mit_tiny.yaml")


def _train_cfg(out_dir, *opts):
    return load_config(
        TINY,
        [
            "OUTPUT_DIR", str(out_dir), "SEED", "0", "SOLVER.IMS_PER_BATCH", "2",
            "SOLVER.MAX_ITER", "4", "SOLVER.WARMUP_ITERS", "1", "SOLVER.CHECKPOINT_PERIOD", "2",
            "INPUT.CROP.SIZE", "[64,64]", "MODEL.BMP.PSEUDO.SCALES", "[1.0]",
            "MODEL.BMP.C2S.START_ITER", "1", "MODEL.BMP.S2C.START_ITER", "1",
            "MODEL.BMP.AFFINITY.START_ITER", "1", "MODEL.BMP.BSP.START_ITER", "2",
            "TEST.EVAL_PERIOD", "0", "DATASETS.TEST", "()", *opts,
        ],
    )  # fmt: skip


@pytest.fixture(autouse=True)
def _data(datasets_root):
    ensure_synthetic_wsss(str(datasets_root / "synthetic_wsss"), num_train=6, num_val=2)


def test_float16_on_cpu_is_one_config_error(tmp_path):
    cfg = _train_cfg(tmp_path, "SOLVER.AMP.ENABLED", "True", "MODEL.DEVICE", "cpu")
    with pytest.raises(ConfigError, match="float16 needs CUDA.*bfloat16") as e:
        check_config(cfg)
    assert "\n" not in str(e.value)
    bad = _train_cfg(tmp_path, "SOLVER.AMP.ENABLED", "True", "SOLVER.AMP.PRECISION", "fp8")
    with pytest.raises(ConfigError, match="SOLVER.AMP.PRECISION='fp8'"):
        check_config(bad)


def _final_weights(trainer):
    return {k: v.clone() for k, v in trainer.model.state_dict().items()}


def test_bfloat16_trains_on_cpu_and_resumes_across_amp_on_and_off(tmp_path):
    fp32 = BMPTrainer(_train_cfg(tmp_path / "fp32"))
    fp32.resume_or_load(resume=False)
    fp32.train()
    assert (tmp_path / "fp32" / "model_final.pth").is_file()

    # An fp32 run's checkpoint resumed with bfloat16 AMP on.
    amp_opts = ("SOLVER.AMP.ENABLED", "True", "SOLVER.AMP.PRECISION", "bfloat16")
    cfg = _train_cfg(tmp_path / "fp32", *amp_opts, "SOLVER.MAX_ITER", "6")
    amp = BMPTrainer(cfg)
    assert isinstance(amp._trainer, MixedPrecisionTrainer) and amp._trainer.grad_scaler is None
    amp.resume_or_load(resume=True)
    assert amp.start_iter == 4
    amp.train()
    weights = _final_weights(amp)
    assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())
    assert all(v.dtype != torch.bfloat16 for v in weights.values())  # weights stay float32

    # And that AMP run's checkpoint resumed with AMP off.
    off = BMPTrainer(_train_cfg(tmp_path / "fp32", "SOLVER.MAX_ITER", "7"))
    off.resume_or_load(resume=True)
    assert off.start_iter == 6
    off.train()
