"""Two CPU processes over gloo via detectron2's launch: identical weights, gathered evaluation."""

import json
import os

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.engine import launch
from detectron2.utils import comm

import bmp  # noqa: F401
from bmp.data.synthetic_wsss import ensure_synthetic_wsss
from bmp.engine.defaults import load_config
from bmp.engine.trainer import BMPTrainer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = os.path.join(ROOT, "configs", "synthetic", "bmp_mit_tiny.yaml")


def _opts(out_dir: str):
    return [
        "OUTPUT_DIR", out_dir,
        "SOLVER.IMS_PER_BATCH", "4",  # 2 per process
        "SOLVER.MAX_ITER", "3",
        "SOLVER.CHECKPOINT_PERIOD", "1000",
        "INPUT.CROP.SIZE", "[64,64]",
        "MODEL.SEM_SEG_HEAD.NORM", "SyncBN",
        "MODEL.BMP.PSEUDO.SCALES", "[1.0]",
        "MODEL.BMP.C2S.START_ITER", "1",
        "MODEL.BMP.S2C.START_ITER", "1",
        "MODEL.BMP.AFF_START_ITER", "1",
        "MODEL.BMP.BSP.START_ITER", "2",
        "TEST.EVAL_PERIOD", "3",
    ]  # fmt: skip


def _worker(out_dir: str) -> None:
    torch.set_num_threads(1)
    cfg = load_config(TINY, _opts(out_dir))
    trainer = BMPTrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    flat = torch.cat([p.detach().flatten() for p in trainer.model.parameters()])
    weights = comm.all_gather(flat)
    norm = type(trainer.model.module.sem_seg_head.linear_fuse.norm).__name__
    if comm.is_main_process():
        report = {
            "world_size": comm.get_world_size(),
            "max_weight_diff": float((weights[0] - weights[1]).abs().max()),
            "finite": bool(torch.isfinite(weights[0]).all()),
            "head_norm": norm,
            "results": trainer._last_eval_results,
        }
        with open(os.path.join(out_dir, "dist_report.json"), "w") as f:
            json.dump(report, f, default=float)


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="exercises the CPU / gloo path")
def test_two_cpu_processes_agree(datasets_root, tmp_path):
    ensure_synthetic_wsss(str(datasets_root / "synthetic_wsss"), num_train=8, num_val=5)
    out_dir = str(tmp_path / "out")
    launch(_worker, 2, dist_url="auto", args=(out_dir,))

    with open(os.path.join(out_dir, "dist_report.json")) as f:
        report = json.load(f)
    assert report["world_size"] == 2
    assert report["head_norm"] == "NaiveSyncBatchNorm"  # SyncBN has no CPU kernel
    assert report["max_weight_diff"] == 0.0 and report["finite"]

    # Rank 0's metrics cover the whole val set: 5 images split 3 + 2 over the ranks give the
    # same numbers as one process evaluating the saved final model.
    cfg = load_config(
        TINY, _opts(out_dir) + ["MODEL.WEIGHTS", os.path.join(out_dir, "model_final.pth")]
    )
    model = BMPTrainer.build_model(cfg)
    DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    single = BMPTrainer.test(cfg, model)
    # The config evaluates val (segmentation) and train (seeds with extra outputs): every
    # evaluator's numbers must be gathered over both ranks.
    assert set(report["results"]) == {"synthetic_wsss_val_sem_seg", "synthetic_wsss_train_sem_seg"}
    for dataset, tasks in report["results"].items():
        assert {"sem_seg", "seed_cam", "seed_par", "seed_bsp"} <= set(tasks)
        for task in ("sem_seg", "seed_bsp"):
            for metric in ("mIoU", "pACC"):
                assert tasks[task][metric] == pytest.approx(
                    single[dataset][task][metric], abs=1e-6
                ), (dataset, task, metric)
    assert report["results"]["synthetic_wsss_train_sem_seg"]["seed_cam"]["num_images"] == 8
