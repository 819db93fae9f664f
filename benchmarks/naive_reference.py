"""A straightforward, unoptimised version of BMP's pseudo labels and test-time augmentation.

This is the yardstick for ``benchmarks/speed.py``: the same maths as :mod:`bmp.modeling`, written
the obvious way, one image at a time:

* every image, scale and flip gets its own forward pass (no batching of the flip with the
  original, no reuse of the training forward for scale 1.0);
* PAR stacks all 48 shifted copies into one ``(C, n, H, W)`` tensor per image and takes the
  standard deviation and the weighted sums over that axis;
* each image refines only its own present classes in its own PAR call, and runs PAR once per
  background threshold.

It is only for measuring. :func:`compare_labels` checks it agrees with the batched version, so a
speed-up is never bought by changing the result.
"""

from __future__ import annotations

import math
from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["naive_par", "naive_pseudo_labels", "naive_tta_logits", "compare_labels"]


def _shifted_stack(x: Tensor, dilations: Sequence[int]) -> Tensor:
    """``(C, H, W)`` -> ``(C, n, H, W)``: the 8-neighbour ring at every dilation, replicate pad."""
    h, w = x.shape[-2:]
    p = max(dilations)
    padded = F.pad(x[None], (p, p, p, p), mode="replicate")[0]
    views = []
    for d in dilations:
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                if dy == 0 and dx == 0:
                    continue
                views.append(padded[:, p + dy * d : p + dy * d + h, p + dx * d : p + dx * d + w])
    return torch.stack(views, dim=1)


def naive_par(
    image: Tensor,
    maps: Tensor,
    dilations: Sequence[int] = (1, 2, 4, 8, 12, 24),
    num_iter: int = 10,
    temperature: float = 0.3,
    pos_weight: float = 0.01,
) -> Tensor:
    """PAR of one image: ``image`` (3, H, W) in [0, 1], ``maps`` (C, h, w) -> (C, H, W)."""
    h, w = image.shape[-2:]
    maps = F.interpolate(maps[None], size=(h, w), mode="bilinear", align_corners=True)[0]
    neigh = _shifted_stack(image, dilations)  # (3, n, H, W)
    std = neigh.std(dim=1, keepdim=True)
    diff = (image[:, None] - neigh).abs() / (std + 1e-8) / temperature
    color = torch.softmax(-(diff**2).mean(dim=0), dim=0)  # (n, H, W)
    dist = []
    for d in dilations:
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                if dy or dx:
                    dist.append(math.hypot(dy * d, dx * d))
    dist_t = torch.tensor(dist, dtype=image.dtype)
    pos = torch.softmax(-((dist_t / (dist_t.std() + 1e-8) / temperature) ** 2), dim=0)
    aff = (color + pos_weight * pos[:, None, None]) / (1 + pos_weight)
    for _ in range(num_iter):
        maps = (_shifted_stack(maps, dilations) * aff[None]).sum(dim=1)
    return maps


def _forward_one(model, x: Tensor) -> Tuple[Tensor, Tensor]:
    out = model._forward_branches(x[None])
    return out.cam_logits[0], out.seg_logits[0]


def _multiscale_one(model, x: Tensor, scales: Sequence[float], flip: bool) -> Tuple[Tensor, Tensor]:
    """Fused CAMs (K, H, W) and segmentation logits (K+1, H, W) of one normalised image."""
    h, w = x.shape[-2:]
    cam_sum, seg_sum = 0.0, 0.0
    for s in scales:
        xs = F.interpolate(x[None], size=(int(h * s), int(w * s)), mode="bilinear")[0]
        cam, seg = _forward_one(model, xs)
        cam = F.interpolate(cam[None], size=(h, w), mode="bilinear")[0]
        seg = F.interpolate(seg[None], size=(h, w), mode="bilinear")[0]
        if flip:
            cam_f, seg_f = _forward_one(model, xs.flip(-1))
            cam_f = F.interpolate(cam_f[None], size=(h, w), mode="bilinear")[0].flip(-1)
            seg_f = F.interpolate(seg_f[None], size=(h, w), mode="bilinear")[0].flip(-1)
            cam, seg = torch.maximum(cam, cam_f), (seg + seg_f) / 2
        cam_sum = cam_sum + F.relu(cam)
        seg_sum = seg_sum + seg
    return cam_sum, seg_sum


def _normalise(x: Tensor) -> Tensor:
    x = x - x.flatten(1).min(dim=1).values[:, None, None]
    return x / (x.flatten(1).max(dim=1).values[:, None, None] + 1e-5)


@torch.no_grad()
def naive_pseudo_labels(model, inputs: List[dict], with_bsp: bool = True) -> Dict[str, Tensor]:
    """PAR (two-threshold) and BSP labels of a training batch, one image at a time.

    Uses the model's settings (scales, thresholds, PAR parameters). Returns ``{"par", "bsp"}``
    label maps ``(B, H, W)``.
    """
    par_cfg = dict(
        dilations=model.par.dilations,
        num_iter=model.par.num_iter,
        temperature=model.par.color_temperature,
        pos_weight=model.par.pos_weight,
    )
    ignore = model.ignore_value
    out: Dict[str, List[Tensor]] = {"par": [], "bsp": []}
    for d in inputs:
        image = d["image"].float()
        x = (image - model.pixel_mean) / model.pixel_std
        h, w = x.shape[-2:]
        cams, segs = _multiscale_one(model, x, model.pseudo_scales, model.pseudo_flip)
        cams, segs = _normalise(cams), _normalise(segs)
        present = torch.nonzero(d["cls_label"] > 0).flatten()
        valid = d.get("valid_mask", torch.ones(h, w, dtype=torch.bool))
        size = (int(h * model.refine_scale), int(w * model.refine_scale))
        small_img = F.interpolate(image[None] / 255.0, size=size, mode="bilinear")[0]
        small_cam = F.interpolate(cams[present][None], size=size, mode="bilinear")[0]
        ids = torch.cat([torch.zeros(1, dtype=torch.long), present + 1])

        def refine(maps: Tensor) -> Tensor:
            r = naive_par(small_img, maps, **par_cfg)
            return F.interpolate(r[None], size=(h, w), mode="bilinear")[0]

        high, low = [
            ids[
                refine(
                    torch.softmax(torch.cat([torch.full((1, *size), t), small_cam], dim=0), dim=0)
                ).argmax(dim=0)
            ]
            for t in (model.bg_thresh_high, model.bg_thresh_low)
        ]
        label = high.clone()
        label[high == 0] = ignore
        label[(high == 0) & (low == 0)] = 0
        label[~valid] = ignore
        out["par"].append(label)
        if with_bsp:
            scores = torch.cat([segs[:1], cams[present]], dim=0)
            refined = refine(F.interpolate(scores[None], size=size, mode="bilinear")[0])
            best, slot = refined.max(dim=0)
            label = ids[slot]
            label[(best < model.sigma_c) | ~valid] = ignore
            out["bsp"].append(label)
    return {k: torch.stack(v) for k, v in out.items() if v}


@torch.no_grad()
def naive_tta_logits(model, image: Tensor, scales: Sequence[float], flip: bool) -> Tensor:
    """Multi-scale + flip segmentation logits of one uint8 image: one forward per scale/flip."""
    x = (image.float() - model.pixel_mean) / model.pixel_std
    h, w = x.shape[-2:]
    fused = []
    for s in scales:
        xs = F.interpolate(x[None], size=(int(h * s), int(w * s)), mode="bilinear")[0]
        seg = _forward_one(model, xs)[1]
        if flip:
            seg = (seg + _forward_one(model, xs.flip(-1))[1].flip(-1)) / 2
        fused.append(F.interpolate(seg[None], size=(h, w), mode="bilinear")[0])
    return torch.stack(fused).amax(dim=0)


def compare_labels(a: Tensor, b: Tensor) -> float:
    """Fraction of pixels where two label maps agree (1.0 = identical)."""
    return float((a == b).float().mean())
