#!/usr/bin/env python
"""Our training step against the authors', on this machine: seconds per step and peak memory.

Absolute CPU times do not travel between machines; a ratio measured side by side does. For each
crop, one process builds both models with the same weights (their MiT-B1 BMP, random from seed
0, converted into ours) and one batch of 2 (smooth random images, two classes each, a padded
strip), then runs their ``train_voc.py`` loop body (through ``tools/official_harness.py``: their
code imported from ``--official``, never copied) and our ``SimpleTrainer.run_step`` (what
``BMPTrainer`` builds from ``configs/voc/bmp_mit_b1_512_20k.yaml``) alternately, at iteration
5000 (every loss and BSP on), with dropout and drop-path as each trains. Reported: the median of
``--iters`` steps after one warm-up each. Peak memory (``ru_maxrss``) comes from two more
processes per crop, one per side, each building its model and running two steps.

    python benchmarks/speed_vs_authors.py --official /path/to/BMP-WSSS
    python benchmarks/speed_vs_authors.py --official /path/to/BMP-WSSS --crops 320 --iters 3

Writes ``benchmarks/results/speed_vs_authors.{md,json}``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from statistics import median
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "tools"))
sys.path.insert(0, str(HERE))
from speed import cpu_name  # noqa: E402

CONFIG = REPO / "configs" / "voc" / "bmp_mit_b1_512_20k.yaml"
ITERATION = 5000
CLASSES = ((3,), (7, 15))


def _crops(crop: int, batch: int = 2):
    """uint8 RGB crops, their real-pixel boxes and class ids (1..20)."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    gen = torch.Generator().manual_seed(0)
    crops, boxes = [], []
    for _ in range(batch):
        low = torch.rand(1, 3, crop // 16, crop // 16, generator=gen) * 255
        image = F.interpolate(low, size=(crop, crop), mode="bilinear", align_corners=False)[0]
        image = image.round().byte().permute(1, 2, 0).numpy().copy()
        right = crop - crop // 8
        image[:, right:] = 0
        crops.append(np.ascontiguousarray(image))
        boxes.append([0, crop, 0, right])
    return crops, boxes, [list(CLASSES[i % len(CLASSES)]) for i in range(batch)]


def _sides(official_path: str, crop: int, which: str):
    """Step functions of the chosen sides on one batch, sharing the weights."""
    from compare_training_step import _our_batch, _their_batch, build_our_training, set_iteration
    from detectron2.engine import SimpleTrainer
    from detectron2.utils.events import EventStorage
    from official_harness import TheirTrainingLoop, build_their_model, import_official

    official = import_official(Path(official_path))
    theirs = build_their_model(official, seed=0).train()
    crops, boxes, labels = _crops(crop)
    steps = {}
    if which in ("both", "ours"):
        # Dropout and drop-path as ours trains (the VOC config's), not the comparison's zeros.
        opts = ["MODEL.MIT.DROP_PATH_RATE", "0.1", "MODEL.SEM_SEG_HEAD.DROPOUT", "0.1"]
        _, model, optimizer, scheduler = build_our_training(theirs, str(CONFIG), opts, True)
        set_iteration(scheduler, ITERATION)
        trainer = SimpleTrainer(
            model, itertools.repeat(_our_batch(crops, boxes, labels)), optimizer
        )
        trainer.iter = ITERATION
        storage = EventStorage(ITERATION)

        def ours() -> None:
            with storage:
                trainer.storage = storage
                trainer.run_step()

        steps["ours"] = ours
    if which in ("both", "theirs"):
        loop = TheirTrainingLoop(official, theirs, ["--crop_size", str(crop)])
        batch = _their_batch(official, crops, boxes, labels)
        steps["theirs"] = lambda: loop.step(ITERATION, *batch)
    return steps


def worker(official: str, crop: int, which: str, iters: int) -> dict[str, Any]:
    import torch

    steps = _sides(official, crop, which)
    times: dict[str, list[float]] = {k: [] for k in steps}
    for fn in steps.values():  # warm-up: allocator, caches
        fn()
    for _ in range(iters):
        for name, fn in steps.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    out: dict[str, Any] = {f"{k}_s": median(v) for k, v in times.items()}
    out.update({f"{k}_times": v for k, v in times.items()})
    out["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    out["threads"] = torch.get_num_threads()
    return out


def _spawn(args, crop: int, which: str, iters: int) -> dict[str, Any]:
    env = dict(os.environ)
    if args.threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(args.threads)
    spec = json.dumps({"official": args.official, "crop": crop, "which": which, "iters": iters})
    proc = subprocess.run([sys.executable, __file__, "--worker", spec], capture_output=True,
                          text=True, env=env)  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(f"error: the {which} worker at crop {crop} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--official", help="the authors' BMP-WSSS checkout")
    p.add_argument("--crops", type=int, nargs="+", default=[320, 512])
    p.add_argument("--iters", type=int, default=3, help="timed steps per side (median)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--out", default=str(HERE / "results"))
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        spec = json.loads(args.worker)
        print(json.dumps(worker(spec["official"], spec["crop"], spec["which"], spec["iters"])))
        return
    if not args.official:
        p.error("--official PATH (a BMP-WSSS checkout) is required")
    started = time.perf_counter()
    rows = []
    for crop in args.crops:
        timed = _spawn(args, crop, "both", args.iters)
        mem = {side: _spawn(args, crop, side, 1)["peak_rss_gib"] for side in ("theirs", "ours")}
        rows.append({"crop": crop, **timed, "peak_theirs_gib": mem["theirs"],
                     "peak_ours_gib": mem["ours"]})  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    minutes = (time.perf_counter() - started) / 60
    cpu, threads = cpu_name(), rows[0]["threads"]
    command = "python benchmarks/speed_vs_authors.py --official /path/to/BMP-WSSS " + " ".join(
        a for a in sys.argv[1:] if a != args.official and not a.startswith("--official")
    )
    plural = "s" if threads != 1 else ""
    lines = [
        "# Our training step against the authors', side by side",
        "",
        f"`{command.strip()}` ({minutes:.1f} min) on {cpu}, {threads} thread{plural}; BMP-WSSS at "
        f"36bbfee; MiT-B1, batch 2, iteration {ITERATION} (every loss and BSP on); median of "
        f"{args.iters} steps after one warm-up, the two sides alternating in one process; peak "
        "memory (ru_maxrss) from one process per side.",
        "",
        "| crop | theirs s/step | ours s/step | ours / theirs | peak GiB theirs | peak GiB ours |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['crop']} | {r['theirs_s']:.2f} | {r['ours_s']:.2f} | "
            f"{r['ours_s'] / r['theirs_s']:.2f} | {r['peak_theirs_gib']:.2f} | "
            f"{r['peak_ours_gib']:.2f} |"
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "speed_vs_authors.md").write_text("\n".join(lines) + "\n")
    (out / "speed_vs_authors.json").write_text(
        json.dumps({"cpu": cpu, "threads": threads, "command": command, "rows": rows}, indent=2)
        + "\n"
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
