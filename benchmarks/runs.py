"""Helpers shared by the quality benchmarks: one training run per subprocess, resumable.

Each run is ``train_net.py`` with config overrides in its own output folder. A folder that already
holds ``model_final.pth`` and the final evaluation of every requested dataset is reused, so a
benchmark that was interrupted continues where it stopped instead of starting over.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from statistics import mean, stdev
from typing import Any, Dict, List, Optional, Sequence

REPO = Path(__file__).resolve().parents[1]

__all__ = ["REPO", "final_eval", "train_and_evaluate", "mean_std", "run_minutes"]


def final_eval(out_dir: Path, dataset: str) -> Optional[Dict[str, Any]]:
    """The last evaluation of ``dataset`` a finished run wrote, or None."""
    files = sorted(Path(out_dir).glob(f"eval_{dataset}_iter*.json"))
    if not files or not (Path(out_dir) / "model_final.pth").exists():
        return None
    return json.loads(files[-1].read_text())


def train_and_evaluate(
    config: Path,
    out_dir: Path,
    datasets: Sequence[str],
    opts: List[str],
    threads: int,
    label: str,
) -> Dict[str, Dict[str, Any]]:
    """Train (unless finished already) and return ``{dataset: final evaluation results}``."""
    results = {d: final_eval(out_dir, d) for d in datasets}
    if any(r is None for r in results.values()):
        cmd = [sys.executable, str(REPO / "train_net.py"), "--config-file", str(config)]
        cmd += list(opts) + ["OUTPUT_DIR", str(out_dir)]
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        out_dir.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        with open(out_dir / "stdout.log", "w") as log:
            proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        if proc.returncode != 0:
            raise RuntimeError(f"{label} failed (exit {proc.returncode}); see {out_dir}/stdout.log")
        minutes = (time.perf_counter() - start) / 60
        print(f"  {label}: trained and evaluated in {minutes:.1f} min", flush=True)
        results = {d: final_eval(out_dir, d) for d in datasets}
        missing = [d for d, r in results.items() if r is None]
        if missing:
            raise RuntimeError(f"{label} finished without evaluating {missing}: {out_dir}")
    return results  # type: ignore[return-value]


def mean_std(values: Sequence[float]) -> str:
    """``"m ± s"`` over seeds, or just the value for a single run; ``"n/a"`` if any is missing.

    A NaN marks a metric a run does not have (e.g. no trained segmentation branch): averaging it
    with real values would hide that.
    """
    if any(math.isnan(v) for v in values):
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{mean(values):.1f} ± {stdev(values):.1f}"


def run_minutes(out_dir: Path) -> float:
    """Wall-clock minutes of a run, from the first and last timestamps of its ``log.txt``."""
    stamps = re.findall(
        r"^\[(\d\d/\d\d \d\d:\d\d:\d\d)\]", (Path(out_dir) / "log.txt").read_text(), re.M
    )
    if len(stamps) < 2:
        return 0.0
    first, last = (datetime.strptime(s, "%m/%d %H:%M:%S") for s in (stamps[0], stamps[-1]))
    return (last - first).total_seconds() / 60
