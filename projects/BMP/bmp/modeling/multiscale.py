"""Multi-scale + flip passes, and the fusion and normalisation of their CAM and segmentation maps.

These are the steps that turn no-grad passes over rescaled and flipped copies of a batch into the
maps the pseudo labels, the evaluation seeds and test-time augmentation are built from. The
fusion functions take plain tensors; :func:`multiscale_logits` takes the model's forward as a
callable, so none of them knows about configs or the meta-architecture.

Resizing follows the authors' code step for step, because bilinear resizes do not compose: a map
resized to an intermediate size and then to the target is not the map resized once. Every pass
first brings its logits to the size of *that pass's input* (the model's output size), and the
fusion then brings them to the size of the original image: two resizes for scales other than 1.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.profiler import record_function

from .structures import BranchOutputs

__all__ = [
    "merge_flip",
    "fuse_multiscale",
    "minmax_normalize",
    "upsample_twice",
    "MultiScaleLogits",
    "multiscale_logits",
]

_MERGE_MODES = ("max", "mean")


def _check_merge_mode(mode: str) -> None:
    if mode not in _MERGE_MODES:
        raise ValueError(f"multiscale: merge mode must be one of {_MERGE_MODES}, got {mode!r}")


def _check_pair_batch(x: Tensor, where: str) -> int:
    if x.dim() != 4:
        raise ValueError(f"multiscale.{where}: expected a (2B, C, h, w) tensor, got {x.shape}")
    if x.shape[0] % 2:
        raise ValueError(
            f"multiscale.{where}: the batch must hold the original images followed by their "
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
        raise ValueError(f"multiscale.{where}: size must be (H, W) > 0, got {size}")
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


def fuse_multiscale(
    maps: list[Tensor],
    size: tuple[int, int],
    branch: str,
    flip: bool = True,
    pass_sizes: list[tuple[int, int]] | None = None,
) -> Tensor:
    """Sum over scales of one branch's logits, merged with their flips and resized to ``size``.

    ``branch="cam"``: ReLU(max(original, un-flipped)) of CAM logits, as the authors fuse CAMs;
    ``branch="seg"``: mean(original, un-flipped) of segmentation logits, without ReLU. The mean is
    taken before resizing (both are linear, so the result is the same up to float rounding) to
    resize half as many maps; max does not commute with resizing, so CAMs are resized first.

    Each element is ``(2B, C, h_s, w_s)`` (original + flipped images at scale s), or ``(B, C, ..)``
    with ``flip=False``. With ``pass_sizes`` (the input size of each scale's pass), each map is
    first resized to its pass size and then to ``size`` (:func:`upsample_twice`); without, maps
    are taken to be at their pass size already. A flipped CAM half is mirrored before resizing:
    bilinear resizing with ``align_corners=False`` commutes with a horizontal flip, so the result
    equals resize-then-flip while the mirror touches only the small map. Returns ``(B, C, H, W)``.
    """
    modes = {"cam": "max", "seg": "mean"}
    if branch not in modes:
        raise ValueError(
            f"multiscale.fuse_multiscale: branch must be 'cam' or 'seg', got {branch!r}"
        )
    return _fuse(maps, size, flip, modes[branch], f"fuse_multiscale({branch})", pass_sizes)


def _fuse(
    maps: list[Tensor],
    size: tuple[int, int],
    flip: bool,
    mode: str,
    where: str,
    pass_sizes: list[tuple[int, int]] | None,
) -> Tensor:
    if len(maps) == 0:
        raise ValueError(f"multiscale.{where}: got no scales (an empty list)")
    if pass_sizes is not None and len(pass_sizes) != len(maps):
        raise ValueError(
            f"multiscale.{where}: got {len(maps)} maps but {len(pass_sizes)} pass sizes"
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
                raise ValueError(f"multiscale.{where}: expected (B, C, h, w), got {x.shape}")
            fused = upsample_twice(x, pass_size, size)
        if mode == "max":
            fused = F.relu(fused, inplace=fused is not x)  # never modify the caller's tensor
        if total is None:
            total = fused
        else:
            if fused.shape != total.shape:
                raise ValueError(
                    f"multiscale.{where}: every scale needs the same batch and channels, "
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
        raise ValueError(f"multiscale.minmax_normalize: expected (B, C, H, W), got {x.shape}")
    x = x - x.amin(dim=(-2, -1), keepdim=True)
    return x / (x.amax(dim=(-2, -1), keepdim=True) + eps)


@dataclass
class MultiScaleLogits:
    """Per-scale logits of a batch and its flips, and the input size of each scale's pass.

    ``cams[i]`` is ``(2B, K, h, w)`` (originals, then flips; ``(B, ..)`` without flip) at the
    classifier's stride; ``segs[i]`` likewise with K + 1 channels, or ``None`` when not computed.
    """

    cams: list[Tensor]
    segs: list[Tensor] | None
    pass_sizes: list[tuple[int, int]]

    def fused_cams(self, size: tuple[int, int], flip: bool) -> Tensor:
        """Min-max normalised multi-scale CAMs ``(B, K, H, W)``."""
        return minmax_normalize(fuse_multiscale(self.cams, size, "cam", flip, self.pass_sizes))

    def fused_segs(self, size: tuple[int, int], flip: bool) -> Tensor:
        """Min-max normalised multi-scale segmentation maps ``(B, K + 1, H, W)``."""
        if self.segs is None:
            raise ValueError("MultiScaleLogits.fused_segs: the passes computed no segmentation")
        return minmax_normalize(fuse_multiscale(self.segs, size, "seg", flip, self.pass_sizes))


def multiscale_logits(
    forward: Callable[[Tensor, bool], BranchOutputs],
    x: Tensor,
    main: BranchOutputs,
    scales: Sequence[float],
    flip: bool,
    with_seg: bool,
    resize_by_factor: bool = False,
    reuse_main: bool = True,
) -> MultiScaleLogits:
    """Run ``forward(images, with_seg)`` on every scale (and flip) of the normalised batch ``x``.

    Every scale is ONE forward of the (rescaled) batch and its flip, as the authors run it. With
    ``reuse_main``, scale 1.0 instead reuses ``main``, the pass already made on ``x``, and runs
    the flip alone: the same maps in eval mode, but in train mode BatchNorm then normalises with
    the statistics of other batches (``x`` alone, ``flip(x)`` alone) than the authors' ``[x,
    flip(x)]``, which moves training labels (see ``MODEL.BMP.PSEUDO.REUSE_MAIN_PASS``).

    Rescaled inputs are ``int(s * h)`` by size (the authors' training code), or use
    ``scale_factor=s`` with ``resize_by_factor`` (their test code: bilinear sampling then uses
    ``s`` itself, which differs slightly when ``s * h`` is not an integer). The caller decides
    about gradients.
    """
    cams: list[Tensor] = []
    segs: list[Tensor] = []
    sizes: list[tuple[int, int]] = []
    for s in scales:
        with record_function(f"bmp.multiscale.scale_{s:g}"):
            cam, seg, size = _one_scale(
                forward, x, main if reuse_main else None, s, flip, with_seg, resize_by_factor
            )
        sizes.append(size)
        cams.append(cam.float())
        if with_seg:
            segs.append(seg.float())
    return MultiScaleLogits(cams, segs if with_seg else None, sizes)


def _one_scale(
    forward: Callable[[Tensor, bool], BranchOutputs],
    x: Tensor,
    main: BranchOutputs | None,
    s: float,
    flip: bool,
    with_seg: bool,
    resize_by_factor: bool,
) -> tuple[Tensor, Tensor | None, tuple[int, int]]:
    h, w = x.shape[-2:]
    if s == 1.0 and main is not None:
        cam = main.cam_logits.detach()
        seg = main.seg_logits.detach() if with_seg else None
        if flip:
            out = forward(x.flip(-1), with_seg)
            cam = torch.cat([cam, out.cam_logits])
            seg = torch.cat([seg, out.seg_logits]) if with_seg else None
        return cam, seg, (int(h), int(w))
    if s == 1.0:
        xs = x
    elif resize_by_factor:
        xs = F.interpolate(x, scale_factor=s, mode="bilinear", align_corners=False)
    else:
        size = (int(h * s), int(w * s))
        xs = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    out = forward(torch.cat([xs, xs.flip(-1)]) if flip else xs, with_seg)
    return out.cam_logits, out.seg_logits, (int(xs.shape[-2]), int(xs.shape[-1]))
