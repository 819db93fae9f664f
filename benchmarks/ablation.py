#!/usr/bin/env python
"""Does each part of BMP pull its weight? The paper's ablation on the embedded synthetic dataset.

Each variant is a config in ``configs/ablation/`` on top of ``configs/synthetic/bmp_mit_tiny.yaml``
and adds one mechanism to the one above it, with the same training budget:

1. CAM only: the classification branch alone (the seeds are its CAMs),
2. + c2s: PAR-refined CAM labels supervise the segmentation branch (with the affinity loss: the
   classic end-to-end baseline),
3. + s2c: the segmentation branch's confident labels supervise the CAMs (bidirectional),
4. + interaction: CAM confidence re-weights the decoder's features,
5. + background-aware propagation (BSP): full BMP,
6. supervised: the same backbone and recipe on ground-truth masks, the ceiling
   (``configs/synthetic/supervised_mit_tiny.yaml``, its own meta-architecture). While that config
   is missing or its meta-architecture is not registered, the row is skipped with a message.

The table starts with the all-background baseline and reports segmentation mIoU on val; the
CAM / PAR / BSP seeds on train (with ground-truth image labels, as the field reports seeds) and the
share of pixels each leaves uncertain; and classification mAP on val, as mean ± std over seeds.
Writes ``benchmarks/results/ablation.{md,json,png}``; the JSON holds each run's numbers and the
command that reproduces it. Finished runs are reused, so an interrupted benchmark continues.

    python benchmarks/ablation.py                  # 6 variants x 3 seeds, 2 runs at a time
    python benchmarks/ablation.py --seeds 0 --variants cls full   # a quick look
    python benchmarks/ablation.py --report-only    # the table of every run measured so far
    python benchmarks/ablation.py --quick          # a few iterations, to check the pipeline
    python benchmarks/ablation.py --variants full --seeds 0 1 --tag s2c1200 \
        MODEL.BMP.S2C.START_ITER 1200                              # a diagnostic variant

``--tag`` keeps a variant run with extra overrides apart from the plain ones: its runs are
``<variant>_<tag>_seed<N>`` and its results ``ablation_<tag>.{md,json,png}``, with lines that
compare each tagged variant to its plain runs, paired by seed. Where the runs had the s2c gate
(``MODEL.BMP.S2C.GATE_AGREEMENT``), the report also gives the iteration it opened at.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from statistics import mean, stdev
from typing import Any

from runs import (
    RESULTS,
    Column,
    Variant,
    against_plain,
    ladder_line,
    paired_columns,
    quick_overrides,
    recorded_minutes,
    results_table,
    run_grid,
    seed_columns,
    tracked_lines,
    write_report,
)

VAL = "synthetic_wsss_val_sem_seg"
TRAIN = "synthetic_wsss_train_sem_seg"

VARIANTS = [
    Variant("cls", "1. CAM only", "configs/ablation/cam_only.yaml"),
    Variant("c2s", "2. + c2s (PAR labels, affinity)", "configs/ablation/c2s.yaml"),
    Variant("s2c", "3. + s2c (bidirectional)", "configs/ablation/s2c.yaml"),
    Variant("inter", "4. + interaction", "configs/ablation/interaction.yaml"),
    Variant("full", "5. + BSP = full BMP", "configs/ablation/full.yaml"),
    # The supervised ceiling: a separate meta-architecture trained on ground-truth masks.
    Variant("supervised", "6. supervised (GT masks)", "configs/synthetic/supervised_mit_tiny.yaml"),
]

COLUMNS = [
    Column("seg_val", "seg mIoU (val)", VAL, "sem_seg", needs_seg=True),
    Column("seg_train", "seg mIoU (train)", TRAIN, "sem_seg", needs_seg=True),
    Column("seed_used", "training seed (train)", TRAIN, "training_seed"),
    *seed_columns(TRAIN),
    Column("cls_map", "cls mAP (val)", VAL, "classification", "mAP"),
]
# What a tagged variant is compared with its plain runs on.
PAIRED_COLUMNS = paired_columns(COLUMNS, ["seg_val", "seg_train", "seed_cam", "seed_par"])
# --quick: every stage of the pipeline in a few iterations, on one pseudo-label scale.
QUICK = quick_overrides(8, 64) + ["MODEL.BMP.PSEUDO.SCALES", "[1.0]"]

INTRO = (
    "Configs `configs/ablation/*.yaml` on `configs/synthetic/bmp_mit_tiny.yaml`; mean ± std over "
    "seeds. Segmentation mIoU on val; seed mIoU on train with ground-truth image labels, where "
    "seed pixels left uncertain count as misses (their share is the 'ignored %' columns). The "
    "training seed is the one each variant trains its segmentation branch with (CAM for variant "
    "1, which trains none, PAR for 2-4, BSP for 5). Each run's command is in the JSON file."
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    keys = [v.key for v in VARIANTS]
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--variants", nargs="+", default=keys, choices=keys)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--jobs", type=int, default=2, help="runs at a time (threads split evenly)")
    p.add_argument("--out", default=str(RESULTS))
    p.add_argument("--tag", default="", help="name for runs with extra overrides (see above)")
    p.add_argument("--quick", action="store_true", help="seed 0, 8 iterations, tag 'quick'")
    p.add_argument(
        "--report-only", action="store_true", help="train nothing: report the runs measured so far"
    )
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides for every run")
    args = p.parse_args(argv)
    if args.quick:
        args.seeds, args.tag, args.opts = [0], args.tag or "quick", QUICK + list(args.opts)
    if bool(args.tag) != bool(args.opts):
        p.error("overrides need a --tag (and a --tag needs overrides): runs are reused by name")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    chosen = [v for v in VARIANTS if v.key in args.variants]
    grid = [(v, s) for s in args.seeds for v in chosen]
    from bmp.data.datasets.register_synthetic import ensure_default_synthetic

    ensure_default_synthetic(progress=True)  # generated once, as `make demo` does
    runs = run_grid(
        grid, out / "ablation_runs", (VAL, TRAIN), args.opts, args.jobs, args.tag,
        train=not args.report_only,
    )  # fmt: skip
    from bmp.evaluation import all_background_miou

    baseline = [("all background", {"seg_val": all_background_miou(VAL)})]
    table, summary = results_table(chosen, runs, COLUMNS, baseline)
    cmd = "python benchmarks/ablation.py" + (" " + " ".join(sys.argv[1:]) if argv is None else "")
    md = f"# BMP ablation on the embedded synthetic dataset\n\n`{cmd.strip()}` "
    md += f"({recorded_minutes(runs, args.jobs)}). {INTRO}\n\n{table}\n"
    if args.opts:
        md += f"\nExtra overrides for every run: `{' '.join(args.opts)}`.\n"
    stem = f"ablation_{args.tag}" if args.tag else "ablation"
    payload = {"command": cmd.strip(), "overrides": list(args.opts), **summary}
    if summary["variants"]:
        plot(summary["variants"], out / f"{stem}.png")
    verdicts = _verdicts(summary["variants"])
    if args.tag and not args.quick:  # a quick check has nothing to be compared with
        plain = run_grid(grid, out / "ablation_runs", (VAL, TRAIN), (), args.jobs, train=False)
        _, plain_summary = results_table(chosen, plain, COLUMNS)
        verdicts += against_plain(
            summary["variants"], plain_summary["variants"], args.tag, PAIRED_COLUMNS
        )
        verdicts += tracked_lines(runs)
    payload["verdicts"] = verdicts
    if verdicts:
        md += "\n" + "\n".join(f"- {line}" for line in verdicts) + "\n"
    write_report(out, stem, md, payload)
    print("\n" + table + "\n\n" + "\n".join(verdicts))
    print(f"\nwrote {out}/{stem}.{{md,json,png}}")
    return 0


# Two-sided 95 % quantiles of Student's t with 1..10 degrees of freedom.
T_975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228)


def paired_verdict(diffs: list[float]) -> str:
    """Full BMP minus c2s-only, paired by seed: the mean with its 95 % t-interval, how many pairs
    are higher, and the verdict the interval allows (above zero, below zero, or neither)."""
    n, m = len(diffs), mean(diffs)
    half = T_975[min(n - 1, len(T_975)) - 1] * stdev(diffs) / math.sqrt(n)
    lo, hi = m - half, m + half
    if lo > 0:
        verdict = "full BMP beats c2s-only on this benchmark"
    elif hi < 0:
        verdict = "full BMP scores below c2s-only on this benchmark"
    else:
        verdict = "neither is shown to be better on this benchmark"
    each = ", ".join(f"{d:+.1f}" for d in diffs)
    return (
        f"seg mIoU (val), full BMP minus c2s-only, paired by seed over {n} seeds: {each}; mean "
        f"{m:+.1f}, 95 % t-interval [{lo:+.1f}, {hi:+.1f}]; {sum(d > 0 for d in diffs)} of {n} "
        f"higher: {verdict}"
    )


def _verdicts(variants: dict[str, Any]) -> list[str]:
    """Plain answers: does full BMP beat c2s-only (paired by seed, with an interval), does the
    c2s-only segmentation branch learn its training seeds (its train mIoU against theirs), and
    what does each mechanism change, paired by seed?"""
    lines = []
    if "c2s" in variants and "full" in variants:
        # The two variants train identically until c2s starts (same SEED: same initialisation,
        # data order and classification warm-up), so runs of one seed form a pair.
        paired = dict(zip(variants["c2s"]["seeds"], variants["c2s"]["values"]["seg_val"]))
        full = zip(variants["full"]["seeds"], variants["full"]["values"]["seg_val"])
        diffs = [f - paired[s] for s, f in full if s in paired]
        if len(diffs) >= 2:
            lines.append(paired_verdict(diffs))
    if "c2s" in variants:
        values = variants["c2s"]["values"]
        fits = [a / b for a, b in zip(values["seg_train"], values["seed_used"]) if b > 0]
        if fits:
            each = ", ".join(f"{100 * f:.0f}%" for f in fits)
            lines.append(
                f"c2s-only segmentation on the training images reaches {100 * mean(fits):.0f}% of "
                f"the mIoU of the PAR seeds it trains on (per seed: {each}; bar: 90%)"
            )
    for column, title in (
        ("seg_val", "seg mIoU (val), one mechanism at a time"),
        ("seed_cam", "CAM seed (train), one mechanism at a time"),
    ):
        line = ladder_line(variants, ["c2s", "s2c", "inter", "full"], column, title)
        if line:
            lines.append(line)
    return lines


def plot(variants: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(variants)
    fig, ax = plt.subplots(figsize=(9, 4))
    width = 0.38
    metrics = (("seg_val", "segmentation mIoU (val)"), ("seed_used", "training seed mIoU (train)"))
    for j, (metric, name) in enumerate(metrics):
        values = [variants[k]["values"][metric] for k in keys]
        m = [mean(v) for v in values]
        s = [stdev(v) if len(v) > 1 and not math.isnan(x) else 0.0 for v, x in zip(values, m)]
        xs = [i + (j - 0.5) * width for i in range(len(keys))]
        for x, v in zip(xs, m):
            if math.isnan(v):  # e.g. no segmentation branch in variant 1
                ax.text(x, 1, "n/a", ha="center", fontsize=7)
        ax.bar(xs, m, width, yerr=s, capsize=3, label=name)
    ax.set_xticks(range(len(keys)), [variants[k]["label"].split(" (")[0] for k in keys], fontsize=8)
    ax.set_ylabel("mIoU (%)")
    n = max(len(v["seeds"]) for v in variants.values())
    ax.set_title(f"BMP ablation on the synthetic dataset (mean ± std over {n} seeds)")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
