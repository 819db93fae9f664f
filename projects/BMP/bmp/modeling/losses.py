"""Losses of BMP.

Every per-pixel loss averages over the supervised (non-ignored) pixels and is exactly 0 -- not
NaN -- when none is supervised, while staying connected to the graph, so a batch whose pseudo
labels are all ignored still runs backward and DDP still sees every parameter used.

Every loss computes in float32 whatever its inputs' dtype (half inputs are cast first): counts
and sums over a crop-512 batch do not fit float16 (see :mod:`bmp.modeling.precision`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["classification_loss", "c2s_loss", "s2c_loss", "affinity_loss"]

_C2S_MODES = ("mlsm", "ce")
_S2C_MODES = ("ce", "mlsm")


def _err(where: str, msg: str) -> ValueError:
    return ValueError(f"bmp.modeling.losses.{where}: {msg}")


def classification_loss(logits: Tensor, cls_label: Tensor) -> Tensor:
    """Multi-label soft-margin loss of the image logits ``(B, K)`` against the multi-hot label."""
    if logits.dim() != 2 or logits.shape != cls_label.shape:
        raise _err(
            "classification_loss",
            f"logits and cls_label must both be (B, K), got {tuple(logits.shape)} and "
            f"{tuple(cls_label.shape)}",
        )
    return F.multilabel_soft_margin_loss(logits.float(), cls_label.float())


def _check_dense(where: str, logits: Tensor, labels: Tensor) -> None:
    if logits.dim() != 4:
        raise _err(where, f"logits must be (B, C, H, W), got {tuple(logits.shape)}")
    b, _, h, w = logits.shape
    if tuple(labels.shape) != (b, h, w):
        raise _err(
            where,
            f"labels must be (B, H, W) = {(b, h, w)} like the logits (resize one of them first), "
            f"got {tuple(labels.shape)}",
        )


def _masked_mean(per_pixel: Tensor, valid: Tensor) -> Tensor:
    """Mean of ``per_pixel`` over ``valid``; 0 with a gradient path when nothing is valid."""
    per_pixel = per_pixel.float()
    total = torch.where(valid, per_pixel, torch.zeros_like(per_pixel)).sum()
    return total / valid.sum().clamp(min=1).float()


def _soft_margin_per_pixel(logits: Tensor, target: Tensor) -> Tensor:
    """Mean over channels of the binary soft-margin terms against the one-hot of ``target``.

    Uses sum_c softplus(x_c) - x_target, which equals the per-channel binary cross-entropy
    with logits summed over channels without materialising a (B, C, H, W) one-hot.
    """
    picked = logits.gather(1, target.unsqueeze(1)).squeeze(1)
    return (F.softplus(logits).sum(dim=1) - picked) / logits.shape[1]


def _dense_loss(where: str, logits: Tensor, labels: Tensor, mode: str, ignore_index: int) -> Tensor:
    _check_dense(where, logits, labels)
    logits, labels = logits.float(), labels.long()
    valid = labels != ignore_index
    target = labels.masked_fill(~valid, 0)
    if mode == "ce":
        per_pixel = F.cross_entropy(logits, target, reduction="none")
    else:
        per_pixel = _soft_margin_per_pixel(logits, target)
    return _masked_mean(per_pixel, valid)


def c2s_loss(
    seg_logits: Tensor, labels: Tensor, mode: str = "mlsm", ignore_index: int = 255
) -> Tensor:
    """Classification-to-segmentation loss on the segmentation logits ``(B, K+1, H, W)``.

    ``labels`` are the refined CAM pseudo labels Y_c in 0..K or ``ignore_index``. ``"mlsm"`` (the
    authors') is the per-pixel multi-label soft-margin loss against the one-hot label (mean over
    the K+1 channels, then over supervised pixels); ``"ce"`` is cross-entropy.
    """
    if mode not in _C2S_MODES:
        raise _err(
            "c2s_loss", f"mode (MODEL.BMP.C2S.LOSS) must be one of {_C2S_MODES}, got {mode!r}"
        )
    return _dense_loss("c2s_loss", seg_logits, labels, mode, ignore_index)


def s2c_loss(
    cam_logits: Tensor, labels: Tensor, mode: str = "ce", ignore_index: int = 255
) -> Tensor:
    """Segmentation-to-classification loss on the CAM logits ``(B, K, H, W)``.

    ``labels`` are Y_s - 1 in 0..K-1 (foreground only) or ``ignore_index``. ``"ce"`` (the
    authors') is cross-entropy over the K CAM channels; ``"mlsm"`` is the per-pixel multi-label
    soft margin against the one-hot label (the binary cross-entropy of every channel, averaged over
    channels, then over pixels), the same form as c2s's ``"mlsm"``.
    """
    if mode not in _S2C_MODES:
        raise _err(
            "s2c_loss", f"mode (MODEL.BMP.S2C.LOSS) must be one of {_S2C_MODES}, got {mode!r}"
        )
    return _dense_loss("s2c_loss", cam_logits, labels, mode, ignore_index)


def affinity_loss(affinity: Tensor, aff_labels: Tensor, ignore_index: int = 255) -> Tensor:
    """0.5 * sum over positive pairs of (1 - a) / (n_pos + 1) + 0.5 * sum over negative pairs of
    a / (n_neg + 1).

    ``affinity`` ``(B, N, N)`` holds probabilities in (0, 1) (after the sigmoid); ``aff_labels``
    comes from :func:`bmp.modeling.pseudo_labels.affinity_labels`. Pairs are pooled over the
    batch. The ``+ 1`` in each count is the authors': it makes a term with no pairs 0 without a
    special case, and moves the loss by less than 1 / count otherwise.
    """
    if affinity.dim() != 3 or affinity.shape != aff_labels.shape:
        raise _err(
            "affinity_loss",
            f"affinity and aff_labels must both be (B, N, N), got {tuple(affinity.shape)} and "
            f"{tuple(aff_labels.shape)}",
        )
    if ignore_index in (0, 1):
        raise _err("affinity_loss", "ignore_index must differ from the pair values 0 and 1")
    pos, neg = aff_labels == 1, aff_labels == 0
    affinity = affinity.float()  # float16 cannot hold the pair counts (over 65504 at crop 512)
    zeros = torch.zeros_like(affinity)
    pos_loss = torch.where(pos, 1.0 - affinity, zeros).sum() / (pos.sum() + 1).float()
    neg_loss = torch.where(neg, affinity, zeros).sum() / (neg.sum() + 1).float()
    return 0.5 * pos_loss + 0.5 * neg_loss
