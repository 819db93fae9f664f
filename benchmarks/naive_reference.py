"""A straightforward, unoptimised version of BMP's pseudo labels and test-time augmentation.

This is the yardstick for ``benchmarks/speed.py``: the same maths as :mod:`bmp.modeling`, written
the obvious way, one image at a time, through the model's public parts only
(:meth:`BMP.forward_branches` and the settings of ``model.pseudo_labeller``):

* every image, scale and flip gets its own forward pass (no batching of the flip with the
  original, no reuse of the training forward for scale 1.0);
* PAR stacks all 48 shifted copies into one ``(C, n, H, W)`` tensor per image and takes the
  standard deviation and the weighted sums over that axis;
* each image refines only its own present classes in its own PAR call, and runs PAR once per
  background threshold.

It follows the model's resizing step by step, because bilinear resizes do not compose: each
pass's logits go to that pass's input size and then to the image size; BSP refines each image
inside the box of its real pixels and hands PAR the maps at full resolution (PAR resizes them
with ``align_corners=True``). It is only for measuring: :func:`compare_labels` checks it agrees
with the batched version, so a speed-up is never bought by changing the result.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["naive_par", "naive_pseudo_labels", "naive_tta_logits", "compare_labels"]


def _ring(dilations: Sequence[int]) -> list[tuple[int, int]]:
    return [
        (dy * d, dx * d) for d in dilations for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx
    ]


def _shifted_stack(x: Tensor, dilations: Sequence[int]) -> Tensor:
    """``(C, H, W)`` -> ``(C, n, H, W)``: the 8-neighbour ring at every dilation, replicate pad."""
    h, w = x.shape[-2:]
    p = max(dilations)
    padded = F.pad(x[None], (p, p, p, p), mode="replicate")[0]
    views = [padded[:, p + dy : p + dy + h, p + dx : p + dx + w] for dy, dx in _ring(dilations)]
    return torch.stack(views, dim=1)


def naive_par(image: Tensor, maps: Tensor, par) -> Tensor:
    """PAR of one image with the settings of ``par`` (a :class:`bmp.modeling.par.PAR`).

    ``image`` (3, H, W) in [0, 1], ``maps`` (C, h, w) -> (C, H, W). The weights sum to
    ``1 + pos_weight`` unless ``par.normalize``, as in the model.
    """
    h, w = image.shape[-2:]
    maps = F.interpolate(maps[None], size=(h, w), mode="bilinear", align_corners=True)[0]
    neigh = _shifted_stack(image, par.dilations)  # (3, n, H, W)
    std = neigh.std(dim=1, keepdim=True)
    diff = (image[:, None] - neigh).abs() / (std + 1e-8) / par.color_temperature
    color = torch.softmax(-(diff**2).mean(dim=0), dim=0)  # (n, H, W)
    dist = torch.tensor(
        [math.hypot(dy, dx) for dy, dx in _ring(par.dilations)], dtype=torch.float64
    )
    pos = torch.softmax(-((dist / (dist.std() + 1e-8) / par.color_temperature) ** 2), dim=0)
    aff = color + par.pos_weight * pos.to(image)[:, None, None]
    if par.normalize:
        aff = aff / (1 + par.pos_weight)
    for _ in range(par.num_iter):
        maps = (_shifted_stack(maps, par.dilations) * aff[None]).sum(dim=1)
    return maps


def _resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x[None], size=size, mode="bilinear", align_corners=False)[0]


def _forward_one(model, x: Tensor) -> tuple[Tensor, Tensor]:
    """CAM and segmentation logits of one normalised image, at that image's size."""
    out = model.forward_branches(x[None])
    size = tuple(x.shape[-2:])
    return _resize(out.cam_logits[0], size), _resize(out.seg_logits[0], size)


def _multiscale_one(model, x: Tensor, scales: Sequence[float], flip: bool) -> tuple[Tensor, Tensor]:
    """Fused CAMs (K, H, W) and segmentation logits (K+1, H, W) of one normalised image."""
    h, w = x.shape[-2:]
    cam_sum, seg_sum = 0.0, 0.0
    for s in scales:
        xs = _resize(x, (int(h * s), int(w * s)))
        cam, seg = (_resize(t, (h, w)) for t in _forward_one(model, xs))
        if flip:
            cam_f, seg_f = (_resize(t, (h, w)).flip(-1) for t in _forward_one(model, xs.flip(-1)))
            cam, seg = torch.maximum(cam, cam_f), (seg + seg_f) / 2
        cam_sum = cam_sum + F.relu(cam.float())
        seg_sum = seg_sum + seg.float()
    return cam_sum, seg_sum


def _normalise(x: Tensor) -> Tensor:
    x = x - x.flatten(1).min(dim=1).values[:, None, None]
    return x / (x.flatten(1).max(dim=1).values[:, None, None] + 1e-5)


def _par_label(labeller, image01: Tensor, cams: Tensor, ids: Tensor, valid: Tensor) -> Tensor:
    """Two-threshold PAR label of one image: ignore where only the high threshold says bg."""
    h, w = cams.shape[-2:]
    size = (
        max(1, int(h * labeller.thresholds.refine_scale)),
        max(1, int(w * labeller.thresholds.refine_scale)),
    )
    small_img, small_cam = _resize(image01, size), _resize(cams[ids[1:] - 1], size)
    high, low = (
        ids[
            _resize(
                naive_par(
                    small_img,
                    torch.softmax(torch.cat([small_cam.new_full((1, *size), t), small_cam]), dim=0),
                    labeller.par,
                ),
                (h, w),
            ).argmax(dim=0)
        ]
        for t in (labeller.thresholds.bg_high, labeller.thresholds.bg_low)
    )
    label = high.clone()
    label[high == 0] = labeller.thresholds.ignore_value
    label[(high == 0) & (low == 0)] = 0
    label[~valid] = labeller.thresholds.ignore_value
    return label


def _bsp_label(
    labeller, image01: Tensor, cams: Tensor, segs: Tensor, ids: Tensor, valid: Tensor
) -> Tensor:
    """BSP label of one image, refined inside the box of its real pixels."""
    ignore = labeller.thresholds.ignore_value
    label = torch.full(valid.shape, ignore, dtype=torch.long, device=valid.device)
    if not valid.any():
        return label
    ys, xs = valid.any(dim=1).nonzero()[:, 0], valid.any(dim=0).nonzero()[:, 0]
    y0, y1, x0, x1 = int(ys[0]), int(ys[-1]) + 1, int(xs[0]), int(xs[-1]) + 1
    bh, bw = y1 - y0, x1 - x0
    size = (
        max(1, int(bh * labeller.thresholds.refine_scale)),
        max(1, int(bw * labeller.thresholds.refine_scale)),
    )
    scores = torch.cat([segs[:1], cams[ids[1:] - 1]])[:, y0:y1, x0:x1]
    refined = _resize(
        naive_par(_resize(image01[:, y0:y1, x0:x1], size), scores, labeller.par), (bh, bw)
    )
    best, slot = refined.max(dim=0)
    box = ids[slot]
    box[best < labeller.thresholds.sigma_c] = ignore
    label[y0:y1, x0:x1] = box
    label[~valid] = ignore
    return label


@torch.no_grad()
def naive_pseudo_labels(model, inputs: list[dict], with_bsp: bool = True) -> dict[str, Tensor]:
    """PAR (two-threshold) and BSP labels of a training batch, one image at a time.

    Uses the settings of ``model.pseudo_labeller`` (scales, flip, thresholds, PAR). Inputs must
    share one size (no padding to reproduce). Returns ``{"par", "bsp"}`` label maps ``(B, H, W)``.
    """
    labeller = model.pseudo_labeller
    out: dict[str, list[Tensor]] = {"par": [], "bsp": []}
    for d in inputs:
        image = d["image"].float()
        x = (image - model.pixel_mean) / model.pixel_std
        cams, segs = _multiscale_one(model, x, labeller.scales, labeller.flip)
        cams, segs = _normalise(cams), _normalise(segs)
        present = torch.nonzero(d["cls_label"] > 0).flatten().to(x.device)
        ids = torch.cat([present.new_zeros(1), present + 1])
        valid = d["valid_mask"].bool() if "valid_mask" in d else torch.ones_like(x[0], dtype=bool)
        out["par"].append(_par_label(labeller, image / 255.0, cams, ids, valid))
        if with_bsp:
            out["bsp"].append(_bsp_label(labeller, image / 255.0, cams, segs, ids, valid))
    return {k: torch.stack(v) for k, v in out.items() if v}


@torch.no_grad()
def naive_tta_logits(model, image: Tensor, scales: Sequence[float], flip: bool) -> Tensor:
    """Multi-scale + flip segmentation logits of one uint8 image: one forward per scale/flip.

    Scaled inputs use ``scale_factor`` resizing, as the test-time wrapper does.
    """
    x = (image.float() - model.pixel_mean) / model.pixel_std
    h, w = x.shape[-2:]
    fused = []
    for s in scales:
        xs = x if s == 1.0 else F.interpolate(x[None], scale_factor=s, mode="bilinear")[0]
        seg = _forward_one(model, xs)[1]
        if flip:
            seg = (seg + _forward_one(model, xs.flip(-1))[1].flip(-1)) / 2
        fused.append(_resize(seg.float(), (h, w)))
    return torch.stack(fused).amax(dim=0)


def compare_labels(a: Tensor, b: Tensor) -> float:
    """Fraction of pixels where two label maps agree (1.0 = identical)."""
    return float((a.cpu() == b.cpu()).float().mean())
