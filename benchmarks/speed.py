#!/usr/bin/env python
"""Speed and memory of BMP with MiT-B1: training step, inference, and growth with input size.

Everything is measured in one run, and every optimised number is put next to a straightforward
version of the same computation (``naive_reference.py``: per-image loops, one forward pass per
flip and scale, PAR over a stacked ``(C, 48, H, W)`` tensor) timed in the same process, so the
gain is a ratio that machine noise mostly cancels out of. Before timing, the two versions'
pseudo labels are compared pixel by pixel.

    python benchmarks/speed.py                       # CPU (about 10 minutes on 2 cores)
    python benchmarks/speed.py --device cuda --amp   # GPU with float16 autocast
    python benchmarks/speed.py --quick               # fewer sizes and iterations

Writes ``benchmarks/results/speed_<device>.{md,json,png}``. Each configuration runs in a fresh
process, so peak memory (``ru_maxrss``; CUDA: ``max_memory_allocated``) is its own.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from statistics import median
from typing import Any, Callable, Dict, List

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"
PAST_WARMUPS = 1_000_000  # storage iteration past every warm-up: all losses and BSP on
TRAIN_CROPS = (320, 512)
SIDES = (256, 320, 448, 512, 640)
INFER_SIDE = 512


# ----------------------------------------------------------------------------- worker process


def _build(device: str):
    import torch
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    import bmp  # noqa: F401
    from bmp.config import add_bmp_config

    cfg = get_cfg()
    add_bmp_config(cfg)
    cfg.merge_from_file(str(REPO / "configs" / "Base-BMP.yaml"))
    cfg.MODEL.DEVICE = device
    cfg.MODEL.SEM_SEG_HEAD.NORM = "BN"
    torch.manual_seed(0)
    return cfg, build_model(cfg)


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], Any], device, repeats: int, warmup: int = 1) -> List[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return times


def _interleaved(fns: Dict[str, Callable[[], Any]], device, repeats: int) -> Dict[str, float]:
    """Time several versions of a computation alternately (A B A B ...), after one warm-up each.

    Alternating spreads any background load over all versions alike; the fastest repeat of each
    (the least disturbed) is what is compared.
    """
    for fn in fns.values():
        fn()
    times: Dict[str, List[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for key, fn in fns.items():
            times[key] += _timed(fn, device, 1, warmup=0)
    return {k: min(v) for k, v in times.items()}


def _peak_memory(device) -> Dict[str, float]:
    import torch

    out = {"peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}
    if device.type == "cuda":
        out["cuda_peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return out


def worker_train(spec: Dict[str, Any]) -> Dict[str, Any]:
    """One training configuration: batched step split into parts, plus the naive pseudo labels."""
    import torch
    from detectron2.utils.events import EventStorage

    sys.path.insert(0, str(HERE))
    from naive_reference import compare_labels, naive_pseudo_labels
    from train_step import _inputs

    cfg, model = _build(spec["device"])
    model.train()
    model.profile = True
    device = model.device
    amp = spec["amp"] and device.type == "cuda"
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=6e-5)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    gen = torch.Generator().manual_seed(0)
    crop, iters = spec["crop"], spec["iters"]
    batches = [
        _inputs(spec["batch"], crop, cfg.MODEL.BMP.NUM_CLASSES, gen) for _ in range(iters + 1)
    ]
    parts: Dict[str, List[float]] = {"forward": [], "pseudo_labels": [], "loss_backward": []}
    totals: List[float] = []
    with EventStorage(start_iter=PAST_WARMUPS) as storage:
        for i, inputs in enumerate(batches):
            storage.iter = PAST_WARMUPS + i
            _sync(device)
            t0 = time.perf_counter()
            with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
                losses = model(inputs)
            loss = sum(losses.values())
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            _sync(device)
            total = time.perf_counter() - t0
            if i == 0:
                continue  # warm-up (allocator, kernels)
            latest = storage.latest()
            fwd, pl = latest["bmp/time_forward"][0], latest["bmp/time_pseudo_labels"][0]
            parts["forward"].append(fwd)
            parts["pseudo_labels"].append(pl)
            parts["loss_backward"].append(total - fwd - pl)
            totals.append(total)
    result: Dict[str, Any] = {k: median(v) for k, v in parts.items()}
    result["total"] = median(totals)
    result.update(_peak_memory(device))
    if spec.get("naive"):
        # Same batch, same weights, eval mode for both (no dropout), so labels must agree.
        model.eval()
        inputs = [{k: v.to(device) for k, v in d.items()} for d in batches[0]]
        x = torch.stack([d["image"].float() for d in inputs])
        valid = torch.stack([d["valid_mask"] for d in inputs])
        cls = torch.stack([d["cls_label"] for d in inputs]).float()

        def batched(bsp: bool, aff: bool = False) -> torch.Tensor:
            """From scratch, like the naive version: main pass included, nothing reused."""
            xn = model._normalize(x)
            main = model._forward_branches(xn, with_attention=aff)
            active = {"c2s": True, "s2c": False, "aff": aff, "bsp": bsp}
            seg_up = torch.nn.functional.interpolate(main.seg_logits, size=xn.shape[-2:])
            with torch.no_grad():
                return model._pseudo_labels(xn, x, valid, cls, main, seg_up, active)["c2s"]

        with torch.no_grad(), torch.autocast(device.type, dtype=torch.float16, enabled=amp):
            naive = naive_pseudo_labels(model, inputs)
            result["labels_agree_par"] = compare_labels(batched(False), naive["par"])
            result["labels_agree_bsp"] = compare_labels(batched(True), naive["bsp"])
            # The batched pseudo labels in eval mode, for a like-for-like ratio: one call makes
            # the PAR labels (here for the affinity targets) and the BSP labels, as in training.
            t = _interleaved(
                {
                    "pseudo_labels_eval": lambda: batched(True, aff=True),
                    "pseudo_labels_naive": lambda: naive_pseudo_labels(model, inputs),
                },
                device,
                max(2, iters),
            )
        result.update(t)
    return result


def worker_infer(spec: Dict[str, Any]) -> Dict[str, Any]:
    """Inference images/s at one side: single scale, batched MS + flip, naive MS + flip."""
    import torch

    sys.path.insert(0, str(HERE))
    from naive_reference import naive_tta_logits

    cfg, model = _build(spec["device"])
    model.eval()
    device = model.device
    amp = spec["amp"] and device.type == "cuda"
    side, n = spec["side"], spec["images"]
    gen = torch.Generator().manual_seed(0)
    images = [
        torch.randint(0, 256, (3, side, side), generator=gen, dtype=torch.uint8).to(device)
        for _ in range(n)
    ]
    scales, flip = [1.0, 0.5, 0.75], True

    def run(tta: bool) -> None:
        model.test_aug, model.test_scales, model.test_flip = tta, scales, flip
        for img in images:  # one image per call, as the evaluator feeds them
            model([{"image": img}])

    def naive() -> None:
        for img in images:
            naive_tta_logits(model, img, scales, flip)

    result: Dict[str, Any] = {}
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.float16, enabled=amp):
        model.test_aug = True
        a = model([{"image": images[0]}])[0]["sem_seg"].float()
        b = naive_tta_logits(model, images[0], scales, flip).float()
        result["tta_max_abs_diff"] = float((a - b).abs().max())
        t = _interleaved(
            {"single": lambda: run(False), "msflip": lambda: run(True), "msflip_naive": naive},
            device,
            max(2, spec["iters"]),
        )
        result.update({f"{k}_img_s": n / v for k, v in t.items()})
    result.update(_peak_memory(device))
    return result


# ----------------------------------------------------------------------------- driver


def _spawn(kind: str, spec: Dict[str, Any], threads: int) -> Dict[str, Any]:
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    cmd = [sys.executable, __file__, "--worker", kind, json.dumps(spec)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} worker {spec} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _fmt_mem(r: Dict[str, Any]) -> str:
    s = f"{r['peak_rss_gib']:.2f}"
    return s + (f" / {r['cuda_peak_gib']:.2f}" if "cuda_peak_gib" in r else "")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--amp", action="store_true", help="float16 autocast (CUDA only)")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--iters", type=int, default=3, help="timed repeats (median reported)")
    p.add_argument("--threads", type=int, default=0, help="OMP threads per worker (0: torch's)")
    p.add_argument("--quick", action="store_true", help="2 sizes, 1 timed repeat")
    p.add_argument("--out", default=str(RESULTS))
    p.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        kind, spec = args.worker[0], json.loads(args.worker[1])
        fn = worker_train if kind == "train" else worker_infer
        print(json.dumps(fn(spec)))
        return
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is available")
    iters = 1 if args.quick else args.iters
    sides = (256, 512) if args.quick else SIDES
    base = {"device": args.device, "amp": args.amp, "batch": args.batch, "iters": iters}
    tag = args.device + ("_amp" if args.amp and args.device == "cuda" else "")
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else _cpu_name()
    started = time.perf_counter()
    report: Dict[str, Any] = {"device": device_name, "tag": tag, "batch": args.batch}

    print(f"BMP speed, MiT-B1, {device_name}{' + AMP' if 'amp' in tag else ''}", flush=True)
    print(f"\n## Training step (batch {args.batch}, all losses + BSP on), seconds", flush=True)
    head = "| crop | forward | pseudo labels | loss + backward | total "
    head += "| pseudo labels, batched vs naive (eval) | speed-up | labels agree (PAR / BSP) "
    head += "| peak mem GiB |"
    lines = [head, "|" + "---|" * 9]
    print("\n".join(lines), flush=True)
    report["train"] = {}
    for crop in TRAIN_CROPS:
        r = _spawn("train", dict(base, crop=crop, naive=True), args.threads)
        report["train"][crop] = r
        speedup = r["pseudo_labels_naive"] / r["pseudo_labels_eval"]
        row = (
            f"| {crop} | {r['forward']:.2f} | {r['pseudo_labels']:.2f} | {r['loss_backward']:.2f} "
            f"| {r['total']:.2f} | {r['pseudo_labels_eval']:.2f} vs {r['pseudo_labels_naive']:.2f} "
            f"| {speedup:.2f}x "
            f"| {100 * r['labels_agree_par']:.2f}% / {100 * r['labels_agree_bsp']:.2f}% "
            f"| {_fmt_mem(r)} |"
        )
        lines.append(row)
        print(row, flush=True)

    print(f"\n## Inference at {INFER_SIDE}x{INFER_SIDE}, images/s (one image per call)", flush=True)
    inf_lines = [
        "| single scale | MS + flip (batched) | MS + flip (naive) | MS + flip speed-up "
        "| max abs logit diff | peak mem GiB |",
        "|" + "---|" * 6,
    ]
    r = _spawn("infer", dict(base, side=INFER_SIDE, images=4), args.threads)
    report["infer"] = r
    inf_lines.append(
        f"| {r['single_img_s']:.2f} | {r['msflip_img_s']:.2f} | {r['msflip_naive_img_s']:.2f} "
        f"| {r['msflip_img_s'] / r['msflip_naive_img_s']:.2f}x | {r['tta_max_abs_diff']:.1e} "
        f"| {_fmt_mem(r)} |"
    )
    print("\n".join(inf_lines), flush=True)

    print(f"\n## Growth with input side (batch {args.batch})", flush=True)
    sc_lines = [
        "| side | pixels | train step s | pseudo labels s | inference img/s | peak mem GiB |",
        "|" + "---|" * 6,
    ]
    print("\n".join(sc_lines), flush=True)
    report["scaling"] = {}
    for side in sides:
        tr = report["train"].get(side) or _spawn("train", dict(base, crop=side), args.threads)
        inf = _spawn("infer", dict(base, side=side, images=2), args.threads)
        report["scaling"][side] = {"train": tr, "infer": inf}
        row = (
            f"| {side} | {side * side} | {tr['total']:.2f} | {tr['pseudo_labels']:.2f} "
            f"| {inf['single_img_s']:.2f} | {_fmt_mem(tr)} |"
        )
        sc_lines.append(row)
        print(row, flush=True)

    minutes = (time.perf_counter() - started) / 60
    os.makedirs(args.out, exist_ok=True)
    md = [
        f"# BMP speed: MiT-B1 on {device_name}{' + AMP' if 'amp' in tag else ''}",
        "",
        f"`python benchmarks/speed.py{' --device cuda --amp' if 'amp' in tag else ''}` "
        f"({minutes:.1f} min, torch threads {torch.get_num_threads()}). Training parts: medians of "
        f"{iters} steps after one warm-up. Batched vs naive (per-image loops, one forward per "
        "flip and scale, stacked-neighbour PAR; benchmarks/naive_reference.py): same process, "
        "same weights and inputs, eval mode, timed alternately, fastest repeat of each.",
        "",
        f"## Training step (batch {args.batch}), seconds",
        "",
        *lines,
        "",
        f"## Inference at {INFER_SIDE}x{INFER_SIDE}, images/s",
        "",
        *inf_lines,
        "",
        "## Growth with input side",
        "",
        *sc_lines,
        "",
    ]
    (Path(args.out) / f"speed_{tag}.md").write_text("\n".join(md))
    (Path(args.out) / f"speed_{tag}.json").write_text(json.dumps(report, indent=2))
    _plot(report, Path(args.out) / f"speed_{tag}.png")
    print(f"\nwrote {args.out}/speed_{tag}.{{md,json,png}} in {minutes:.1f} min")


def _plot(report: Dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sides = sorted(report["scaling"], key=int)
    px = [int(s) ** 2 / 1e3 for s in sides]
    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    for key, label in (("total", "train step"), ("pseudo_labels", "of which pseudo labels")):
        ax[0].plot(px, [report["scaling"][s]["train"][key] for s in sides], "o-", label=label)
    ax[0].set(xlabel="pixels per image (thousands)", ylabel="seconds / iteration")
    ax[0].set_title(f"training, batch {report['batch']}")
    ax[0].legend()
    ax[1].plot(px, [1 / report["scaling"][s]["infer"]["single_img_s"] for s in sides], "o-")
    ax[1].set(xlabel="pixels per image (thousands)", ylabel="seconds / image")
    ax[1].set_title("inference, single scale")
    for a in ax:
        a.grid(alpha=0.3)
        for s, x in zip(sides, px):
            a.annotate(str(s), (x, a.get_ylim()[0]), fontsize=7, ha="center", va="bottom")
    fig.suptitle(f"BMP MiT-B1 on {report['device']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return f"CPU ({line.split(':', 1)[1].strip()}, {os.cpu_count()} cores)"
    except OSError:
        pass
    return f"CPU ({os.cpu_count()} cores)"


if __name__ == "__main__":
    main()
