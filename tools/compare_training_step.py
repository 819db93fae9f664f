"""One training step of the authors' ``train_voc.py`` against our trainer's ``run_step``.

Used by ``tools/compare_with_official.py --training-step``. Both sides start from the same weights
(theirs, converted by ``tools/convert_bmp_official.py``'s rules), the same batch (the photos of the
case, as their loader gives them: normalised images, multi-hot labels, real-pixel boxes) and a
fresh optimizer, with dropout and drop-path off on both (train mode would otherwise draw random
masks). Their step is their loop body (:class:`official_harness.TheirTrainingLoop`), ours is
detectron2's ``SimpleTrainer.run_step`` over the model, optimizer and LR schedule that
``BMPTrainer`` builds from the config. Compared after the step:

* each loss term (unweighted, where our schedule has it on) and the total;
* the labels each side trained on: c2s (PAR or BSP), s2c and affinity, as a share of equal pixels;
* the gradients: ||ours - theirs|| / ||theirs|| over the whole gradient, and the worst single
  parameter by max |ours - theirs| / max |theirs|, leaving apart the
  gradients that are zero in exact arithmetic and float noise on both sides (below 1e-6 of the
  largest gradient: the decoder's ``linear_c*`` biases, which its BatchNorm cancels);
* the decoder's BatchNorm buffers after the step;

and, without running a step, the LR of every parameter group at chosen iterations.

Their PAR and BSP see the image de-normalised through ``uint8``, which truncates (a value v comes
back as v - 1 for some v and channels); ours sees the exact colours. With ``exact_colours`` the
crops are first snapped to the colours that survive their round trip (:func:`exact_colours`), so
both sides refine the same image: the labels then agree on every pixel, and what remains of the
gradient difference is float rounding.
"""

from __future__ import annotations

import itertools
import re
from types import SimpleNamespace

import numpy as np
import torch
from convert_bmp_official import OUR_UNUSED, official_to_bmp_d2
from official_harness import TheirTrainingLoop, build_their_model, disable_dropout
from torch import nn

IGNORE = 255
LR_ITERATIONS = (0, 1, 750, 1499, 1500, 1501, 10000, 19999)
STEP_ITERATIONS = (2000, 2001, 5000)
TERMS = ("cls", "c2s", "s2c", "aff")


def build_our_training(theirs: nn.Module, config: str, opts: list[str], keep_dropout=False):
    """Our model with their weights, and the optimizer and LR schedule our trainer builds;
    dropout and drop-path off unless ``keep_dropout`` (timing runs keep them as in training)."""
    from bmp.config import load_config
    from bmp.engine.trainer import BMPTrainer

    cfg = load_config(
        config,
        [
            "MODEL.WEIGHTS", "", "MODEL.DEVICE", "cpu", "MODEL.MIT.DROP_PATH_RATE", "0.0",
            "MODEL.SEM_SEG_HEAD.DROPOUT", "0.0", *opts,
        ],
    )  # fmt: skip
    model = BMPTrainer.build_model(cfg)
    result = model.load_state_dict(official_to_bmp_d2(theirs.state_dict())[0], strict=False)
    missing = [k for k in result.missing_keys if not any(re.fullmatch(p, k) for p in OUR_UNUSED)]
    if missing or result.unexpected_keys:
        raise SystemExit(f"error: weights do not fit {config}: {missing} {result.unexpected_keys}")
    if not keep_dropout:
        disable_dropout(model)
    model.train()
    optimizer = BMPTrainer.build_optimizer(cfg, model)
    scheduler = BMPTrainer.build_lr_scheduler(cfg, optimizer)
    return cfg, model, optimizer, scheduler


def set_iteration(scheduler, iteration: int) -> None:
    """Put detectron2's LR schedule at ``iteration``, as after ``iteration`` steps."""
    scheduler.last_epoch = iteration - 1
    scheduler.step()


def our_lr_at(scheduler, iteration: int) -> list[float]:
    set_iteration(scheduler, iteration)
    return [g["lr"] for g in scheduler.optimizer.param_groups]


def lr_rows(official: SimpleNamespace, config: str, opts: list[str], seed: int) -> list[dict]:
    """LR of every group at :data:`LR_ITERATIONS`, theirs and ours, and whether they are equal."""
    theirs = disable_dropout(build_their_model(official, seed)).train()
    loop = TheirTrainingLoop(official, theirs)
    _, _, _, scheduler = build_our_training(theirs, config, opts)
    rows = []
    for it in LR_ITERATIONS:
        t, o = loop.lr_at(it), our_lr_at(scheduler, it)
        rows.append({"iteration": it, "theirs": t, "ours": o, "equal": t == o})
    return rows


def exact_colours(official: SimpleNamespace, crop: np.ndarray) -> np.ndarray:
    """``crop`` with every channel value that their normalise -> ``denormalize_img`` round trip
    changes replaced by the nearest value it keeps (their functions decide, per channel)."""
    values = np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, axis=1)[None]  # (1, 256, 3)
    x = torch.from_numpy(official.transforms.normalize_img(values)).permute(2, 0, 1)[None]
    back = official.imutils.denormalize_img(x)[0].permute(1, 2, 0)[0].numpy()  # (256, 3)
    out = crop.copy()
    for c in range(3):
        kept = np.flatnonzero(back[:, c] == np.arange(256))
        nearest = kept[np.abs(kept[None, :] - np.arange(256)[:, None]).argmin(axis=1)]
        out[..., c] = nearest[crop[..., c]]
    return out


def _our_batch(crops: list[np.ndarray], boxes: list[list[int]], labels: list[list[int]]):
    batch = []
    for crop, box, ids in zip(crops, boxes, labels):
        valid = torch.zeros(crop.shape[:2], dtype=torch.bool)
        valid[box[0] : box[1], box[2] : box[3]] = True
        cls_label = torch.zeros(20)
        cls_label[[c - 1 for c in ids]] = 1.0
        image = torch.from_numpy(crop).permute(2, 0, 1).contiguous()
        batch.append({"image": image, "cls_label": cls_label, "valid_mask": valid})
    return batch


def _their_batch(official, crops, boxes, labels):
    x = torch.stack(
        [torch.from_numpy(official.transforms.normalize_img(c)).permute(2, 0, 1) for c in crops]
    ).contiguous()
    cls = torch.zeros(len(crops), 20)
    for i, ids in enumerate(labels):
        cls[i, [c - 1 for c in ids]] = 1.0
    return x, cls, torch.tensor(boxes)


def _run_ours(model, optimizer, scheduler, batch: list[dict], iteration: int) -> dict:
    from detectron2.engine import SimpleTrainer
    from detectron2.utils.events import EventStorage

    captured: dict = {}
    labeller = model.pseudo_labeller
    make_targets = labeller.training_targets

    def capture(*args, **kwargs):
        captured.update(make_targets(*args, **kwargs))
        return captured

    labeller.training_targets = capture  # the public method, wrapped to keep what it returns
    set_iteration(scheduler, iteration)
    trainer = SimpleTrainer(model, itertools.repeat(batch), optimizer)
    trainer.iter = iteration
    with EventStorage(iteration) as storage:
        trainer.storage = storage
        trainer.run_step()
        losses = {k: v[0] for k, v in storage.latest().items() if k.startswith("loss_")}
    del labeller.training_targets
    return {"losses": losses, "targets": captured}


def _grads(model: nn.Module, ours: bool) -> dict[str, torch.Tensor]:
    named = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    return named if ours else dict(official_to_bmp_d2(named)[0])


def _worst(ours: dict, theirs: dict, zero_below: float = 0.0) -> tuple[float, str, list[str]]:
    """Largest max |ours - theirs| / max |theirs| over the tensors both have, and the tensors
    left apart because both sides' largest value is below ``zero_below`` x the largest of all."""
    top = max(float(t.float().abs().max()) for t in theirs.values())
    worst, name, zeros = 0.0, "", []
    for key, t in theirs.items():
        scale = float(t.float().abs().max())
        if max(scale, float(ours[key].float().abs().max())) < zero_below * top:
            zeros.append(key)
            continue
        d = float((ours[key].float() - t.float()).abs().max()) / max(scale, 1e-12)
        if d > worst:
            worst, name = d, key
    return worst, name, zeros


def _relative_l2(ours: dict, theirs: dict) -> float:
    """||ours - theirs|| / ||theirs|| over all the tensors together (the whole gradient)."""
    diff = sum(float((ours[k].double() - t.double()).square().sum()) for k, t in theirs.items())
    norm = sum(float(t.double().square().sum()) for t in theirs.values())
    return (diff / max(norm, 1e-300)) ** 0.5


def _agreement(ours: torch.Tensor | None, theirs: torch.Tensor) -> float | None:
    if ours is None:
        return None
    return float((ours.long() == theirs.long()).float().mean() * 100)


def _bn_buffers(state: dict) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if re.search(r"running_(mean|var)|num_batches", k)}


def step_row(official, config, opts, seed, crops, boxes, labels, iteration: int) -> dict:
    """One step on both sides from the same weights; the row of differences."""
    theirs = disable_dropout(build_their_model(official, seed)).train()
    _, model, optimizer, scheduler = build_our_training(theirs, config, opts)
    loop = TheirTrainingLoop(official, theirs, ["--crop_size", str(crops[0].shape[0])])
    t = loop.step(iteration, *_their_batch(official, crops, boxes, labels))
    o = _run_ours(model, optimizer, scheduler, _our_batch(crops, boxes, labels), iteration)

    crit = model.criterion
    weights = {"cls": 1.0, **crit.weights}
    row: dict = {"iteration": iteration}
    ours_total = sum(o["losses"].values())
    row["total"] = abs(ours_total - float(t["loss"])) / abs(float(t["loss"]))
    phase = crit.phase(iteration)
    active = {"cls": True, "c2s": phase.c2s, "s2c": phase.s2c, "aff": phase.aff}
    for term in TERMS:
        theirs_v = float(t[f"{term}_loss"])
        row[f"loss_{term}"] = (
            abs(o["losses"][f"loss_{term}"] / weights[term] - theirs_v) / abs(theirs_v)
            if active[term]
            else None
        )
    targets = o["targets"]
    y_s = t["Y_s"].clone()
    y_s[y_s != IGNORE] -= 1  # theirs: 1..K, trained as Y_s - 1; ours: 0..K-1
    row["c2s_labels"] = _agreement(targets.get("c2s"), t["Y_c"])
    row["c2s_kind"] = "BSP" if phase.bsp else "PAR"
    row["s2c_labels"] = _agreement(targets.get("s2c"), y_s)
    row["aff_labels"] = _agreement(targets.get("aff"), t["aff_label"])
    ours_g, theirs_g = _grads(model, True), _grads(theirs, False)
    row["grad"], row["grad_worst"], row["grad_zero"] = _worst(ours_g, theirs_g, zero_below=1e-6)
    row["grad_l2"] = _relative_l2(ours_g, theirs_g)
    after = model.state_dict()
    bn_t = _bn_buffers(dict(official_to_bmp_d2(theirs.state_dict())[0]))
    row["bn"], row["bn_worst"], _ = _worst({k: after[k] for k in bn_t}, bn_t)
    row["bn_tracked"] = {
        k: (int(after[k]), int(v)) for k, v in bn_t.items() if k.endswith("num_batches_tracked")
    }
    return row
