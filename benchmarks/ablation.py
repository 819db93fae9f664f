#!/usr/bin/env python
"""Does each part of BMP pull its weight? The paper's ablation on the embedded synthetic dataset.

Five variants, each adding one mechanism to the previous, trained with the same budget
(``configs/synthetic/bmp_mit_tiny.yaml``) and several seeds:

1. classification branch alone (the seeds are its CAMs),
2. + c2s: PAR-refined CAM labels supervise the segmentation branch (with the affinity loss: the
   classic end-to-end baseline),
3. + s2c: the segmentation branch's confident labels supervise the CAMs (bidirectional),
4. + interaction: CAM confidence re-weights the decoder's features,
5. + background-aware propagation (BSP): full BMP.

Reports segmentation mIoU on val and seed mIoU on train (with ground-truth image labels, as the
field reports seeds) as mean +- std over seeds, and writes ``benchmarks/results/ablation.{md,json,
png}``. Each run's output folder is kept; a rerun skips finished runs, so an interrupted
benchmark continues where it stopped.

    python benchmarks/ablation.py                  # 5 variants x 3 seeds, 2 runs at a time
    python benchmarks/ablation.py --seeds 0 --variants cls full   # a quick look
    python benchmarks/ablation.py --variants full --seeds 0 1 --tag s2c1200 \
        MODEL.BMP.S2C.START_ITER 1200                              # a diagnostic variant

``--tag`` keeps a variant run with extra overrides apart from the plain ones: its runs are
``<variant>_<tag>_seed<N>`` and its results ``ablation_<tag>.{md,json,png}``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from statistics import mean, stdev
from typing import Any, Dict, List, Optional, Tuple

from runs import REPO, mean_std, run_minutes, train_and_evaluate

RESULTS = REPO / "benchmarks" / "results"
CONFIG = REPO / "configs" / "synthetic" / "bmp_mit_tiny.yaml"
VAL = "synthetic_wsss_val_sem_seg"
TRAIN = "synthetic_wsss_train_sem_seg"

# (key, label, overrides): every variant sets every switch, so none depends on config defaults.
_OFF = {"C2S": False, "S2C": False, "INTERACTION": False, "BSP": False, "AFFINITY": False}
_STEPS = [
    ("cls", "1. classification only (CAM)", {}),
    ("c2s", "2. + c2s (PAR labels, affinity)", {"C2S": True, "AFFINITY": True}),
    ("s2c", "3. + s2c (bidirectional)", {"S2C": True}),
    ("inter", "4. + interaction", {"INTERACTION": True}),
    ("full", "5. + BSP = full BMP", {"BSP": True}),
]
# The seed each variant trains its segmentation branch with (variant 1 has none: its CAMs).
_TRAINING_SEED = {"cls": "cam", "c2s": "par", "s2c": "par", "inter": "par", "full": "bsp"}


def variants() -> List[Tuple[str, str, Dict[str, bool]]]:
    out, switches = [], dict(_OFF)
    for key, label, step in _STEPS:
        switches = {**switches, **step}
        out.append((key, label, dict(switches)))
    return out


def overrides(switches: Dict[str, bool]) -> List[str]:
    keys = {
        "C2S": "MODEL.BMP.C2S.ENABLED",
        "S2C": "MODEL.BMP.S2C.ENABLED",
        "INTERACTION": "MODEL.BMP.INTERACTION.ENABLED",
        "BSP": "MODEL.BMP.BSP.ENABLED",
        "AFFINITY": "MODEL.BMP.AFFINITY.ENABLED",
    }
    out: List[str] = []
    for name, key in keys.items():
        out += [key, str(switches[name])]
    return out


def run_dir(out_root: Path, key: str, seed: int, tag: str = "") -> Path:
    return out_root / (f"{key}_{tag}_seed{seed}" if tag else f"{key}_seed{seed}")


def run_one(
    key: str,
    switches: Dict[str, bool],
    seed: int,
    out_root: Path,
    threads: int,
    opts: List[str],
    tag: str = "",
) -> Dict[str, Any]:
    res = train_and_evaluate(
        CONFIG,
        run_dir(out_root, key, seed, tag),
        (VAL, TRAIN),
        overrides(switches) + ["SEED", str(seed)] + opts,
        threads,
        f"{key} seed {seed}",
    )
    val, train = res[VAL], res[TRAIN]
    return {
        # Variant 1 trains no segmentation branch: its decoder output is not a result.
        "seg_val": float("nan") if key == "cls" else val["sem_seg"]["mIoU"],
        "seg_train": train["sem_seg"]["mIoU"],
        "seed_cam": train["seed_cam"]["mIoU"],
        "seed_par": train["seed_par"]["mIoU"],
        "seed_bsp": train["seed_bsp"]["mIoU"],
        "seed_used": train[f"seed_{_TRAINING_SEED[key]}"]["mIoU"],
        "cls_map": val.get("classification", {}).get("mAP", float("nan")),
    }


def summarise(runs: Dict[str, List[Dict[str, Any]]], labels: Dict[str, str]) -> str:
    cols = [
        ("seg_val", "seg mIoU (val)"),
        ("seed_used", "training seed mIoU (train)"),
        ("seed_cam", "CAM seed"),
        ("seed_par", "PAR seed"),
        ("seed_bsp", "BSP seed"),
        ("cls_map", "cls mAP (val)"),
    ]
    lines = ["| variant | " + " | ".join(c[1] for c in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for key, rs in runs.items():
        cells = [mean_std([r[c] for r in rs]) for c, _ in cols]
        lines.append(f"| {labels[key]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(runs: Dict[str, List[Dict[str, Any]]], labels: Dict[str, str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(runs)
    fig, ax = plt.subplots(figsize=(9, 4))
    width = 0.38
    for j, (metric, name) in enumerate(
        (("seg_val", "segmentation mIoU (val)"), ("seed_used", "training seed mIoU (train)"))
    ):
        m = [mean(r[metric] for r in runs[k]) for k in keys]
        s = [
            stdev([r[metric] for r in runs[k]]) if len(runs[k]) > 1 and not math.isnan(v) else 0.0
            for k, v in zip(keys, m)
        ]
        xs = [i + (j - 0.5) * width for i in range(len(keys))]
        for x, v in zip(xs, m):
            if math.isnan(v):  # no segmentation branch in variant 1
                ax.text(x, 1, "n/a", ha="center", fontsize=7)
        ax.bar(xs, m, width, yerr=s, capsize=3, label=name)
    ax.set_xticks(range(len(keys)), [labels[k].split(" (")[0] for k in keys], fontsize=8)
    ax.set_ylabel("mIoU (%)")
    n = max(len(v) for v in runs.values())
    ax.set_title(f"BMP ablation on the synthetic dataset (mean ± std over {n} seeds)")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: Optional[List[str]] = None) -> int:
    all_variants = variants()
    keys = [k for k, _, _ in all_variants]
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--variants", nargs="+", default=keys, choices=keys)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--jobs", type=int, default=2, help="runs at a time (threads split evenly)")
    p.add_argument("--out", default=str(RESULTS))
    p.add_argument("--tag", default="", help="name for runs with extra overrides (see above)")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides for every run")
    args = p.parse_args(argv)
    if bool(args.tag) != bool(args.opts):
        p.error("overrides need a --tag (and a --tag needs overrides): runs are reused by name")
    out = Path(args.out)
    run_root = out / "ablation_runs"
    threads = max(1, (os.cpu_count() or 2) // args.jobs)
    labels = {k: label for k, label, _ in all_variants}
    chosen = [(k, sw) for k, _, sw in all_variants if k in args.variants]
    jobs = [(k, sw, s) for s in args.seeds for k, sw in chosen]
    print(
        f"{len(jobs)} runs ({len(chosen)} variants x {len(args.seeds)} seeds), "
        f"{args.jobs} at a time with {threads} thread(s) each",
        flush=True,
    )
    with ThreadPoolExecutor(args.jobs) as pool:
        futures = {
            (k, s): pool.submit(run_one, k, sw, s, run_root, threads, list(args.opts), args.tag)
            for k, sw, s in jobs
        }
        results = {ks: f.result() for ks, f in futures.items()}
    runs = {k: [results[(k, s)] for s in args.seeds] for k, _ in chosen}
    table = summarise(runs, labels)
    # Training + evaluation time of the runs themselves (reruns reuse finished runs).
    minutes = sum(run_minutes(run_dir(run_root, k, s, args.tag)) for k, _, s in jobs) / args.jobs
    cmd = "python benchmarks/ablation.py" + (" " + " ".join(sys.argv[1:]) if argv is None else "")
    md = (
        f"# BMP ablation on the embedded synthetic dataset\n\n`{cmd.strip()}` "
        f"({minutes:.0f} min here). Config `configs/synthetic/bmp_mit_tiny.yaml`; "
        f"seeds {args.seeds}; mean ± std over seeds. Segmentation mIoU on val (200 images); seed "
        "mIoU on train (1200 images) with ground-truth image labels. The training seed is the one "
        "each variant trains its segmentation branch with (CAM for variant 1, PAR for 2-4, BSP for "
        "5); seed pixels left uncertain count as misses.\n\n" + table + "\n"
    )
    out.mkdir(parents=True, exist_ok=True)
    stem = f"ablation_{args.tag}" if args.tag else "ablation"
    if args.opts:
        md += f"\nExtra overrides for every run: `{' '.join(args.opts)}`.\n"
    (out / f"{stem}.md").write_text(md)
    (out / f"{stem}.json").write_text(
        json.dumps({"runs": runs, "labels": labels, "overrides": list(args.opts)}, indent=2)
    )
    if runs:
        plot(runs, labels, out / f"{stem}.png")
    print("\n" + table)
    if "c2s" in runs and "full" in runs and len(args.seeds) > 1:
        gain = mean(r["seg_val"] for r in runs["full"]) - mean(r["seg_val"] for r in runs["c2s"])
        spread = max(stdev([r["seg_val"] for r in runs[k]]) for k in ("c2s", "full"))
        verdict = "beats" if gain > spread else "does NOT clearly beat"
        print(f"\nfull BMP {verdict} variant 2 on seg mIoU: {gain:+.1f} (seed spread {spread:.1f})")
    print(f"\nwrote {out}/{stem}.{{md,json,png}} ({minutes:.0f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
