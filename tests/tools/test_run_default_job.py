"""The README's main command, end to end on a tiny generated dataset (a few iterations)."""

import importlib.util
import json
import os

import pytest

from bmp.data.synthetic import ensure_synthetic_wsss

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_spec = importlib.util.spec_from_file_location(
    "run_default_job", os.path.join(ROOT, "tools", "run_default_job.py")
)
job = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(job)

FAST = [
    "SOLVER.MAX_ITER", "6",
    "SOLVER.IMS_PER_BATCH", "2",
    "SOLVER.WARMUP_ITERS", "2",
    "INPUT.CROP.SIZE", "[64,64]",
    "MODEL.BMP.PSEUDO.SCALES", "[1.0]",
    "MODEL.BMP.C2S.START_ITER", "2",
    "MODEL.BMP.S2C.START_ITER", "2",
    "MODEL.BMP.AFFINITY.START_ITER", "2",
    "MODEL.BMP.BSP.START_ITER", "4",
]  # fmt: skip


def test_results_table_lists_every_number():
    results = {
        job.VAL: {"sem_seg": {"mIoU": 25.71}, "classification": {"mAP": 99.1}},
        job.TRAIN_SEEDS: {
            f"seed_{s}": {"mIoU": v} for s, v in zip(("cam", "par", "bsp"), (1, 2, 3))
        },
    }
    table = job.results_table(results, background=7.36)
    assert "| segmentation (val) | mIoU | 25.7 |" in table
    assert "| baseline: all background (val) | mIoU | 7.4 |" in table
    assert "| seed BSP (train, GT labels) | mIoU | 3.0 |" in table
    assert "| classification (val) | mAP | 99.1 |" in table
    assert job._has_all(results)
    del results[job.TRAIN_SEEDS]["seed_bsp"]
    assert not job._has_all(results)
    assert "| seed BSP (train, GT labels) | mIoU | n/a |" in job.results_table(results)


@pytest.mark.slow
def test_default_job_trains_evaluates_and_draws(datasets_root, tmp_path, capsys):
    ensure_synthetic_wsss(str(datasets_root / "synthetic_wsss"), num_train=6, num_val=3)
    out = tmp_path / "job"
    assert job.main(["--output-dir", str(out), "--num-panels", "2", *FAST]) == 0
    printed = capsys.readouterr().out
    assert "| segmentation (val) | mIoU |" in printed and "n/a" not in printed
    assert sorted(os.listdir(out / "panels")) == ["val_00000.png", "val_00001.png"]
    results = json.loads((out / "results.json").read_text())
    assert results[job.TRAIN_SEEDS]["seed_bsp"]["num_images"] == 6
    assert (out / "model_final.pth").exists()
    # A second run finds the finished checkpoint and only evaluates again.
    assert job.main(["--output-dir", str(out), "--num-panels", "1", *FAST]) == 0
    assert "Starting training from iteration 6" in (out / "log.txt").read_text()
