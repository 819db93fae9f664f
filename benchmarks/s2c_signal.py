#!/usr/bin/env python
"""How much does s2c actually teach the CAMs? Measured on a trained checkpoint.

s2c is cross-entropy of the K CAM logits against the segmentation branch's confident foreground
label. It can only move a pixel's *ranking* among foreground classes; the CAM's extent (what the
seeds are made of) changes only through what that ranking pushes into the shared encoder. When
the classifier already ranks the right class first on those pixels, the loss (and its gradient)
is close to zero. This script reports, over training batches:

* coverage: the fraction of real pixels that carry an s2c label (confident, foreground);
* agreement: on those pixels, how often the CAM's argmax already equals the s2c label;
* the s2c training loss (``MODEL.BMP.S2C.LOSS``) and ``LAMBDA_S2C`` times it, next to the
  logged, weighted c2s and s2c losses.

``--warmup-trace`` instead replays the start of the supervision warm-up iteration by iteration:
it resumes a run's ``model_0000499.pth`` (optimizer included) in a scratch folder, once with s2c
on and once with it off, and prints the raw (unsmoothed) weighted losses from the iteration
before c2s/s2c start until ``--until``. The logs only show medians over 20 iterations, which hide
a burst lasting two.

    python benchmarks/s2c_signal.py benchmarks/results/ablation_runs/full_seed0 --batches 20
    python benchmarks/s2c_signal.py benchmarks/results/ablation_runs/s2c_seed0 --warmup-trace
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Dict, List, Optional

import torch


def measure(run_dir: Path, batches: int) -> Dict[str, float]:
    from bmp.config import load_config
    from bmp.engine.checkpoint import AtomicCheckpointer
    from bmp.engine.trainer import BMPTrainer
    from bmp.modeling.losses import s2c_loss
    from bmp.modeling.schedule import Phase

    cfg = load_config(str(run_dir / "config.yaml"), ["MODEL.DEVICE", "cpu"], freeze=False)
    cfg.MODEL.WEIGHTS = str(run_dir / "model_final.pth")
    model = BMPTrainer.build_model(cfg)
    AtomicCheckpointer(model, unsafe_unpickle=cfg.MODEL.WEIGHTS_UNSAFE_UNPICKLE).load(
        cfg.MODEL.WEIGHTS
    )
    model.eval()  # BN in inference mode, no dropout: the labels as the trained model sees them
    loader = iter(BMPTrainer.build_train_loader(cfg))
    labelled = agree = real = 0
    loss_sum = 0.0
    ignore, mode = model.criterion.ignore_value, model.criterion.s2c_loss_mode
    s2c_only = Phase(c2s=False, s2c=True, aff=False, bsp=False)
    with torch.no_grad():
        for _ in range(batches):
            batch = model.preprocess(next(loader), require_labels=True)
            main = model.forward_branches(batch.x)
            # The model's own s2c targets: its sigma_s, ignore value and padding rule.
            y = model.pseudo_labeller.training_targets(model.extra_pass, batch, main, s2c_only)
            y = y["s2c"]
            cam = main.cam_up()
            keep = y != ignore
            real += int(batch.valid.sum())
            labelled += int(keep.sum())
            agree += int((cam.argmax(1) == y)[keep].sum())
            if keep.any():  # the training loss itself (mean over labelled pixels), summed back
                loss_sum += float(s2c_loss(cam, y, mode=mode, ignore_index=ignore)) * int(
                    keep.sum()
                )
    loss = loss_sum / max(labelled, 1)
    return {
        "coverage_pct": 100.0 * labelled / max(real, 1),
        "cam_argmax_agrees_pct": 100.0 * agree / max(labelled, 1),
        "s2c_loss": loss,
        "weighted_s2c": model.criterion.weights["s2c"] * loss,
        "logged_loss_c2s": _logged(run_dir, "loss_c2s"),
        "logged_loss_s2c": _logged(run_dir, "loss_s2c"),
    }


def _logged(run_dir: Path, key: str) -> float:
    """Median-smoothed value of ``key`` at the last iteration the run logged."""
    rows = [json.loads(line) for line in (run_dir / "metrics.json").read_text().splitlines()]
    rows = [r for r in rows if key in r]
    return float(rows[-1][key]) if rows else float("nan")


def warmup_trace(run_dir: Path, s2c: bool, until: int, scratch: Path) -> List[Dict[str, float]]:
    """Raw weighted losses per iteration around the warm-up, resuming at iteration 500."""
    import shutil

    from detectron2.engine import hooks
    from detectron2.utils.env import seed_all_rng
    from detectron2.utils.events import get_event_storage

    from bmp.config import load_config
    from bmp.engine.trainer import BMPTrainer

    ckpt = run_dir / "model_0000499.pth"
    if not ckpt.is_file():
        raise SystemExit(
            f"{ckpt} not found: --warmup-trace resumes a run's iteration-499 checkpoint"
        )
    scratch.mkdir(parents=True, exist_ok=True)
    shutil.copy(ckpt, scratch / ckpt.name)
    (scratch / "last_checkpoint").write_text(ckpt.name)
    opts = ["OUTPUT_DIR", str(scratch), "MODEL.BMP.S2C.ENABLED", str(s2c), "MODEL.DEVICE", "cpu"]
    opts += ["TEST.EVAL_PERIOD", "0", "SOLVER.CHECKPOINT_PERIOD", "1000000"]
    cfg = load_config(str(run_dir / "config.yaml"), opts)
    start = min(cfg.MODEL.BMP.C2S.START_ITER, cfg.MODEL.BMP.S2C.START_ITER)
    rows: List[Dict[str, float]] = []

    class _Stop(Exception):
        pass

    class _Tap(hooks.HookBase):
        def after_step(self) -> None:
            it = self.trainer.iter
            if it >= start - 1:
                hist = get_event_storage().histories()
                keys = ("loss_cls", "loss_c2s", "loss_s2c")
                rows.append({"iter": it, **{k: hist[k].latest() for k in keys if k in hist}})
            if it >= until:
                raise _Stop

    seed_all_rng(max(cfg.SEED, 0))  # the same batches with s2c on and off
    trainer = BMPTrainer(cfg)
    trainer.resume_or_load(resume=True)
    trainer.register_hooks([_Tap()])
    try:
        trainer.train()
    except _Stop:
        pass
    return rows


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("runs", nargs="+", help="finished training output folders")
    p.add_argument("--batches", type=int, default=20)
    p.add_argument(
        "--warmup-trace", action="store_true", help="per-iteration losses at the warm-up"
    )
    p.add_argument("--until", type=int, default=815, help="last iteration of --warmup-trace")
    args = p.parse_args(argv)
    from detectron2.utils.env import seed_all_rng

    seed_all_rng(0)  # the same batches (and crops) on every call: the table is reproducible
    if args.warmup_trace:
        import tempfile

        for run in args.runs:
            traces = {}
            for s2c in (True, False):
                with tempfile.TemporaryDirectory() as tmp:
                    traces[s2c] = warmup_trace(Path(run), s2c, args.until, Path(tmp))
            print(f"\n{run}: raw weighted losses, s2c on | s2c off (same checkpoint, same data)")
            print("| iter | cls | c2s | s2c | cls (off) | c2s (off) |\n|---|---|---|---|---|---|")
            for on, off in zip(traces[True], traces[False]):
                print(
                    f"| {on['iter']} | {on.get('loss_cls', 0):.3f} | {on.get('loss_c2s', 0):.3f} "
                    f"| {on.get('loss_s2c', 0):.3f} | {off.get('loss_cls', 0):.3f} "
                    f"| {off.get('loss_c2s', 0):.3f} |"
                )
        return 0
    print(
        "| run | s2c coverage (% px) | CAM argmax agrees (%) | s2c loss | x LAMBDA_S2C "
        "| logged loss_s2c | logged loss_c2s |\n|---|---|---|---|---|---|---|"
    )
    for run in args.runs:
        run_dir = Path(run)
        if not (run_dir / "model_final.pth").is_file():
            raise SystemExit(f"{run_dir}/model_final.pth not found: train the run first")
        m = measure(run_dir, args.batches)
        print(
            f"| {run_dir.name} | {m['coverage_pct']:.1f} | {m['cam_argmax_agrees_pct']:.1f} "
            f"| {m['s2c_loss']:.4f} | {m['weighted_s2c']:.4f} | {m['logged_loss_s2c']:.4f} "
            f"| {m['logged_loss_c2s']:.4f} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
