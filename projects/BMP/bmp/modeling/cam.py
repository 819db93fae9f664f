"""Multi-scale + flip fusion and normalisation of CAM and segmentation maps.

These are the tensor steps that turn the no-grad multi-scale passes into the maps the pseudo
labels are built from. They take plain tensors so they can be tested alone and shared by training
(pseudo labels) and inference (extra outputs, test-time augmentation).

Resizing follows the authors' code step for step, because bilinear resizes do not compose: a map
resized to an intermediate size and then to the target is not the map resized once. Every pass
first brings its logits to the size of *that pass's input* (the model's output size), and the
fusion then brings them to the size of the original image: two resizes for scales other than 1.
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
    "upsample_twice",
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


def upsample_twice(x: Tensor, pass_size: tuple[int, int], size: tuple[int, int]) -> Tensor:
    """Resize logits to their pass's input size, then to ``size``, as the authors' code does.

    The first resize is the model's own upsampling of its output to the input it was given; the
    second is the multi-scale fusion's resize to the original image. Either step is skipped when
    the map already has that size, so scale 1.0 gets exactly one resize.
    """
    return _resize(_resize(x, _check_size(pass_size, "upsample_twice")), size)


def fuse_multiscale_cams(
    cam_logits: list[Tensor],
    size: tuple[int, int],
    flip: bool = True,
    pass_sizes: list[tuple[int, int]] | None = None,
) -> Tensor:
    """Sum over scales of ReLU(max(original, un-flipped)) of CAM logits resized to ``size``.

    Each element is ``(2B, K, h_s, w_s)`` (original + flipped images at scale s), or ``(B, K, ..)``
    with ``flip=False``. With ``pass_sizes`` (the input size of each scale's pass), each map is
    first resized to its pass size and then to ``size`` (:func:`upsample_twice`); without, maps
    are taken to be at their pass size already. The flipped half is mirrored before resizing:
    bilinear resizing with ``align_corners=False`` commutes with a horizontal flip, so the result
    equals resize-then-flip while the mirror touches only the small map. Returns ``(B, K, H, W)``.
    """
    return _fuse(cam_logits, size, flip, "max", "fuse_multiscale_cams", pass_sizes)


def fuse_multiscale_seg(
    seg_logits: list[Tensor],
    size: tuple[int, int],
    flip: bool = True,
    pass_sizes: list[tuple[int, int]] | None = None,
) -> Tensor:
    """Sum over scales of mean(original, un-flipped) segmentation logits resized to ``size``.

    Same layout and ``pass_sizes`` as :func:`fuse_multiscale_cams`, without ReLU. The mean is
    taken before resizing (both are linear, so the result is the same up to float rounding) to
    resize half as many maps. Returns ``(B, K + 1, H, W)``.
    """
    return _fuse(seg_logits, size, flip, "mean", "fuse_multiscale_seg", pass_sizes)


def _fuse(
    maps: list[Tensor],
    size: tuple[int, int],
    flip: bool,
    mode: str,
    where: str,
    pass_sizes: list[tuple[int, int]] | None,
) -> Tensor:
    if len(maps) == 0:
        raise ValueError(f"bmp.modeling.cam.{where}: got no scales (an empty list)")
    if pass_sizes is not None and len(pass_sizes) != len(maps):
        raise ValueError(
            f"bmp.modeling.cam.{where}: got {len(maps)} maps but {len(pass_sizes)} pass sizes"
        )
    size = _check_size(size, where)
    total: Tensor | None = None
    for i, x in enumerate(maps):
        pass_size = tuple(x.shape[-2:]) if pass_sizes is None else tuple(pass_sizes[i])
        if flip:
            b = _check_pair_batch(x, where)
            if mode == "mean":
                # Linear steps commute: merge the small maps, then resize B maps instead of 2B.
                fused = upsample_twice(merge_flip(x, "mean"), pass_size, size)
            else:
                # max does not commute with resizing: resize both halves, mirror the small one.
                x = torch.cat([x[:b], x[b:].flip(-1)], dim=0)
                x = upsample_twice(x, pass_size, size)
                fused = torch.maximum(x[:b], x[b:])
        else:
            if x.dim() != 4:
                raise ValueError(f"bmp.modeling.cam.{where}: expected (B, C, h, w), got {x.shape}")
            fused = upsample_twice(x, pass_size, size)
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


def cam_confidence(cam_logits: Tensor, size: tuple[int, int]) -> Tensor:
    """Max over classes of sigmoid(CAM logits upsampled to ``size``), detached: ``(B, 1, H, W)``.

    Used by the interaction operation to re-weight the decoder's features. As in the authors'
    code the logits are first upsampled (bilinear) to the input size and only then squashed and
    max-reduced; the caller resizes this map to each feature level. Taking the max at the
    classifier's stride instead gives a different map, because the max over classes does not
    commute with interpolation. Detached, so the segmentation loss cannot train the classifier
    through these weights.
    """
    if cam_logits.dim() != 4:
        raise ValueError(
            f"bmp.modeling.cam.cam_confidence: expected (B, K, h, w) CAM logits, got "
            f"{cam_logits.shape}"
        )
    up = _resize(cam_logits.detach(), _check_size(size, "cam_confidence"))
    # The sigmoid is monotonic, so max-then-sigmoid equals sigmoid-then-max exactly (float
    # rounding is monotonic too): one sigmoid per pixel instead of K.
    return torch.sigmoid(up.amax(dim=1, keepdim=True))
