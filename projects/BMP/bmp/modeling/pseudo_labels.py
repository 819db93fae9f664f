"""Pseudo labels of BMP, built each training iteration without gradient.

Label maps use the project's convention: 0 = background, k = class k (1..K), ``ignore_index`` =
not supervised. CAM tensors have K channels (channel k-1 = class k); ``cls_label`` is the (B, K)
multi-hot image label.

PAR-based labels only ever keep background and the classes present in the image. Instead of
refining each image's own subset in a Python loop (as the authors do), the present channels of
every image are gathered into ``M = 1 + max present classes`` slots, present first in class
order; the unused slots of images with fewer classes are masked out (probability 0), so they can
never win an argmax and the whole batch is refined in one PAR call.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .par import PAR

__all__ = [
    "par_pseudo_labels", "bsp_pseudo_labels", "cam_seed_labels", "s2c_labels", "affinity_labels",
    "Refinement", "AffinityCache", "valid_boxes",
    "BG_SCORES", "SIGMA_C", "SIGMA_S", "CAM_BG", "REFINE_SCALE", "AFF_RADIUS", "IGNORE_INDEX",
]  # fmt: skip


# The authors' values: the defaults of the functions below and of the pseudo-labeller's
# ``LabelThresholds`` (``MODEL.BMP.*`` keys set them in a config).
BG_SCORES = (0.55, 0.35)  # constant background scores of the (high, low) PAR runs
SIGMA_C = 0.5  # BSP's confidence threshold on the refined maps
SIGMA_S = 0.75  # s2c's threshold on the segmentation logits
CAM_BG = 0.55  # background score of the raw CAM seed
REFINE_SCALE = 0.5  # PAR's resolution as a fraction of the input
AFF_RADIUS = 8  # how far apart affinity pairs may be, in attention grid cells
IGNORE_INDEX = 255  # the label of unsupervised pixels


def _err(where: str, msg: str) -> ValueError:
    return ValueError(f"bmp.modeling.pseudo_labels.{where}: {msg}")


def _check_common(
    where: str, cams: Tensor, cls_label: Tensor, valid_mask: Tensor, image: Tensor | None = None
) -> Tensor:
    """Shape checks shared by the label functions; returns ``valid_mask`` as bool."""
    if cams.dim() != 4:
        raise _err(where, f"cams must be (B, K, H, W), got {tuple(cams.shape)}")
    b, k, h, w = cams.shape
    if tuple(cls_label.shape) != (b, k):
        raise _err(
            where,
            f"cls_label must be the (B, K) = {(b, k)} multi-hot image label, got "
            f"{tuple(cls_label.shape)}",
        )
    if tuple(valid_mask.shape) != (b, h, w):
        raise _err(
            where, f"valid_mask must be (B, H, W) = {(b, h, w)}, got {tuple(valid_mask.shape)}"
        )
    if image is not None:
        if tuple(image.shape) != (b, 3, h, w):
            raise _err(
                where, f"image must be (B, 3, H, W) = {(b, 3, h, w)}, got {tuple(image.shape)}"
            )
        if not image.is_floating_point():
            raise _err(where, f"image must be float RGB in [0, 1], got {image.dtype}")
    return valid_mask if valid_mask.dtype == torch.bool else valid_mask != 0


def _present_slots(cls_label: Tensor, m: int | None = None) -> tuple[Tensor, Tensor]:
    """Channel ids (0 = bg, k = class k) of background + present classes, padded to M slots.

    Returns ``(ids, used)``, both ``(B, M)``: ``ids`` lists each image's present channels first in
    ascending order (slot 0 is always background); ``used`` is False on padding slots. ``m`` is
    M when the caller knows it (one more than the most classes in an image); else it is read from
    ``cls_label``, which waits for the device.
    """
    present = torch.cat([torch.ones_like(cls_label[:, :1], dtype=torch.bool), cls_label > 0], dim=1)
    # A stable sort of "absent" flags puts present channels first and keeps them in order.
    order = torch.argsort((~present).to(torch.uint8), dim=1, stable=True)
    if m is None:
        m = int(present.sum(dim=1).max())
    ids = order[:, :m]
    return ids, present.gather(1, ids)


def _gather_slots(cams: Tensor, ids: Tensor) -> Tensor:
    """CAM channels for the slots (slot holding background gets a placeholder copy)."""
    b, _, h, w = cams.shape
    cam_ids = (ids - 1).clamp(min=0)
    return cams.gather(1, cam_ids[:, :, None, None].expand(b, ids.shape[1], h, w))


def _refine_size(h: int, w: int, refine_scale: float) -> tuple[int, int]:
    if not 0 < refine_scale <= 1:
        raise ValueError(
            f"bmp.modeling.pseudo_labels: refine_scale (MODEL.BMP.PSEUDO.REFINE_SCALE) must be in "
            f"(0, 1], got {refine_scale}"
        )
    # Floor, as the authors' h // 2.
    return max(1, int(h * refine_scale)), max(1, int(w * refine_scale))


def _resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


AffinityCache = dict[tuple, Tensor]


@dataclass
class Refinement:
    """What the PAR and BSP labels of a batch are refined along.

    ``image``: ``(B, 3, H, W)`` RGB in [0, 1]; ``valid_mask``: ``(B, H, W)``, False on padding;
    ``par``: the PAR module; ``scale``: PAR's resolution as a fraction of the input;
    ``ignore_index``: the label of unsupervised pixels; ``cache``: one dict per batch, or None.
    The PAR and BSP labels refine the same images at the same size, so their colour affinity is
    the same, and it costs as much as the propagation: with a cache it is computed once.
    ``num_slots`` and ``boxes``: what :class:`~bmp.modeling.structures.Batch` knows on the host
    (the labels' slot count, the boxes of real pixels), or None to compute them from the tensors.
    """

    image: Tensor
    valid_mask: Tensor
    par: PAR
    scale: float = REFINE_SCALE
    ignore_index: int = IGNORE_INDEX
    cache: AffinityCache | None = None
    num_slots: int | None = None
    boxes: list[tuple[int, int, int, int] | None] | None = None

    def refine(self, image: Tensor, maps: Tensor, key: tuple) -> Tensor:
        """``par(image, maps)`` for a resized or cropped ``image``, reusing the affinity cached
        under ``key`` (batch indices and crop box) and the image size."""
        image = image.detach().float()
        if self.cache is None:
            return self.par(image, maps)
        key = (*key, tuple(image.shape))
        if key not in self.cache:
            self.cache[key] = self.par.affinity(image)
        return self.par(image, maps, affinity=self.cache[key])


def _slots_to_labels(slot: Tensor, ids: Tensor) -> Tensor:
    """Map per-pixel slot indices ``(B, H, W)`` back to channel ids 0..K."""
    b = slot.shape[0]
    return ids.gather(1, slot.reshape(b, -1)).view_as(slot)


@torch.no_grad()
def par_pseudo_labels(
    cams: Tensor,
    cls_label: Tensor,
    along: Refinement,
    bg_scores: tuple[float, float] = BG_SCORES,
) -> Tensor:
    """PAR-refined CAM labels with the two-threshold background rule: ``(B, H, W)``.

    Both background thresholds are refined in one PAR call: the two runs are stacked along the
    channels, so the colour affinity is computed once. Order of operations as the authors: the
    CAMs are resized to the refine resolution, then the background channel is appended and the
    softmax over background + present classes taken, then PAR runs on the resized image, and the
    refined maps are resized back for the argmax. Where the high-threshold run says background the
    label is ignored, unless the low-threshold run says background too; padding is ignored.
    ``bg_scores`` are the (high, low) constant background scores.
    """
    valid = _check_common("par_pseudo_labels", cams, cls_label, along.valid_mask, along.image)
    b, _, h, w = cams.shape
    size = _refine_size(h, w, along.scale)
    ids, used = _present_slots(cls_label, along.num_slots)
    scores = _resize(_gather_slots(cams.detach().float(), ids), size)
    scores = scores.masked_fill(~used[:, :, None, None], float("-inf"))
    runs = []
    for thresh in bg_scores:
        run = scores.clone()
        run[:, 0] = thresh  # slot 0 is background in every image
        runs.append(torch.softmax(run, dim=1))
    m = ids.shape[1]
    key = (tuple(range(b)), (0, h, 0, w))
    refined = along.refine(_resize(along.image, size), torch.cat(runs, dim=1), key)
    refined = _resize(refined, (h, w))
    # max(dim=1).indices, not argmax(dim=1): same first-maximum rule, ~6x faster on CPU for a
    # reduction over a non-innermost dimension.
    label_high = _slots_to_labels(refined[:, :m].max(dim=1).indices, ids)
    label_low = _slots_to_labels(refined[:, m:].max(dim=1).indices, ids)
    labels = label_high.masked_fill(label_high == 0, along.ignore_index)
    labels = labels.masked_fill((label_high == 0) & (label_low == 0), 0)
    return labels.masked_fill(~valid, along.ignore_index)


def valid_boxes(valid_mask: Tensor) -> list[tuple[int, int, int, int] | None]:
    """Per image, the ``(y0, y1, x0, x1)`` bounding box of its real (non-padded) pixels.

    Crop padding surrounds a rectangle of real pixels, so the box is that rectangle (the authors'
    ``img_box``). ``None`` for an image without a single real pixel.
    """
    rows, cols = valid_mask.any(dim=2), valid_mask.any(dim=1)
    boxes: list[tuple[int, int, int, int] | None] = []
    for r, c in zip(rows, cols):
        ys, xs = r.nonzero()[:, 0], c.nonzero()[:, 0]
        if len(ys) == 0:
            boxes.append(None)
        else:
            boxes.append((int(ys[0]), int(ys[-1]) + 1, int(xs[0]), int(xs[-1]) + 1))
    return boxes


@torch.no_grad()
def bsp_pseudo_labels(
    seg_bg: Tensor,
    cams: Tensor,
    cls_label: Tensor,
    along: Refinement,
    sigma_c: float = SIGMA_C,
) -> Tensor:
    """Background-aware propagation labels: ``(B, H, W)``.

    The segmentation branch's normalised background replaces the constant background of the PAR
    labels, so background comes from what the segmentation branch has learnt. Channels are
    background + present classes without softmax. As in the authors' code each image is cut to
    the box of its real pixels (:func:`valid_boxes`) before refining: the image crop is resized to
    ``along.scale`` of the box, the maps go to PAR at full resolution (PAR resizes them with
    ``align_corners=True``), and the refined maps come back to the box size. Pixels whose winning
    refined score is below ``sigma_c`` are ignored, as is everything outside the box. ``sigma_c``
    is compared with PAR's output as it is, so it depends on ``par.normalize`` (see
    :mod:`bmp.modeling.par`). Images that share a box are refined in one batched call.
    """
    valid = _check_common("bsp_pseudo_labels", cams, cls_label, along.valid_mask, along.image)
    b, _, h, w = cams.shape
    if tuple(seg_bg.shape) != (b, 1, h, w):
        raise _err(
            "bsp_pseudo_labels",
            f"seg_bg must be the (B, 1, H, W) = {(b, 1, h, w)} normalised background channel, "
            f"got {tuple(seg_bg.shape)}",
        )
    _refine_size(h, w, along.scale)  # validates the scale before any work
    ids, used = _present_slots(cls_label, along.num_slots)
    scores = _gather_slots(cams.detach().float(), ids)
    scores[:, :1] = seg_bg.detach()
    scores = scores.masked_fill(~used[:, :, None, None], 0.0)
    image, ignore_index = along.image.detach().float(), along.ignore_index
    labels = torch.full((b, h, w), ignore_index, dtype=torch.long, device=cams.device)
    groups: dict[tuple[int, int, int, int], list[int]] = {}
    for i, box in enumerate(valid_boxes(valid) if along.boxes is None else along.boxes):
        if box is not None:
            groups.setdefault(box, []).append(i)
    for (y0, y1, x0, x1), members in groups.items():
        idx = torch.tensor(members, device=cams.device)
        box_size = (y1 - y0, x1 - x0)
        small = _resize(image[idx, :, y0:y1, x0:x1], _refine_size(*box_size, along.scale))
        maps = scores[idx, :, y0:y1, x0:x1]
        refined = along.refine(small, maps, (tuple(members), (y0, y1, x0, x1)))
        refined = _resize(refined, box_size)
        best, slot = refined.max(dim=1)
        box_labels = _slots_to_labels(slot, ids[idx])
        labels[idx, y0:y1, x0:x1] = box_labels.masked_fill(best < sigma_c, ignore_index)
    return labels.masked_fill(~valid, ignore_index)


@torch.no_grad()
def cam_seed_labels(
    cams: Tensor,
    cls_label: Tensor,
    valid_mask: Tensor,
    bg_thresh: float = CAM_BG,
    ignore_index: int = IGNORE_INDEX,
) -> Tensor:
    """Raw CAM seeds for seed evaluation: argmax over [constant ``bg_thresh``, present CAMs].

    A class wins only where its normalised CAM is strictly above ``bg_thresh`` (ties go to
    background, as an argmax with background first does). Padding is ignored.
    """
    valid = _check_common("cam_seed_labels", cams, cls_label, valid_mask)
    absent = (cls_label <= 0)[:, :, None, None]
    best, cls = cams.detach().masked_fill(absent, float("-inf")).max(dim=1)
    labels = torch.where(best > bg_thresh, cls + 1, torch.zeros_like(cls))
    return labels.masked_fill(~valid, ignore_index)


@torch.no_grad()
def s2c_labels(
    seg_logits: Tensor,
    valid_mask: Tensor,
    sigma_s: float = SIGMA_S,
    ignore_index: int = IGNORE_INDEX,
) -> Tensor:
    """Segmentation-to-classification targets Y_s - 1: ``(B, H, W)`` in 0..K-1.

    Only confident foreground supervises the CAMs: pixels whose max segmentation *logit* is below
    ``sigma_s``, background pixels and padding are ignored. Values index CAM channels.
    """
    if seg_logits.dim() != 4:
        raise _err(
            "s2c_labels", f"seg_logits must be (B, K+1, H, W), got {tuple(seg_logits.shape)}"
        )
    b, _, h, w = seg_logits.shape
    if tuple(valid_mask.shape) != (b, h, w):
        raise _err(
            "s2c_labels",
            f"valid_mask must be (B, H, W) = {(b, h, w)}, got {tuple(valid_mask.shape)}",
        )
    valid = valid_mask if valid_mask.dtype == torch.bool else valid_mask != 0
    best, cls = seg_logits.detach().max(dim=1)
    return (cls - 1).masked_fill((best < sigma_s) | (cls == 0) | ~valid, ignore_index)


_RADIUS_CACHE: dict[tuple[int, int, int, str], Tensor] = {}


def _outside_radius(h: int, w: int, radius: int, device: torch.device) -> Tensor:
    """(h*w, h*w) bool: True where two pixels are farther than ``radius`` in a square window."""
    key = (h, w, radius, str(device))
    mask = _RADIUS_CACHE.get(key)
    if mask is None:
        pos = torch.arange(h * w, device=device)
        ys, xs = pos // w, pos % w
        mask = ((ys[:, None] - ys[None, :]).abs() > radius) | (
            (xs[:, None] - xs[None, :]).abs() > radius
        )
        if len(_RADIUS_CACHE) > 16:  # sizes vary only with the crop; keep the cache small
            _RADIUS_CACHE.clear()
        _RADIUS_CACHE[key] = mask
    return mask


@torch.no_grad()
def affinity_labels(
    labels: Tensor,
    size: tuple[int, int],
    radius: int = AFF_RADIUS,
    ignore_index: int = IGNORE_INDEX,
) -> Tensor:
    """Pairwise affinity targets at the attention resolution: ``(B, h*w, h*w)``.

    ``labels`` ``(B, H, W)`` are resized to ``size`` with nearest sampling; a pair is 1 when both
    pixels have the same label, 0 when they differ, and ``ignore_index`` when either pixel is
    ignored or the pair is more than ``radius`` apart along y or x. Pixels are in row-major order
    (``flatten`` of an ``(h, w)`` map). uint8 when ``ignore_index`` fits, else int64.
    """
    if labels.dim() != 3:
        raise _err("affinity_labels", f"labels must be (B, H, W), got {tuple(labels.shape)}")
    if len(size) != 2 or min(size) <= 0:
        raise _err("affinity_labels", f"size must be (h, w) > 0, got {size}")
    if radius < 0:
        raise _err(
            "affinity_labels", f"radius (MODEL.BMP.AFFINITY.RADIUS) must be >= 0, got {radius}"
        )
    if ignore_index in (0, 1):
        raise _err("affinity_labels", "ignore_index must differ from the pair values 0 and 1")
    h, w = int(size[0]), int(size[1])
    small = labels
    if tuple(labels.shape[-2:]) != (h, w):
        small = F.interpolate(labels[:, None].float(), size=(h, w), mode="nearest")[:, 0]
    flat = small.reshape(small.shape[0], -1).long()
    dtype = torch.uint8 if 1 < ignore_index < 256 else torch.long
    same = (flat[:, :, None] == flat[:, None, :]).to(dtype)
    ignored = flat == ignore_index
    drop = ignored[:, :, None] | ignored[:, None, :] | _outside_radius(h, w, radius, flat.device)
    return same.masked_fill_(drop, ignore_index)
