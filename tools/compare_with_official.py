#!/usr/bin/env python
"""Compare BMP-D2 with the authors' BMP code: same weights, same photos, every output.

    python tools/compare_with_official.py --official /path/to/BMP-WSSS
    python tools/compare_with_official.py --official /path/to/BMP-WSSS --checkpoint their.pth
    python tools/compare_with_official.py --official ... --images a.jpg b.jpg --labels 15 "7 12"

The authors' code (github.com/zh460045050/BMP-WSSS) is imported from ``--official`` at run time
and never copied here. It imports ``mmcv`` and ``pydensecrf`` at module load; neither installs on
a current stack, so when they are missing this tool registers stand-ins before the import:
``mmcv.cnn.ConvModule`` as conv (no bias) -> BatchNorm -> ReLU with their parameter names
``conv`` / ``bn``, and a ``pydensecrf`` whose functions refuse to run (no compared path calls the
CRF). ``imageio`` gets a stand-in too when absent (only their file I/O uses it).

Both models get the same weights: the authors' state dict (random with ``--seed``, or
``--checkpoint``) is converted by ``tools/convert_bmp_official.py``'s rules and loaded into ours.
Both run in eval mode, so dropout and drop-path do not make the runs differ; BatchNorm uses the
same running statistics. Ours is used through its public eval-mode forward with
``TEST.BMP.EXTRA_OUTPUTS`` and ``TEST.BMP.SEED_USE_GT_LABELS`` on. Each photo is resized to
``--size`` x ``--size`` ("unpadded"), and also shrunk and pasted on a black crop of that size
("padded", the authors' ``random_crop`` with ``mean_rgb=[0, 0, 0]``), whose real-pixel box is their
``img_box`` and our ``valid_mask``.

Printed per case: max |ours - theirs| as a fraction of the range of theirs for the continuous
outputs, and the share of equal pixels (ignored pixels included) for the label maps.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))

from compare_training_step import (  # noqa: E402
    STEP_ITERATIONS,
    exact_colours,
    lr_rows,
    step_row,
)
from convert_bmp_official import OUR_UNUSED, official_to_bmp_d2  # noqa: E402
from official_harness import build_their_model, import_official  # noqa: E402

from bmp.config import load_config  # noqa: E402
from bmp.data.image_io import read_image_rgb  # noqa: E402
from bmp.modeling import with_test_time_augmentation  # noqa: E402
from bmp.utils.safe_load import UNSAFE_UNPICKLE_HELP, RefusedPickleError  # noqa: E402
from bmp.utils.weights import CheckpointFormatError  # noqa: E402

DEFAULT_COCO_MINI = REPO.parent / "shared" / "data" / "coco_mini"
DEFAULT_STEMS = ("000000000139", "000000192699")
IGNORE = 255


# ------------------------------------------------------------------------------- the models


def build_theirs(
    official: SimpleNamespace, checkpoint: str | None, seed: int, unsafe_unpickle: bool = False
) -> nn.Module:
    return build_their_model(official, seed, checkpoint, unsafe_unpickle).eval()


def build_ours(theirs: nn.Module, config: str, tta: bool) -> nn.Module:
    from detectron2.modeling import build_model

    opts = [
        "MODEL.WEIGHTS", "",
        "MODEL.DEVICE", "cpu",
        "MODEL.SEM_SEG_HEAD.NORM", "BN",
        "TEST.BMP.EXTRA_OUTPUTS", "True",
        "TEST.BMP.SEED_USE_GT_LABELS", "True",
        "TEST.AUG.ENABLED", str(tta),
        "TEST.AUG.SCALES", "[1.0, 0.5, 0.75]",
    ]  # fmt: skip
    cfg = load_config(config, opts)
    model = build_model(cfg)
    converted, _ = official_to_bmp_d2(theirs.state_dict())
    result = model.load_state_dict(converted, strict=False)
    # Our buffers that their checkpoints have no counterpart for, as the converter lists them.
    missing = [k for k in result.missing_keys if not any(re.fullmatch(p, k) for p in OUR_UNUSED)]
    if missing or result.unexpected_keys:
        raise SystemExit(
            f"error: weights do not fit {config}: missing {missing}, unexpected "
            f"{result.unexpected_keys}"
        )
    return with_test_time_augmentation(cfg, model.eval())


# -------------------------------------------------------------------------------- the data


def load_photos(
    images: list[str] | None, labels: list[str] | None, coco_mini: Path
) -> list[tuple[str, np.ndarray, list[int]]]:
    """(name, uint8 RGB, foreground class ids 1..20) for each photo to compare on."""
    if images:
        if not labels or len(labels) != len(images):
            raise SystemExit("error: --labels needs one quoted list of class ids per --images path")
        return [
            (Path(p).stem, read_image_rgb(p), [int(c) for c in lab.split()])
            for p, lab in zip(images, labels)
        ]
    label_file = coco_mini / "image_labels_voc21.txt"
    if not label_file.is_file():
        raise SystemExit(
            f"error: no photos given and {label_file} not found; pass --images and --labels, or "
            "--coco-mini with the path to coco_mini"
        )
    table = {}
    for line in label_file.read_text().splitlines():
        parts = line.split()
        if parts:
            table[parts[0]] = [int(c) for c in parts[1:]]
    return [
        (s, read_image_rgb(str(coco_mini / "images" / f"{s}.jpg")), table[s]) for s in DEFAULT_STEMS
    ]


def make_case(image: np.ndarray, size: int, padded: bool) -> tuple[np.ndarray, list[int]]:
    """A size x size crop and its real-pixel box ``[y0, y1, x0, x1]`` (their ``img_box``)."""
    import cv2

    if not padded:
        return cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR), [0, size, 0, size]
    h, w = (size * 5) // 8, (size * 13) // 16
    top, left = size // 8, size // 10
    canvas = np.zeros((size, size, 3), dtype=np.uint8)
    canvas[top : top + h, left : left + w] = cv2.resize(
        image, (w, h), interpolation=cv2.INTER_LINEAR
    )
    return canvas, [top, top + h, left, left + w]


# ------------------------------------------------------------------------------ comparison


def rel_diff(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    """max |ours - theirs| over the range of theirs."""
    span = (theirs.max() - theirs.min()).clamp(min=1e-12)
    return float((ours.float() - theirs.float()).abs().max() / span)


def agreement(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    return float((ours.long() == theirs.long()).float().mean() * 100)


def run_theirs(official, model, crop, box, cls_ids, scales, sigma_c):
    """Their outputs for one crop, computed by their own functions."""
    x = torch.from_numpy(official.transforms.normalize_img(crop)).permute(2, 0, 1)[None]
    x = x.contiguous()
    cls_label = torch.zeros(1, 20)
    cls_label[0, [c - 1 for c in cls_ids]] = 1.0
    cfg = SimpleNamespace(
        cam=SimpleNamespace(high_thre=0.55, low_thre=0.35),
        dataset=SimpleNamespace(ignore_index=IGNORE),
    )
    par = official.par.PAR(num_iter=10, dilations=[1, 2, 4, 8, 12, 24])
    cu = official.camutils
    with torch.no_grad():
        cls, seg, _, _ = model(x)
        cams, _, msc_segs = cu.multi_scale_cam_with_aff_mat_seg(model, x, scales=scales)
        denorm = official.imutils.denormalize_img2(x.clone())
        par_label = cu.refine_cams_with_bkg_v2(
            par, denorm, cams=cams, cls_labels=cls_label, cfg=cfg, img_box=[box]
        )
        with_bg = torch.cat([torch.ones(1, 1), cls_label], dim=1)
        bg_cam = cu.background_aware_propagtation(
            par, denorm, cams=cams, segs=msc_segs, labels=with_bg, img_box=[box]
        )
        best, bsp = bg_cam.max(dim=1)
        bsp[best < sigma_c] = IGNORE
        tta = _their_test_time_fusion(model, x)
    return {
        "cls_score": torch.sigmoid(cls[0]),
        "sem_seg": seg[0],
        "sem_seg_tta": tta,
        "cam": cams[0],
        "par": par_label[0],
        "bsp": bsp[0],
    }


def _their_test_time_fusion(model, x):
    """The fusion of their ``test_voc.py`` (scales 1, 0.5, 0.75; flips averaged; max over scales).

    Restated here because their script runs it inline over a data loader.
    """
    h, w = x.shape[-2:]
    per_scale = []
    for s in (1.0, 0.5, 0.75):
        xs = (
            x
            if s == 1.0
            else F.interpolate(x, scale_factor=s, mode="bilinear", align_corners=False)
        )
        _, segs, _, _ = model(torch.cat([xs, xs.flip(-1)]))
        segs = F.interpolate(segs, size=(h, w), mode="bilinear", align_corners=False)
        per_scale.append((segs[0] + segs[1].flip(-1)) / 2)
    return torch.stack(per_scale).amax(dim=0)


def run_ours(model, model_tta, crop, box, cls_ids):
    image = torch.from_numpy(crop).permute(2, 0, 1).contiguous()
    valid = torch.zeros(crop.shape[:2], dtype=torch.bool)
    valid[box[0] : box[1], box[2] : box[3]] = True
    cls_label = torch.zeros(20)
    cls_label[[c - 1 for c in cls_ids]] = 1.0
    h, w = crop.shape[:2]
    d = {"image": image, "height": h, "width": w, "cls_label": cls_label, "valid_mask": valid}
    with torch.no_grad():
        out = model([d])[0]
        tta = model_tta([d])[0]["sem_seg"]
    return {
        "cls_score": out["cls_score"],
        "sem_seg": out["sem_seg"],
        "sem_seg_tta": tta,
        "cam": out["cam"],
        "par": out["seeds"]["par"],
        "bsp": out["seeds"]["bsp"],
    }


def compare(ours: dict, theirs: dict) -> dict:
    row = {}
    for key in ("cls_score", "sem_seg", "sem_seg_tta", "cam"):
        row[key] = rel_diff(ours[key], theirs[key])
    row["sem_seg_argmax"] = agreement(ours["sem_seg"].argmax(0), theirs["sem_seg"].argmax(0))
    for key in ("par", "bsp"):
        row[key] = agreement(ours[key], theirs[key])
        row[f"{key}_ignored_ours"] = float((ours[key] == IGNORE).float().mean() * 100)
        row[f"{key}_ignored_theirs"] = float((theirs[key] == IGNORE).float().mean() * 100)
    return row


def print_table(rows: list[dict]) -> None:
    print(
        "| photo | case | cls_score | sem_seg | sem_seg (TTA) | fused CAM | sem_seg argmax "
        "| PAR seed | BSP seed | BSP ignored (ours / theirs) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['photo']} | {r['case']} | {r['cls_score']:.1e} | {r['sem_seg']:.1e} "
            f"| {r['sem_seg_tta']:.1e} | {r['cam']:.1e} | {r['sem_seg_argmax']:.2f}% "
            f"| {r['par']:.2f}% | {r['bsp']:.2f}% "
            f"| {r['bsp_ignored_ours']:.1f}% / {r['bsp_ignored_theirs']:.1f}% |"
        )
    print(
        "\ncontinuous outputs: max |ours - theirs| / range(theirs); label maps: % of pixels equal "
        "(ignore included)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official", required=True, type=Path, help="BMP-WSSS checkout")
    parser.add_argument("--checkpoint", help="their checkpoint (.pth); random weights if omitted")
    parser.add_argument("--unsafe-unpickle", action="store_true", help=UNSAFE_UNPICKLE_HELP)
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    parser.add_argument("--config", default=str(REPO / "configs/voc/bmp_mit_b1_512_20k.yaml"))
    parser.add_argument("--size", type=int, default=320, help="crop size (their default: 320)")
    parser.add_argument("--images", nargs="*", help="photos (default: two coco_mini photos)")
    parser.add_argument("--labels", nargs="*", help='class ids per photo, e.g. "15" "7 12"')
    parser.add_argument(
        "--coco-mini", type=Path, default=Path(os.environ.get("BMP_COCO_MINI", DEFAULT_COCO_MINI))
    )
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument(
        "--training-step",
        action="store_true",
        help="compare one training step (their train_voc.py loop body vs our run_step) instead",
    )
    parser.add_argument(
        "--iterations",
        type=int,
        nargs="*",
        default=list(STEP_ITERATIONS),
        help="with --training-step: the iterations to run a step at",
    )
    parser.add_argument("--report", type=Path, help="with --training-step: write a markdown report")
    parser.add_argument(
        "opts", nargs=argparse.REMAINDER, help="with --training-step: config overrides for ours"
    )
    args = parser.parse_args(argv)
    if args.training_step:
        return training_step_main(args)
    if args.opts:
        raise SystemExit("error: config overrides are only taken with --training-step")

    torch.set_grad_enabled(False)
    official = import_official(args.official.resolve())
    if official.stand_ins:
        print(f"stand-ins for modules missing here: {', '.join(official.stand_ins)}")
    try:
        theirs_model = build_theirs(official, args.checkpoint, args.seed, args.unsafe_unpickle)
    except (CheckpointFormatError, RefusedPickleError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    ours_model = build_ours(theirs_model, args.config, tta=False)
    ours_tta = build_ours(theirs_model, args.config, tta=True)
    scales = list(ours_model.pseudo_labeller.scales)
    sigma_c = ours_model.pseudo_labeller.thresholds.sigma_c
    print(
        f"weights: {args.checkpoint or f'random (seed {args.seed})'}; config {args.config}; "
        f"crop {args.size}; pseudo-label scales {scales}; sigma_c {sigma_c}"
    )
    rows = []
    for name, image, cls_ids in load_photos(args.images, args.labels, args.coco_mini):
        for padded in (False, True):
            crop, box = make_case(image, args.size, padded)
            theirs = run_theirs(official, theirs_model, crop, box, cls_ids, scales, sigma_c)
            ours = run_ours(ours_model, ours_tta, crop, box, cls_ids)
            row = {"photo": name, "case": "padded" if padded else "unpadded"}
            row.update(compare(ours, theirs))
            rows.append(row)
    print_table(rows)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


def _machine() -> str:
    import platform

    cpu = platform.processor() or "CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, torch {torch.__version__}, {torch.get_num_threads()} threads"


def training_step_main(args: argparse.Namespace) -> int:
    """Both sides' training step on each case (the photos as one batch), then the LR table."""
    if args.checkpoint:
        raise SystemExit("error: --training-step starts from random weights (--seed) only")
    official = import_official(args.official.resolve())
    if official.stand_ins:
        print(f"stand-ins for modules missing here: {', '.join(official.stand_ins)}")
    photos = load_photos(args.images, args.labels, args.coco_mini)
    config = os.path.relpath(args.config, REPO)
    header = (
        f"random weights (seed {args.seed}); config {config} {' '.join(args.opts)}; "
        f"crop {args.size}; batch {len(photos)} ({', '.join(p[0] for p in photos)}); "
        "dropout and drop-path off on both sides"
    )
    print(header)
    rows = []
    labels = [ids for _, _, ids in photos]
    for colours, padded in itertools.product(("as is", "exact"), (False, True)):
        cases = [make_case(image, args.size, padded) for _, image, _ in photos]
        crops, boxes = [c for c, _ in cases], [b for _, b in cases]
        if colours == "exact":
            crops = [exact_colours(official, c) for c in crops]
        for it in args.iterations:
            row = step_row(official, args.config, args.opts, args.seed, crops, boxes, labels, it)
            row["case"] = f"{'padded' if padded else 'unpadded'}, {colours}"
            rows.append(row)
            print(step_line(row), flush=True)
    lrs = lr_rows(official, args.config, args.opts, args.seed)
    lines = ["", *step_table(rows), "", *lr_table(lrs)]
    print("\n".join(lines))
    if args.report:
        command = "python tools/compare_with_official.py " + " ".join(
            a if a != str(args.official) else "/path/to/BMP-WSSS" for a in sys.argv[1:]
        )
        head = [
            "# One training step, BMP-D2 vs the authors' train_voc.py",
            "",
            f"`{command}` (BMP-WSSS at 36bbfee; {header}; {_machine()}).",
        ]
        args.report.write_text("\n".join(head + lines) + "\n")
    if args.json:
        args.json.write_text(json.dumps({"steps": rows, "lr": lrs}, indent=2) + "\n")
    return 0


def _fmt(value, spec: str, unit: str = "") -> str:
    return "off" if value is None else format(value, spec) + unit


def step_line(r: dict) -> str:
    return (
        f"| {r['case']} | {r['iteration']} | {r['total']:.1e} "
        + " ".join(f"| {_fmt(r[f'loss_{t}'], '.1e')}" for t in ("cls", "c2s", "s2c", "aff"))
        + f" | {_fmt(r['c2s_labels'], '.2f', '%')} {r['c2s_kind'] if r['c2s_labels'] else ''} "
        f"| {_fmt(r['s2c_labels'], '.2f', '%')} | {_fmt(r['aff_labels'], '.2f', '%')} "
        f"| {r['grad_l2']:.1e} | {r['grad']:.1e} | {r['bn']:.1e} "
        f"| {', '.join(f'{o}/{t}' for o, t in r['bn_tracked'].values())} |"
    )


def step_table(rows: list[dict]) -> list[str]:
    lines = [
        "| case | iteration | total loss | cls | c2s | s2c | aff | c2s labels | s2c labels "
        "| aff labels | gradient (all) | gradient (worst parameter) | BN buffers "
        "| BN batches (ours/theirs) |",
        "|---" * 14 + "|",
    ]
    lines += [step_line(r) for r in rows]
    worst = max(rows, key=lambda r: r["grad"])
    zeros = sorted({k for r in rows for k in r["grad_zero"]})
    lines += [
        "",
        "Gradient (all): ||ours - theirs|| / ||theirs|| over every parameter's gradient together. "
        "Losses, gradient (worst parameter), BN running mean/var: max |ours - theirs| / max "
        f"|theirs| (worst: `{worst['grad_worst']}` at {worst['iteration']}, {worst['case']}; "
        "left apart as zero on both sides, below 1e-6 of the largest gradient: "
        f"{', '.join(f'`{z}`' for z in zeros) or 'none'}). Labels: % of pixels (pairs, for "
        "affinity) equal. off: the term is not on at that iteration on our side. Colours "
        "'exact': the crops snapped to the colours their uint8 round trip keeps.",
    ]
    return lines


def lr_table(rows: list[dict]) -> list[str]:
    lines = [
        "| iteration | LR per group, theirs | LR per group, ours | equal |",
        "|---|---|---|---|",
    ]
    for r in rows:
        fmt = ", ".join
        lines.append(
            f"| {r['iteration']} | {fmt(f'{v:.6g}' for v in r['theirs'])} "
            f"| {fmt(f'{v:.6g}' for v in r['ours'])} | {'yes' if r['equal'] else 'NO'} |"
        )
    return lines


if __name__ == "__main__":
    sys.exit(main())
