#!/usr/bin/env python
"""Does the README's main command reproduce? ``make demo`` on fresh clones, compared.

Clones this repository's HEAD into each folder given (or two temporary ones), runs ``make demo``
there one clone at a time (each does its own set-up, as a new user's would), and compares the
tables they print, digit for digit. A clone that already holds a finished demo is read, not run
again. The report puts the tables beside the seed spread of the same config from the ablation's
full-BMP records (seeds 0-2, 1 thread each), which is what another machine should land within.

    python benchmarks/demo_repro.py                          # two fresh clones in /tmp
    python benchmarks/demo_repro.py --clones /tmp/d1 /tmp/d2 # named folders (reused when done)

Writes ``benchmarks/results/demo.{md,json}``. One demo takes ~17 min on 2 CPU cores; clones run
one after the other, since two at once on two cores slow each other down several-fold.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import mean, stdev

from runs import REPO, RESULTS, mean_std, records_dir, write_report

DEMO_OUTPUT = Path("output") / "default_job"
SPREAD = {  # row of the demo's table -> (dataset, task, metric) of an ablation record
    "segmentation (val)": ("synthetic_wsss_val_sem_seg", "sem_seg", "mIoU"),
    "seed CAM (train, GT labels)": ("synthetic_wsss_train_sem_seg", "seed_cam", "mIoU"),
    "seed PAR (train, GT labels)": ("synthetic_wsss_train_sem_seg", "seed_par", "mIoU"),
    "seed BSP (train, GT labels)": ("synthetic_wsss_train_sem_seg", "seed_bsp", "mIoU"),
    "classification (val)": ("synthetic_wsss_val_sem_seg", "classification", "mAP"),
}


def run_demo(clone: Path) -> tuple[str, float]:
    """The table ``make demo`` wrote in ``clone`` (cloned and run first unless it is there),
    and the minutes the run took (0 when it was already there)."""
    table = clone / DEMO_OUTPUT / "results.md"
    if table.is_file():
        return table.read_text().strip(), 0.0
    if not (clone / ".git").is_dir():
        subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    start = time.perf_counter()
    with open(clone / "demo.log", "w") as log:
        proc = subprocess.run(["make", "demo"], cwd=clone, stdout=log, stderr=subprocess.STDOUT)
    if proc.returncode != 0 or not table.is_file():
        raise RuntimeError(f"make demo failed in {clone} (exit {proc.returncode}); see demo.log")
    return table.read_text().strip(), (time.perf_counter() - start) / 60


def _clone_commit(clone: Path) -> str:
    cmd = ["git", "-C", str(clone), "rev-parse", "--short", "HEAD"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    return proc.stdout.strip() or "unknown"


def seed_spread() -> tuple[list[int], dict[str, list[float]]]:
    """The seeds of the full-BMP ablation records, and each table row's values over them."""
    seeds, values = [], {row: [] for row in SPREAD}
    for path in sorted(records_dir(RESULTS / "ablation_runs").glob("full_seed*.json")):
        record = json.loads(path.read_text())
        seeds.append(record["seed"])
        for row, (dataset, task, metric) in SPREAD.items():
            values[row].append(record["evals"][dataset][task][metric])
    return seeds, values


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--clones", nargs="+", type=Path, help="folders to clone into (default: 2)")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    clones = args.clones or [Path(tempfile.mkdtemp(prefix=f"bmp_demo{i}_")) for i in (1, 2)]
    done = [run_demo(c) for c in clones]
    tables = [t for t, _ in done]
    commits = [_clone_commit(c) for c in clones]
    same = all(t == tables[0] for t in tables)
    seeds, spread = seed_spread()
    names = ", ".join(map(str, seeds))
    lines = [f"| row | seeds {names}, 1 thread (ablation full BMP) |", "|---|---|"]
    lines += [f"| {row} | {mean_std(v)} |" for row, v in spread.items()]
    md = (
        f"# `make demo` on {len(clones)} fresh clones (commits {', '.join(commits)})\n\n"
        f"`python benchmarks/demo_repro.py`. The tables are "
        f"{'identical' if same else 'DIFFERENT'}.\n\n"
        + "\n\n".join(f"Clone {i + 1}:\n\n{t}" for i, t in enumerate(tables))
        + f"\n\nThe same config over {len(seeds)} seeds (mean ± std):\n\n"
        + "\n".join(lines)
        + "\n"
    )
    payload = {
        "command": "python benchmarks/demo_repro.py",
        "spread_seeds": seeds,
        "commits": commits,
        "identical": same,
        "tables": tables,
        "minutes": [round(m, 1) for _, m in done],  # 0: read from a clone that had finished
        "spread": {
            row: {"values": v, "mean": mean(v), "std": stdev(v) if len(v) > 1 else 0.0}
            for row, v in spread.items()
            if v
        },
    }
    write_report(args.out, "demo", md, payload)
    print(md)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
