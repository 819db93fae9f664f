"""Multi-scale + flip fusion and normalisation of CAM and segmentation maps.

These are the tensor steps that turn the no-grad multi-scale passes into the maps the pseudo
labels are built from (issue item 6a). They take plain tensors so they can be tested alone and
shared by training (pseudo labels) and inference (extra outputs, test-time augmentation).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "merge_flip",
    "fuse_multiscale_cams",
    "fuse_multiscale_seg",
    "minmax_normalize",
    "cam_confidence",
]

_MERGE_MODES = ("max", "mean")


def _check_merge_mode(mode: str) -> None:
    if mode not in _MERGE_MODES:
        raise ValueError(
            f"bmp.modeling.cam: merge mode must be one of {_MERGE_MODES}, got {mode!r}"
        )


def _check_pair_batch(x: Tensor, where: str) -> int:
    if x.dim() != 4:
        raise ValueError(
            f"bmp.modeling.cam.{where}: expected a (2B, C, h, w) tensor, got {x.shape}"
        )
    if x.shape[0] % 2:
        raise ValueError(
            f"bmp.modeling.cam.{where}: the batch must hold the original images followed by their "
            f"horizontal flips (even size), got {x.shape[0]}"
        )
    return x.shape[0] // 2


def _combine(a: Tensor, b: Tensor, mode: str) -> Tensor:
    return torch.maximum(a, b) if mode == "max" else (a + b) * 0.5


def merge_flip(x: Tensor, mode: str) -> Tensor:
    """Fuse the maps of images ``x[:B]`` with those of their horizontal flips ``x[B:]``.

    The flipped half is mirrored back before combining, so pixel (i, j) of both halves refers to
    the same image location. ``mode`` is ``"max"`` (CAMs) or ``"mean"`` (segmentation logits).
    Returns ``(B, C, h, w)``.
    """
    _check_merge_mode(mode)
    b = _check_pair_batch(x, "merge_flip")
    return _combine(x[:b], x[b:].flip(-1), mode)


def _check_size(size: tuple[int, int], where: str) -> tuple[int, int]:
    if len(size) != 2 or min(int(s) for s in size) <= 0:
        raise ValueError(f"bmp.modeling.cam.{where}: size must be (H, W) > 0, got {size}")
    return int(size[0]), int(size[1])


def _resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def fuse_multiscale_cams(
    cam_logits: list[Tensor], size: tuple[int, int], flip: bool = True
) -> Tensor:
    """Sum over scales of ReLU(max(original, un-flipped)) of CAM logits resized to ``size``.

    Each element is ``(2B, K, h_s, w_s)`` (original + flipped images at scale s), or ``(B, K, ..)``
    with ``flip=False``. The flipped half is mirrored before resizing: bilinear resizing with
    ``align_corners=False`` commutes with a horizontal flip, so the result equals resize-then-flip
    while the mirror touches only the small map. Returns ``(B, K, H, W)``.
    """
    return _fuse(cam_logits, size, flip, "max", "fuse_multiscale_cams")


def fuse_multiscale_seg(
    seg_logits: list[Tensor], size: tuple[int, int], flip: bool = True
) -> Tensor:
    """Sum over scales of mean(original, un-flipped) segmentation logits resized to ``size``.

    Same layout as :func:`fuse_multiscale_cams`, without ReLU. The mean is taken before resizing
    (both are linear, so the result is the same) to resize half as many maps.
    Returns ``(B, K + 1, H, W)``.
    """
    return _fuse(seg_logits, size, flip, "mean", "fuse_multiscale_seg")


def _fuse(maps: list[Tensor], size: tuple[int, int], flip: bool, mode: str, where: str) -> Tensor:
    if len(maps) == 0:
        raise ValueError(f"bmp.modeling.cam.{where}: got no scales (an empty list)")
    size = _check_size(size, where)
    total: Tensor | None = None
    for x in maps:
        if flip:
            b = _check_pair_batch(x, where)
            if mode == "mean":
                # Linear steps commute: merge the small maps, then resize B maps instead of 2B.
                fused = _resize(merge_flip(x, "mean"), size)
            else:
                # max does not commute with resizing: resize both halves, mirror the small one.
                x = torch.cat([x[:b], x[b:].flip(-1)], dim=0)
                x = _resize(x, size)
                fused = torch.maximum(x[:b], x[b:])
        else:
            if x.dim() != 4:
                raise ValueError(f"bmp.modeling.cam.{where}: expected (B, C, h, w), got {x.shape}")
            fused = _resize(x, size)
        if mode == "max":
            fused = F.relu(fused, inplace=fused is not x)  # never modify the caller's tensor
        if total is None:
            total = fused
        else:
            if fused.shape != total.shape:
                raise ValueError(
                    f"bmp.modeling.cam.{where}: every scale needs the same batch and channels, "
                    f"got {tuple(total.shape)} and {tuple(fused.shape)}"
                )
            total = total + fused
    assert total is not None
    return total


def minmax_normalize(x: Tensor, eps: float = 1e-5) -> Tensor:
    """Per image and per channel: subtract the minimum, divide by the shifted maximum + ``eps``.

    Puts every fused map in [0, 1) so the constant background thresholds (0.55 / 0.35) and the
    BSP confidence threshold mean the same thing for every image and class.
    """
    if x.dim() != 4:
        raise ValueError(f"bmp.modeling.cam.minmax_normalize: expected (B, C, H, W), got {x.shape}")
    x = x - x.amin(dim=(-2, -1), keepdim=True)
    return x / (x.amax(dim=(-2, -1), keepdim=True) + eps)


def cam_confidence(cam_logits: Tensor) -> Tensor:
    """Per-pixel max over classes of sigmoid(CAM logits), detached: ``(B, 1, h, w)``.

    Used by the interaction operation to re-weight the decoder's features; it is detached so the
    segmentation loss cannot train the classifier through these weights.
    """
    if cam_logits.dim() != 4:
        raise ValueError(
            f"bmp.modeling.cam.cam_confidence: expected (B, K, h, w) CAM logits, got "
            f"{cam_logits.shape}"
        )
    # max commutes with the monotonic sigmoid: one sigmoid per pixel instead of K.
    return torch.sigmoid(cam_logits.detach().amax(dim=1, keepdim=True))
