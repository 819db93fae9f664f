#!/usr/bin/env python
"""What mixed precision buys and whether it moves labels: fp32 against autocast, side by side.

For each crop, one model (float32 weights) and one batch; the training step (forward, pseudo
labels, losses, backward, optimizer step, past every warm-up) runs in float32 and under autocast
of each precision, alternately, and the median of ``--iters`` steps after a warm-up is reported
with the 20k-iteration estimate. The labels each precision trains on (c2s, s2c, affinity) are
compared with the float32 step's on the same weights and batch. On CUDA also: peak memory per
precision, and the host syncs of one step counted by ``torch.cuda.set_sync_debug_mode``.

    python benchmarks/precision.py                                   # CPU: float32 vs bfloat16
    python benchmarks/precision.py --device cuda                     # float32, float16, bfloat16
    python benchmarks/precision.py --weights model_final.pth --config configs/synthetic/...

Label agreement means little on random weights (near-flat CAMs put most pixels near a threshold
or nowhere): give ``--weights`` of a trained model. Writes
``benchmarks/results/precision_<device>.{md,json}``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path
from statistics import median
from typing import Any

import torch
from speed import cpu_name, timing_inputs

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PAST_WARMUPS = 1_000_000
DTYPES = {"float32": None, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _cpu_bf16() -> list[str]:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    return sorted({f for f in ("avx512_bf16", "amx_bf16") if f in flags})


def _build(args: argparse.Namespace):
    from detectron2.modeling import build_model

    from bmp.config import load_config
    from bmp.engine.checkpoint import AtomicCheckpointer

    opts = ["MODEL.DEVICE", args.device, "MODEL.SEM_SEG_HEAD.NORM", "BN", "MODEL.WEIGHTS", ""]
    cfg = load_config(str(REPO / args.config), opts + list(args.opts))
    torch.manual_seed(0)
    model = build_model(cfg).train()
    if args.weights:
        unsafe = cfg.MODEL.WEIGHTS_UNSAFE_UNPICKLE  # the file is read as data unless set
        AtomicCheckpointer(model, unsafe_unpickle=unsafe).load(args.weights)
    return cfg, model


class _Step:
    """One training step of ``model`` in one precision, with the labels it trained on."""

    def __init__(self, model, dtype: torch.dtype | None):
        self.model, self.dtype = model, dtype
        self.opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.0)
        scaled = dtype == torch.float16
        self.scaler = torch.amp.GradScaler(model.device.type) if scaled else None
        self.targets: dict = {}

    def __call__(self, inputs: list[dict]) -> None:
        from detectron2.utils.events import EventStorage

        labeller = self.model.pseudo_labeller
        make = type(labeller).training_targets

        def capture(*a, **k):
            self.targets = make(labeller, *a, **k)
            return self.targets

        labeller.training_targets = capture
        try:
            with (
                EventStorage(PAST_WARMUPS),
                torch.autocast(
                    self.model.device.type,
                    dtype=self.dtype or torch.float32,
                    enabled=bool(self.dtype),
                ),
            ):
                losses = self.model(inputs)
            total = sum(losses.values())
            self.opt.zero_grad(set_to_none=True)
            if self.scaler is None:
                total.backward()
                self.opt.step()  # LR 0: the weights stay those every precision starts from
            else:
                self.scaler.scale(total).backward()
                self.scaler.step(self.opt)
                self.scaler.update()
        finally:
            del labeller.training_targets
        if not all(torch.isfinite(v) for v in losses.values()):
            raise RuntimeError(f"non-finite loss under {self.dtype}: {losses}")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _agreement(a: dict, b: dict) -> dict[str, float]:
    return {k: float((a[k] == b[k]).float().mean() * 100) for k in a if k in b}


def _count_syncs(step: _Step, inputs: list[dict]) -> int:
    """Host syncs of one step, as CUDA reports them (detectron2's metric writer excluded: this
    step does not run it)."""
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            step(inputs)
            _sync(step.model.device)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    return sum("synchroniz" in str(w.message) for w in caught)


def measure_crop(args, cfg, model, crop: int) -> dict[str, Any]:
    device = model.device
    gen = torch.Generator().manual_seed(0)
    made = timing_inputs(args.batch, crop, cfg.MODEL.BMP.NUM_CLASSES, gen)
    inputs = [{k: v.to(device) for k, v in d.items()} for d in made]
    steps = {name: _Step(model, DTYPES[name]) for name in args.precisions}
    times: dict[str, list[float]] = {name: [] for name in steps}
    peak: dict[str, float] = {}
    for name, step in steps.items():  # warm-up (allocator, kernels), and peak memory
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        step(inputs)
        _sync(device)
        if device.type == "cuda":
            peak[name] = torch.cuda.max_memory_allocated(device) / 2**30
    for _ in range(args.iters):
        for name, step in steps.items():
            _sync(device)
            t0 = time.perf_counter()
            step(inputs)
            _sync(device)
            times[name].append(time.perf_counter() - t0)
    reference = steps[args.precisions[0]].targets
    row: dict[str, Any] = {"crop": crop, "max_iter": cfg.SOLVER.MAX_ITER}
    for name, step in steps.items():
        row[name] = {"step_s": median(times[name]), "times": times[name]}
        row[name]["labels_agree"] = _agreement(reference, step.targets)
        if name in peak:
            row[name]["peak_gib"] = peak[name]
        if device.type == "cuda":
            row[name]["syncs"] = _count_syncs(step, inputs)
    return row


def _markdown(args, rows: list[dict], device_name: str, minutes: float) -> str:
    head = ["crop"] + [f"{p} s/it" for p in args.precisions]
    head += [f"speed-up of {p} ({args.precisions[0]} time / {p} time)" for p in args.precisions[1:]]
    head += [f"{p} labels = {args.precisions[0]} (c2s / s2c / aff)" for p in args.precisions[1:]]
    head += [f"{p}: 20k iterations (h)" for p in args.precisions]
    cuda = args.device == "cuda"
    if cuda:
        head += [f"{p} peak GiB" for p in args.precisions] + [f"{p} syncs" for p in args.precisions]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    base = args.precisions[0]
    for r in rows:
        cells = [str(r["crop"])] + [f"{r[p]['step_s']:.3f}" for p in args.precisions]
        cells += [f"{r[base]['step_s'] / r[p]['step_s']:.2f}x" for p in args.precisions[1:]]
        for p in args.precisions[1:]:
            agree = r[p]["labels_agree"]
            cells.append(" / ".join(f"{agree.get(k, float('nan')):.2f}%" for k in
                                    ("c2s", "s2c", "aff")))  # fmt: skip
        cells += [f"{r[p]['step_s'] * 20000 / 3600:.1f}" for p in args.precisions]
        if cuda:
            cells += [f"{r[p]['peak_gib']:.2f}" for p in args.precisions]
            cells += [str(r[p]["syncs"]) for p in args.precisions]
        lines.append("| " + " | ".join(cells) + " |")
    weights = args.weights or "random weights (label agreement says little on them)"
    where = device_name
    if not cuda:
        flags = ", ".join(_cpu_bf16()) or "none"
        where += f", {torch.get_num_threads()} threads, bf16 flags: {flags}"
    intro = (
        f"`python benchmarks/precision.py {' '.join(sys.argv[1:])}` ({minutes:.1f} min) on "
        f"{where}; torch {torch.__version__}; config {args.config}; {weights}; batch "
        f"{args.batch}; median of {args.iters} steps after one warm-up each, precisions "
        "alternating."
    )
    return "\n".join([f"# Mixed precision: {device_name}", "", intro, "", *lines, ""])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--precisions", nargs="+", choices=list(DTYPES), default=None)
    p.add_argument("--config", default="configs/Base-BMP.yaml")
    p.add_argument("--weights", default="", help="a trained checkpoint (for label agreement)")
    p.add_argument("--crops", type=int, nargs="+", default=[320, 512])
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--out", default=str(HERE / "results"))
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides")
    args = p.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is available")
    if args.precisions is None:
        cuda = args.device == "cuda"
        args.precisions = ["float32", "float16", "bfloat16"] if cuda else ["float32", "bfloat16"]
    if args.device == "cpu" and "float16" in args.precisions:
        p.error("float16 autocast needs CUDA (on CPU, compare float32 with bfloat16)")
    if args.precisions[0] != "float32":
        p.error("--precisions must start with float32, the reference")
    import bmp  # noqa: F401  (registers BMP's models)

    started = time.perf_counter()
    cfg, model = _build(args)
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else cpu_name()
    print(f"{device_name}: {args.precisions} at crops {args.crops}", flush=True)
    rows = []
    for crop in args.crops:
        rows.append(measure_crop(args, cfg, model, crop))
        print(json.dumps({k: v for k, v in rows[-1].items()}, default=str)[:400], flush=True)
    minutes = (time.perf_counter() - started) / 60
    md = _markdown(args, rows, device_name, minutes)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"precision_{args.device}.md").write_text(md)
    payload = {"device": device_name, "command": " ".join(sys.argv), "rows": rows}
    (out / f"precision_{args.device}.json").write_text(json.dumps(payload, indent=2) + "\n")
    print(md)


if __name__ == "__main__":
    main()
