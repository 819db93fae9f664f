#!/usr/bin/env python
"""Speed and memory of BMP: the training step split into its parts, inference, and growth.

The training-step split comes from the ``torch.profiler.record_function`` ranges the model emits
(``bmp.forward``, ``bmp.pseudo_labels`` with one ``bmp.multiscale.scale_<s>`` per pseudo-label
scale, ``bmp.pseudo_labels.{par,bsp,aff}``, ``bmp.losses``) plus two ranges of this script around
the whole step and around backward + optimizer step, so the numbers are the model's own
boundaries, not clocks placed from outside. The profiler itself costs a few per cent of a step
on CPU (MiT-B1, crop 160, 2 cores: 0.69 s plain, 0.71-0.75 s profiled).

Every optimised number is put next to a straightforward version of the same computation
(``naive_reference.py``: per-image loops, one forward pass per flip and scale, PAR over a stacked
``(C, 48, H, W)`` tensor) timed in the same process, so the gain is a ratio that machine noise
mostly cancels out of. Before timing, the two versions' pseudo labels are compared pixel by pixel.

    python benchmarks/speed.py                       # CPU, MiT-B1 (about 10 minutes on 2 cores)
    python benchmarks/speed.py --device cuda --amp   # GPU with float16 autocast
    python benchmarks/speed.py --quick               # one crop, two sides, one timed repeat
    python benchmarks/speed.py --config configs/synthetic/bmp_mit_tiny.yaml --crops 64 \
        --sides 64 --quick --out /tmp/speed          # a smoke test in seconds

Writes ``<out>/speed_<device>.{md,json,png}``. Each configuration runs in a fresh process, so peak
memory (``ru_maxrss``; CUDA: ``max_memory_allocated``) is its own.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from statistics import median
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"
DEFAULT_CONFIG = "configs/Base-BMP.yaml"
PAST_WARMUPS = 1_000_000  # storage iteration past every warm-up: all losses and BSP on
TRAIN_CROPS = (320, 512)
SIDES = (256, 320, 448, 512, 640)
INFER_SIDE = 512
STEP, BACKWARD = "speed.step", "speed.backward_and_step"
PARTS = ("bmp.forward", "bmp.pseudo_labels", "bmp.losses", BACKWARD, STEP)
PSEUDO_PARTS = ("bmp.pseudo_labels.par", "bmp.pseudo_labels.bsp", "bmp.pseudo_labels.aff")


def scale_range(scale: float) -> str:
    """The model's profiler range of one pseudo-label scale."""
    return f"bmp.multiscale.scale_{scale:g}"


# ----------------------------------------------------------------------------- worker process


# The cheaper training step the authors' code does not take (see MODEL.BMP.PSEUDO in keys.py):
# scale 1.0 reuses the training pass, and the multi-scale passes leave BatchNorm statistics alone.
DEVIATIONS = [
    "MODEL.BMP.PSEUDO.REUSE_MAIN_PASS",
    "True",
    "MODEL.BMP.PSEUDO.FREEZE_BN_STATS",
    "True",
]


def _build(spec: dict[str, Any], training: bool, extra_opts: list[str] = ()):
    """The config, the model in train or eval mode, and whether float16 autocast applies."""
    import torch
    from detectron2.modeling import build_model

    from bmp.config import load_config

    opts = ["MODEL.DEVICE", spec["device"], "MODEL.SEM_SEG_HEAD.NORM", "BN"]
    opts += ["TEST.BMP.EXTRA_OUTPUTS", "False"]  # plain predictions: no CAMs and seeds
    opts += list(extra_opts)
    cfg = load_config(str(REPO / spec["config"]), opts)
    torch.manual_seed(0)
    model = build_model(cfg).train(training)
    return cfg, model, spec["amp"] and model.device.type == "cuda"


def timing_inputs(batch: int, crop: int, num_classes: int, generator) -> list[dict]:
    """Smooth random images (blobs, not pixel noise), a padded strip and two classes each."""
    import torch
    import torch.nn.functional as F

    inputs = []
    for i in range(batch):
        low = torch.rand(1, 3, max(1, crop // 16), max(1, crop // 16), generator=generator) * 255
        image = F.interpolate(low, size=(crop, crop), mode="bilinear", align_corners=False)[0]
        valid = torch.ones(crop, crop, dtype=torch.bool)
        valid[:, crop - crop // 8 :] = False
        label = torch.zeros(num_classes)
        label[[i % num_classes, (i + 5) % num_classes]] = 1.0
        inputs.append(
            {"image": image.round().to(torch.uint8), "cls_label": label, "valid_mask": valid}
        )
    return inputs


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _interleaved(fns: dict[str, Callable[[], Any]], device, repeats: int) -> dict[str, float]:
    """Time several versions of a computation alternately (A B A B ...), after one warm-up each.

    Alternating spreads any background load over all versions alike; the fastest repeat of each
    (the least disturbed) is what is compared.
    """
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for key, fn in fns.items():
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            times[key].append(time.perf_counter() - t0)
    return {k: min(v) for k, v in times.items()}


def _peak_memory(device) -> dict[str, float]:
    import torch

    out = {"peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}
    if device.type == "cuda":
        out["cuda_peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return out


def _range_seconds(prof, names: set[str], device) -> tuple[dict[str, list[float]], str]:
    """Durations of the named profiler ranges, in order of occurrence, and the clock used.

    On CUDA the ranges' GPU annotations are used when the profiler recorded them (the CPU side
    of a range only measures kernel launches); otherwise the CPU ranges.
    """
    from torch.autograd import DeviceType

    events = [e for e in prof.events() if e.name in names]
    clock = "CPU ranges"
    if device.type == "cuda":
        gpu = [e for e in events if e.device_type == DeviceType.CUDA]
        if {e.name for e in gpu} >= names - {STEP, BACKWARD}:
            events = gpu + [e for e in events if e.name in (STEP, BACKWARD)]
            clock = "GPU annotations"
    out: dict[str, list[float]] = {n: [] for n in names}
    for e in sorted(events, key=lambda e: e.time_range.start):
        out[e.name].append(e.time_range.elapsed_us() / 1e6)
    return out, clock


def _profiled_steps(model, batches: list[list[dict]], amp: bool):
    """Run training steps (the first one unprofiled, as a warm-up) under torch.profiler."""
    import torch
    from detectron2.utils.events import EventStorage
    from torch.profiler import ProfilerActivity, profile, record_function

    device = model.device
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=6e-5)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])

    def step(inputs: list[dict]) -> None:
        with record_function(STEP):
            with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
                losses = model(inputs)
            with record_function(BACKWARD):
                opt.zero_grad(set_to_none=True)
                scaler.scale(sum(losses.values())).backward()
                scaler.step(opt)
                scaler.update()
                _sync(device)
        if not all(torch.isfinite(v) for v in losses.values()):
            raise RuntimeError(f"non-finite loss: { {k: float(v) for k, v in losses.items()} }")

    with EventStorage(start_iter=PAST_WARMUPS) as storage:
        step(batches[0])  # allocator, kernels, caches
        with profile(activities=activities) as prof:
            for i, inputs in enumerate(batches[1:], start=1):
                storage.iter = PAST_WARMUPS + i
                step(inputs)
    return prof


def worker_train(spec: dict[str, Any]) -> dict[str, Any]:
    """One training configuration: the profiled split, plus the naive pseudo labels."""
    import torch

    cfg, model, amp = _build(spec, training=True)
    device = model.device
    gen = torch.Generator().manual_seed(0)
    k = cfg.MODEL.BMP.NUM_CLASSES
    batches = [timing_inputs(spec["batch"], spec["crop"], k, gen) for _ in range(spec["iters"] + 1)]
    prof = _profiled_steps(model, batches, amp)
    scales = [scale_range(s) for s in model.pseudo_labeller.scales]
    names = set(PARTS + PSEUDO_PARTS) | set(scales)
    times, clock = _range_seconds(prof, names, device)
    result: dict[str, Any] = {name: median(v) if v else 0.0 for name, v in times.items()}
    result.update(scales=scales, clock=clock, max_iter=cfg.SOLVER.MAX_ITER, **_peak_memory(device))
    if spec.get("deviations"):
        result.update(_versus_deviations(spec, model, batches[0], amp, max(2, spec["iters"])))
    if spec.get("naive"):
        model.eval()  # same batch and weights for both versions; no dropout, so labels must agree
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.float16, enabled=amp):
            result.update(_versus_naive(model, batches[0], max(2, spec["iters"])))
    return result


def _versus_deviations(spec, model, inputs: list[dict], amp: bool, repeats: int) -> dict:
    """The faithful training step against the one with :data:`DEVIATIONS` on: same weights and
    batch, forward + backward past the warm-ups, timed alternately (fastest repeat of each)."""
    import torch
    from detectron2.utils.events import EventStorage

    _, cheap, _ = _build(spec, training=True, extra_opts=DEVIATIONS)
    cheap.load_state_dict(model.state_dict())
    inputs = [{k: v.to(model.device) for k, v in d.items()} for d in inputs]

    def step(net) -> None:
        with torch.autocast(model.device.type, dtype=torch.float16, enabled=amp):
            losses = net(inputs)
        sum(losses.values()).backward()
        net.zero_grad(set_to_none=True)

    with EventStorage(start_iter=PAST_WARMUPS):
        t = _interleaved({"faithful": lambda: step(model), "cheap": lambda: step(cheap)},
                         model.device, repeats)  # fmt: skip
    return {"step_faithful": t["faithful"], "step_deviations": t["cheap"]}


def _versus_naive(model, inputs: list[dict], repeats: int) -> dict[str, float]:
    """Labels of the batched and the naive pseudo-labeller compared, then both timed."""
    from naive_reference import compare_labels, naive_pseudo_labels

    from bmp.modeling.schedule import Phase

    inputs = [{k: v.to(model.device) for k, v in d.items()} for d in inputs]

    def batched(phase: Phase) -> dict:
        """From scratch, like the naive version: main pass included, nothing reused."""
        batch = model.preprocess(inputs, require_labels=True)
        main = model.forward_branches(batch.x, with_attention=phase.aff)
        return model.pseudo_labeller.training_targets(model.extra_pass, batch, main, phase)

    naive = naive_pseudo_labels(model, inputs)
    par = batched(Phase(c2s=True, s2c=False, aff=False, bsp=False))["c2s"]
    bsp = batched(Phase(c2s=True, s2c=False, aff=False, bsp=True))["c2s"]
    out = {
        "labels_agree_par": compare_labels(par, naive["par"]),
        "labels_agree_bsp": compare_labels(bsp, naive["bsp"]),
    }
    # Like for like: one call makes the PAR labels (for the affinity targets), the BSP labels
    # and the affinity targets, as a training step past the warm-ups does.
    full = model.criterion.phase(PAST_WARMUPS)
    fns = {
        "pseudo_labels_eval": lambda: batched(full),
        "pseudo_labels_naive": lambda: naive_pseudo_labels(model, inputs),
    }
    fns.update(_par_and_bsp(model, inputs))
    out.update(_interleaved(fns, model.device, repeats))
    return out


def _par_and_bsp(model, inputs: list[dict]) -> dict[str, Callable[[], Any]]:
    """PAR + BSP labels of one batch with the colour affinity shared (one cache) or computed
    by each (no cache, as before the sharing): the gain of sharing, on the same maps."""
    labeller = model.pseudo_labeller
    batch = model.preprocess(inputs, require_labels=True)
    maps = labeller.maps(model.extra_pass, batch, model.forward_branches(batch.x), True)

    def labels(cache: dict | None) -> None:
        labeller.seed("par", maps, batch.cls_label, batch, cache)
        labeller.seed("bsp", maps, batch.cls_label, batch, cache)

    return {
        "par_bsp_shared_affinity": lambda: labels({}),
        "par_bsp_separate_affinity": lambda: labels(None),
    }


def worker_infer(spec: dict[str, Any]) -> dict[str, Any]:
    """Inference images/s at one side: single scale, batched MS + flip, naive MS + flip."""
    import torch
    from naive_reference import naive_tta_logits

    from bmp.modeling import BMPWithTTA

    cfg, model, amp = _build(spec, training=False)
    device = model.device
    side, n = spec["side"], spec["images"]
    gen = torch.Generator().manual_seed(0)
    images = [
        torch.randint(0, 256, (3, side, side), generator=gen, dtype=torch.uint8).to(device)
        for _ in range(n)
    ]
    scales = [1.0, 0.5, 0.75]
    tta = BMPWithTTA(cfg, model, scales=scales)  # TEST.AUG.FLIP (on by default)

    def run(net) -> None:
        for img in images:  # one image per call, as the evaluator feeds them
            net([{"image": img}])

    def naive() -> None:
        for img in images:
            naive_tta_logits(model, img, scales, tta.flip)

    result: dict[str, Any] = {}
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.float16, enabled=amp):
        a = tta([{"image": images[0]}])[0]["sem_seg"].float()
        b = naive_tta_logits(model, images[0], scales, tta.flip).float()
        result["tta_max_abs_diff"] = float((a - b).abs().max())
        fns = {"single": lambda: run(model), "msflip": lambda: run(tta), "msflip_naive": naive}
        t = _interleaved(fns, device, max(2, spec["iters"]))
        result.update({f"{k}_img_s": n / v for k, v in t.items()})
    result.update(_peak_memory(device))
    return result


# ----------------------------------------------------------------------------- driver


def _spawn(kind: str, spec: dict[str, Any], threads: int) -> dict[str, Any]:
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    cmd = [sys.executable, __file__, "--worker", kind, json.dumps(spec)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} worker {spec} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _fmt_mem(r: dict[str, Any]) -> str:
    s = f"{r['peak_rss_gib']:.2f}"
    return s + (f" / {r['cuda_peak_gib']:.2f}" if "cuda_peak_gib" in r else "")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _split_row(crop: int, r: dict[str, Any]) -> list[str]:
    """One row of the training-step split: the model's ranges, in seconds per iteration."""
    pseudo = r["bmp.pseudo_labels"]
    accounted = sum(r[s] for s in r["scales"]) + sum(r[p] for p in PSEUDO_PARTS)
    cells = [str(crop), f"{r['bmp.forward']:.3f}", f"{pseudo:.3f}"]
    cells += [f"{r[s]:.3f}" for s in r["scales"]]
    cells += [f"{r[p]:.3f}" for p in PSEUDO_PARTS] + [f"{pseudo - accounted:.3f}"]
    cells += [f"{r['bmp.losses'] + r[BACKWARD]:.3f}", f"{r[STEP]:.3f}"]
    cells += [f"{r[STEP] * r['max_iter'] / 3600:.1f}", _fmt_mem(r)]
    return cells


def _train_section(args: argparse.Namespace, base: dict[str, Any], report: dict) -> list[str]:
    """Training step per crop: the profiled split, and batched vs naive pseudo labels."""
    split, versus = [], []
    for crop in args.crops:
        r = _spawn("train", dict(base, crop=crop, naive=True, deviations=True), args.threads)
        report["train"][crop] = r
        split.append(_split_row(crop, r))
        versus.append(
            [
                str(crop),
                f"{r['pseudo_labels_eval']:.2f} vs {r['pseudo_labels_naive']:.2f}",
                f"{r['pseudo_labels_naive'] / r['pseudo_labels_eval']:.2f}x",
                f"{100 * r['labels_agree_par']:.2f}% / {100 * r['labels_agree_bsp']:.2f}%",
                f"{r['par_bsp_shared_affinity']:.2f} vs {r['par_bsp_separate_affinity']:.2f}",
                f"{r['par_bsp_separate_affinity'] / r['par_bsp_shared_affinity']:.2f}x",
                f"{r['step_faithful']:.2f} vs {r['step_deviations']:.2f}",
                f"{r['step_faithful'] / r['step_deviations']:.2f}x",
            ]
        )
        print(f"  crop {crop}: {r[STEP]:.2f} s/it ({r['clock']})", flush=True)
    first = report["train"][args.crops[0]]
    scales = [s.rsplit("_", 1)[1] for s in first["scales"]]
    header = ["crop", "forward", "pseudo labels"] + [f"scale {s}" for s in scales]
    header += ["PAR", "BSP", "affinity targets", "rest of pseudo labels", "losses + backward"]
    header += ["total s/it", f"{first['max_iter']} iterations (h)", "peak mem GiB"]
    lines = _table(header, split) + [""]
    lines += _table(
        [
            "crop",
            "pseudo labels, batched vs naive (eval, s)",
            "speed-up",
            "labels agree (PAR / BSP)",
            "PAR + BSP labels, shared vs separate colour affinity (s)",
            "speed-up",
            "step, faithful vs deviations (s)",
            "cost of the faithful step",
        ],
        versus,
    )
    return lines


def _infer_section(args: argparse.Namespace, base: dict[str, Any], report: dict) -> list[str]:
    r = _spawn("infer", dict(base, side=args.infer_side, images=4), args.threads)
    report["infer"] = r
    header = ["single scale", "MS + flip (batched)", "MS + flip (naive)", "MS + flip speed-up"]
    header += ["max abs logit diff", "peak mem GiB"]
    row = [f"{r['single_img_s']:.2f}", f"{r['msflip_img_s']:.2f}", f"{r['msflip_naive_img_s']:.2f}"]
    row += [f"{r['msflip_img_s'] / r['msflip_naive_img_s']:.2f}x", f"{r['tta_max_abs_diff']:.1e}"]
    return _table(header, [row + [_fmt_mem(r)]])


def _scaling_section(args: argparse.Namespace, base: dict[str, Any], report: dict) -> list[str]:
    rows = []
    for side in args.sides:
        tr = report["train"].get(side) or _spawn("train", dict(base, crop=side), args.threads)
        inf = _spawn("infer", dict(base, side=side, images=2), args.threads)
        report["scaling"][side] = {"train": tr, "infer": inf}
        rows.append(
            [str(side), str(side * side), f"{tr[STEP]:.2f}", f"{tr['bmp.pseudo_labels']:.2f}"]
            + [f"{inf['single_img_s']:.2f}", _fmt_mem(tr)]
        )
    header = ["side", "pixels", "train step s", "pseudo labels s", "inference img/s"]
    return _table(header + ["peak mem GiB"], rows)


def _parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=DEFAULT_CONFIG, help="relative to the repository")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--amp", action="store_true", help="float16 autocast (CUDA only)")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--iters", type=int, default=3, help="profiled steps (median reported)")
    p.add_argument("--crops", type=int, nargs="+", default=None, help="training crops")
    p.add_argument("--sides", type=int, nargs="+", default=None, help="sides for the growth table")
    p.add_argument("--infer-side", type=int, default=INFER_SIDE)
    p.add_argument("--threads", type=int, default=0, help="OMP threads per worker (0: torch's)")
    p.add_argument("--quick", action="store_true", help="one crop, two sides, 1 profiled step")
    p.add_argument("--out", default=str(RESULTS))
    p.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.iters < 1:
        p.error("--iters must be >= 1")
    if args.device == "cuda" and not args.worker:
        import torch

        if not torch.cuda.is_available():
            p.error("--device cuda: no CUDA device is available")
    args.iters = 1 if args.quick else args.iters
    args.crops = args.crops or ([TRAIN_CROPS[0]] if args.quick else list(TRAIN_CROPS))
    args.sides = args.sides or ([256, 512] if args.quick else list(SIDES))
    return args


def main() -> None:
    args = _parse_args()
    if args.worker:
        kind, spec = args.worker[0], json.loads(args.worker[1])
        print(json.dumps((worker_train if kind == "train" else worker_infer)(spec)))
        return
    import torch

    amp = args.amp and args.device == "cuda"
    tag = args.device + ("_amp" if amp else "")
    base = {"device": args.device, "amp": amp, "batch": args.batch, "iters": args.iters}
    base["config"] = args.config
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else cpu_name()
    title = f"BMP speed: {args.config} on {device_name}{' + AMP' if amp else ''}"
    report: dict[str, Any] = {"device": device_name, "tag": tag, "batch": args.batch}
    report.update(config=args.config, train={}, scaling={})
    started = time.perf_counter()
    print(title, flush=True)
    train = _train_section(args, base, report)
    infer = _infer_section(args, base, report)
    scaling = _scaling_section(args, base, report)
    minutes = (time.perf_counter() - started) / 60
    command = "python benchmarks/speed.py " + " ".join(sys.argv[1:])
    report.update(command=command.strip(), minutes=minutes)
    intro = (
        f"`{command.strip()}` ({minutes:.1f} min, torch threads {torch.get_num_threads()}). "
        f"Training step, batch {args.batch}, every loss and BSP on: medians of {args.iters} "
        "profiled steps after one warm-up, split by the model's `record_function` ranges "
        f"({report['train'][args.crops[0]]['clock']}); the iteration count is the config's "
        "SOLVER.MAX_ITER, training steps only. Batched vs naive (per-image loops, one forward per "
        "flip and scale, stacked-neighbour PAR; benchmarks/naive_reference.py): same process, same "
        "weights and inputs, eval mode, timed alternately, fastest repeat of each. Faithful vs "
        "deviations: the default training step (the authors') against the one with "
        "`MODEL.BMP.PSEUDO.REUSE_MAIN_PASS` and `FREEZE_BN_STATS` on, forward + backward, timed "
        "alternately in one process."
    )
    md = [f"# {title}", "", intro, "", f"## Training step (batch {args.batch}), seconds", ""]
    md += train + ["", f"## Inference at {args.infer_side}x{args.infer_side}, images/s", ""]
    md += infer + ["", "## Growth with input side", ""] + scaling + [""]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"speed_{tag}.md").write_text("\n".join(md))
    (out / f"speed_{tag}.json").write_text(json.dumps(report, indent=2))
    _plot(report, out / f"speed_{tag}.png")
    print("\n".join(md[4:]) + f"\nwrote {out}/speed_{tag}.{{md,json,png}} in {minutes:.1f} min")


def _plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sides = sorted(report["scaling"], key=int)
    px = [int(s) ** 2 / 1e3 for s in sides]
    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    for key, label in ((STEP, "train step"), ("bmp.pseudo_labels", "of which pseudo labels")):
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
    fig.suptitle(f"BMP {report['config']} on {report['device']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def cpu_name() -> str:
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
