"""Interaction operation: the classification branch's confidence re-weights the decoder's input.

Features where some class is confident are kept, features no class claims are damped, so the
segmentation branch sees where the classifier has found objects.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["cam_confidence", "reweight_features"]


def _resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def cam_confidence(cam_logits: Tensor, size: tuple[int, int]) -> Tensor:
    """Max over classes of sigmoid(CAM logits upsampled to ``size``), detached: ``(B, 1, H, W)``.

    As in the authors' code the logits are first upsampled (bilinear) to the input size and only
    then squashed and max-reduced. Taking the max at the classifier's stride instead gives a
    different map, because the max over classes does not commute with interpolation. Detached, so
    the segmentation loss cannot train the classifier through these weights.
    """
    if cam_logits.dim() != 4:
        raise ValueError(
            f"bmp.modeling.interaction.cam_confidence: expected (B, K, h, w) CAM logits, got "
            f"{tuple(cam_logits.shape)}"
        )
    if len(size) != 2 or min(size) <= 0:
        raise ValueError(f"bmp.modeling.interaction.cam_confidence: bad size {size}")
    up = _resize(cam_logits.detach(), (int(size[0]), int(size[1])))
    # The sigmoid is monotonic, so max-then-sigmoid equals sigmoid-then-max exactly (float
    # rounding is monotonic too): one sigmoid per pixel instead of K.
    return torch.sigmoid(up.amax(dim=1, keepdim=True))


def reweight_features(features: dict[str, Tensor], confidence: Tensor) -> dict[str, Tensor]:
    """Multiply every feature map by ``confidence`` resized (bilinear) to its resolution."""
    resized: dict[tuple[int, int], Tensor] = {}
    out = {}
    for name, f in features.items():
        size = (int(f.shape[-2]), int(f.shape[-1]))
        if size not in resized:
            resized[size] = _resize(confidence, size).to(f.dtype)
        out[name] = f * resized[size]
    return out
