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
import importlib
import importlib.util
import json
import os
import re
import sys
import types
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))

from convert_bmp_official import (  # noqa: E402
    OUR_UNUSED,
    official_to_bmp_d2,
    strip_module_prefix,
)

from bmp.config import load_config  # noqa: E402
from bmp.data.image_io import read_image_rgb  # noqa: E402
from bmp.modeling import with_test_time_augmentation  # noqa: E402

DEFAULT_COCO_MINI = REPO.parent / "shared" / "data" / "coco_mini"
DEFAULT_STEMS = ("000000000139", "000000192699")
IGNORE = 255


# ----------------------------------------------------------------------------- their code


class _ConvModuleStandIn(nn.Module):
    """conv (no bias) -> BatchNorm2d -> ReLU, with mmcv's parameter names ``conv`` and ``bn``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, **_: object):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.activate = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activate(self.bn(self.conv(x)))


def _refuse(*_: object, **__: object) -> None:
    raise RuntimeError("pydensecrf stand-in: the CRF is not part of this comparison")


def _install_stand_ins() -> list[str]:
    """Register modules their code imports but this comparison does not need."""
    installed = []

    def missing(name: str) -> bool:
        try:
            return importlib.util.find_spec(name) is None
        except (ImportError, ValueError):
            return True

    if missing("mmcv"):
        mmcv = types.ModuleType("mmcv")
        cnn = types.ModuleType("mmcv.cnn")
        cnn.ConvModule = _ConvModuleStandIn
        mmcv.cnn = cnn
        sys.modules.update({"mmcv": mmcv, "mmcv.cnn": cnn})
        installed.append("mmcv.cnn.ConvModule")
    if missing("pydensecrf"):
        root = types.ModuleType("pydensecrf")
        dense = types.ModuleType("pydensecrf.densecrf")
        utils = types.ModuleType("pydensecrf.utils")
        dense.DenseCRF2D = _refuse
        utils.unary_from_softmax = utils.unary_from_labels = _refuse
        root.densecrf, root.utils = dense, utils
        sys.modules.update(
            {"pydensecrf": root, "pydensecrf.densecrf": dense, "pydensecrf.utils": utils}
        )
        installed.append("pydensecrf")
    if missing("imageio"):
        imageio = types.ModuleType("imageio")
        imageio.imread = imageio.imsave = _refuse
        sys.modules["imageio"] = imageio
        installed.append("imageio")
    return installed


def import_official(path: Path) -> SimpleNamespace:
    """Import their model, PAR and label functions from a checkout at ``path``."""
    if not (path / "libs" / "model.py").is_file() or not (path / "utils" / "camutils.py").is_file():
        raise SystemExit(
            f"error: {path} does not look like a BMP-WSSS checkout (no libs/model.py or "
            "utils/camutils.py); pass the repository root with --official"
        )
    stand_ins = _install_stand_ins()
    for name in list(sys.modules):  # a different 'utils' or 'libs' package must not shadow theirs
        if name in ("libs", "utils") or name.startswith(("libs.", "utils.")):
            del sys.modules[name]
    sys.path.insert(0, str(path))
    try:
        model = importlib.import_module("libs.model")
        par = importlib.import_module("libs.PAR")
        camutils = importlib.import_module("utils.camutils")
        imutils = importlib.import_module("utils.imutils")
        spec = importlib.util.spec_from_file_location(
            "_bmp_official_transforms", path / "datasets" / "transforms.py"
        )
        transforms = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(transforms)
    finally:
        sys.path.remove(str(path))
    return SimpleNamespace(
        model=model,
        par=par,
        camutils=camutils,
        imutils=imutils,
        transforms=transforms,
        stand_ins=stand_ins,
    )


# ------------------------------------------------------------------------------- the models


def build_theirs(official: SimpleNamespace, checkpoint: str | None, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    model = official.model.BMP(
        "mit_b1", num_classes=21, embedding_dim=256, stride=[4, 2, 2, 1], pooling="gmp"
    )
    if checkpoint:
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)
        if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
            state = state["model"]
        model.load_state_dict(strip_module_prefix(state), strict=True)
    else:
        # Random weights, but BatchNorm statistics that are not the identity, so the decoder's
        # BatchNorm conversion is exercised too.
        gen = torch.Generator().manual_seed(seed)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
    return model.eval()


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
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    parser.add_argument("--config", default=str(REPO / "configs/voc/bmp_mit_b1_512_20k.yaml"))
    parser.add_argument("--size", type=int, default=320, help="crop size (their default: 320)")
    parser.add_argument("--images", nargs="*", help="photos (default: two coco_mini photos)")
    parser.add_argument("--labels", nargs="*", help='class ids per photo, e.g. "15" "7 12"')
    parser.add_argument(
        "--coco-mini", type=Path, default=Path(os.environ.get("BMP_COCO_MINI", DEFAULT_COCO_MINI))
    )
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)

    torch.set_grad_enabled(False)
    official = import_official(args.official.resolve())
    if official.stand_ins:
        print(f"stand-ins for modules missing here: {', '.join(official.stand_ins)}")
    theirs_model = build_theirs(official, args.checkpoint, args.seed)
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


if __name__ == "__main__":
    sys.exit(main())
