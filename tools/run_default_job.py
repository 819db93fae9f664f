#!/usr/bin/env python
"""The README's main command (`make demo`): BMP end to end on the embedded synthetic dataset.

1. generates the synthetic dataset under ``$DETECTRON2_DATASETS`` (once; cached),
2. trains BMP with ``configs/synthetic/bmp_mit_tiny.yaml`` (resumes if a run is there),
3. evaluates segmentation mIoU on val and seed mIoU (CAM / PAR / BSP) on train,
4. prints a results table and writes explanation panels for a few val images.

    python tools/run_default_job.py                       # what `make demo` runs
    python tools/run_default_job.py --fresh               # retrain from scratch
    python tools/run_default_job.py SOLVER.MAX_ITER 200   # any config override

Re-running after a finished run only re-evaluates the final checkpoint (the trainer resumes at
the last iteration); ``--fresh`` deletes the output folder first.
"""

import argparse
import json
import os
import shutil
import sys
import time
from typing import Any, Dict, List, Mapping, Optional

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CONFIG = os.path.join(REPO, "configs", "synthetic", "bmp_mit_tiny.yaml")
DEFAULT_OUTPUT = os.path.join(REPO, "output", "default_job")
VAL = "synthetic_wsss_val_sem_seg"
TRAIN_SEEDS = "synthetic_wsss_train_sem_seg"


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config-file", default=DEFAULT_CONFIG, metavar="FILE")
    p.add_argument("--output-dir", default=DEFAULT_OUTPUT)
    p.add_argument("--num-panels", type=int, default=6, help="val images to draw panels for")
    p.add_argument("--fresh", action="store_true", help="delete --output-dir and retrain")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    return p.parse_args(argv)


def results_table(results: Mapping[str, Any], background: Optional[float] = None) -> str:
    """The short table the job prints: segmentation, seeds and classification, one row each."""
    val = results.get(VAL, {})
    train = results.get(TRAIN_SEEDS, {})
    rows = [("segmentation (val)", "mIoU", val.get("sem_seg", {}).get("mIoU"))]
    if "sem_seg_crf" in val:  # TEST.CRF.ENABLED True
        rows.append(("segmentation + CRF (val)", "mIoU", val["sem_seg_crf"].get("mIoU")))
    if background is not None:
        rows.append(("baseline: all background (val)", "mIoU", background))
    for seed in ("cam", "par", "bsp"):
        rows.append((f"seed {seed.upper()} (train, GT labels)", "mIoU", _get(train, seed)))
    rows.append(("classification (val)", "mAP", val.get("classification", {}).get("mAP")))
    lines = ["| output | metric | value |", "|---|---|---|"]
    for name, metric, value in rows:
        lines.append(f"| {name} | {metric} | {'n/a' if value is None else f'{value:.1f}'} |")
    return "\n".join(lines)


def _get(results: Mapping[str, Any], seed: str) -> Optional[float]:
    return results.get(f"seed_{seed}", {}).get("mIoU")


def draw_panels(cfg: Any, weights: str, out_dir: str, num: int) -> List[str]:
    """Explanation panels (:mod:`bmp.visualization`) for the first ``num`` val images."""
    from detectron2.data import DatasetCatalog

    from bmp.visualization import BMPPredictor, write_panels

    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.WEIGHTS = weights
    files = [d["file_name"] for d in DatasetCatalog.get(VAL)[:num]]
    return write_panels(BMPPredictor(cfg), files, out_dir)


def _stage(step: int, text: str, start: float) -> None:
    """``[demo] 2/4 <text> (elapsed 0:01:05)``: where the job is, and for how long it has run."""
    elapsed = int(time.perf_counter() - start)
    clock = f"{elapsed // 3600}:{elapsed % 3600 // 60:02d}:{elapsed % 60:02d}"
    print(f"[demo] {step}/4 {text} (elapsed {clock})", flush=True)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    from detectron2.utils.logger import setup_logger

    import bmp  # noqa: F401  (registers the model and the datasets)
    from bmp.config import ConfigError, check_config, load_config
    from bmp.data.datasets.register_synthetic import ensure_default_synthetic
    from bmp.engine import BMPTrainer
    from bmp.evaluation import all_background_miou

    if args.fresh and os.path.isdir(args.output_dir):
        shutil.rmtree(args.output_dir)
    os.makedirs(args.output_dir, exist_ok=True)
    setup_logger(args.output_dir, name="detectron2")
    setup_logger(args.output_dir, name="bmp")
    _stage(1, "embedded synthetic dataset (generated once, then cached)", start)
    ensure_default_synthetic(progress=True)
    try:
        cfg = load_config(args.config_file, ["OUTPUT_DIR", args.output_dir] + list(args.opts))
        check_config(cfg)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    missing = [n for n in (VAL, TRAIN_SEEDS) if n not in cfg.DATASETS.TEST]
    if missing or not cfg.TEST.BMP.EXTRA_OUTPUTS:
        print(
            f"error: {args.config_file} must evaluate {missing or [VAL, TRAIN_SEEDS]} with "
            "TEST.BMP.EXTRA_OUTPUTS True to report segmentation and seed mIoU",
            file=sys.stderr,
        )
        return 2

    _stage(
        2,
        f"training BMP ({cfg.MODEL.MIT.NAME}, {cfg.SOLVER.MAX_ITER} iterations, batch "
        f"{cfg.SOLVER.IMS_PER_BATCH}) -> {args.output_dir}; 'progress' lines give a phase-aware "
        "ETA",
        start,
    )
    trainer = BMPTrainer(cfg)
    trainer.resume_or_load(resume=True)
    _stage(3, "evaluation runs at the end of training (val mIoU, train seeds)", start)
    results = trainer.train() or {}
    final = os.path.join(args.output_dir, "model_final.pth")

    _stage(4, f"explanation panels for {args.num_panels} val images", start)
    panels = draw_panels(cfg, final, os.path.join(args.output_dir, "panels"), args.num_panels)

    table = results_table(results, all_background_miou(VAL))
    with open(os.path.join(args.output_dir, "results.md"), "w") as f:
        f.write(table + "\n")
    with open(os.path.join(args.output_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=2, default=float)
    minutes = (time.perf_counter() - start) / 60
    print(f"\n[demo] BMP on the embedded synthetic dataset ({minutes:.1f} min)\n\n{table}\n")
    print(f"[demo] per-class IoU tables: {args.output_dir}/eval_*.md")
    print(f"[demo] panels: {os.path.dirname(panels[0]) if panels else 'none'}")
    print(f"[demo] how the pseudo labels evolved: tensorboard --logdir {args.output_dir}")
    print(f"[demo] checkpoint: {final}")
    return 0 if _has_all(results) else 1


def _has_all(results: Dict[str, Any]) -> bool:
    """The job succeeded only if every number of the table was produced."""
    val, train = results.get(VAL, {}), results.get(TRAIN_SEEDS, {})
    return "sem_seg" in val and all(f"seed_{s}" in train for s in ("cam", "par", "bsp"))


if __name__ == "__main__":
    sys.exit(main())
