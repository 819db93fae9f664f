"""Pixel-adaptive refinement (PAR): propagate label maps along low-level colour affinity.

CAMs are coarse and blobby; PAR sharpens them to the image's colour edges before they become
pseudo labels. Every pixel looks at 8 neighbours (a 3x3 ring) at each dilation,
with replicate padding at the borders (48 neighbours for the default dilations). The weights are

    colour:   softmax_n( -mean_rgb( (|I_p - I_n| / (std_n(I_n) + 1e-8) / T)^2 ) )
    position: softmax_n( -(dist_n / (std_n(dist_n) + 1e-8) / T)^2 ),  dist = d or sqrt(2) d
    weight:   colour + w * position

and the maps are replaced ``num_iter`` times by the weighted sum of their neighbours. ``std`` is
the unbiased standard deviation over the neighbours, per pixel and colour channel.

As in the authors' code the weights sum to ``1 + w``, so every round multiplies a constant map by
``1 + w`` and the output is ``(1 + w)^num_iter`` times a convex average (1.01^10 = 1.105 with the
defaults). That factor matters wherever a refined map is compared with a constant: the BSP
confidence threshold sigma_c is applied to these grown maps. ``normalize=True`` divides the
weights by ``1 + w`` instead (a convex combination: constants stay constant, probabilities keep
summing to one); argmax labels are the same, but a fixed threshold then means a stricter one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["PAR", "par_refine"]

_STD_EPS = 1e-8


def _ring_offsets(dilations: Sequence[int]) -> list[tuple[int, int]]:
    """(dy, dx) of the 3x3 ring at every dilation, row-major within a ring."""
    ring = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]
    return [(dy * d, dx * d) for d in dilations for dy, dx in ring]


class PAR(nn.Module):
    """Pixel-adaptive refinement with the authors' defaults. Has no parameters.

    ``forward(image, maps)``: ``image`` is ``(B, 3, H, W)`` RGB in [0, 1], ``maps`` is
    ``(B, C, h, w)``; the maps are first resized to ``(H, W)`` (bilinear, align_corners=True).
    Returns ``(B, C, H, W)`` in float32 (float64 if the inputs are float64); see the module
    docstring for the math and for ``normalize``.
    """

    def __init__(
        self,
        dilations: Sequence[int] = (1, 2, 4, 8, 12, 24),
        num_iter: int = 10,
        color_temperature: float = 0.3,
        pos_weight: float = 0.01,
        normalize: bool = False,
    ) -> None:
        super().__init__()
        dilations = tuple(int(d) for d in dilations)
        if not dilations or min(dilations) < 1:
            raise ValueError(
                f"PAR: dilations must be a non-empty list of positive integers "
                f"(MODEL.BMP.PAR.DILATIONS), got {dilations}"
            )
        if int(num_iter) < 0:
            raise ValueError(f"PAR: num_iter (MODEL.BMP.PAR.NUM_ITER) must be >= 0, got {num_iter}")
        if not color_temperature > 0:
            raise ValueError(
                f"PAR: color_temperature (MODEL.BMP.PAR.COLOR_TEMPERATURE) must be > 0, "
                f"got {color_temperature}"
            )
        if not pos_weight >= 0:
            raise ValueError(
                f"PAR: pos_weight (MODEL.BMP.PAR.POS_WEIGHT) must be >= 0, got {pos_weight}"
            )
        self.dilations = dilations
        self.num_iter = int(num_iter)
        self.color_temperature = float(color_temperature)
        self.pos_weight = float(pos_weight)
        self.normalize = bool(normalize)
        self.offsets = _ring_offsets(dilations)
        self.pad = max(dilations)
        # The position term is the same for every pixel: one (n,) vector, built once in float64
        # and cached per device/dtype (not a buffer, so it never enters the state dict).
        dist = torch.tensor([math.hypot(dy, dx) for dy, dx in self.offsets], dtype=torch.float64)
        logits = -((dist / (dist.std() + _STD_EPS) / self.color_temperature) ** 2)
        self._pos_affinity = torch.softmax(logits, dim=0)
        self._pos_cache: dict[tuple[torch.device, torch.dtype], Tensor] = {}

    @property
    def num_neighbors(self) -> int:
        return len(self.offsets)

    def extra_repr(self) -> str:
        return (
            f"dilations={self.dilations}, num_iter={self.num_iter}, "
            f"color_temperature={self.color_temperature}, pos_weight={self.pos_weight}, "
            f"normalize={self.normalize}"
        )

    def position_affinity(self, device: torch.device, dtype: torch.dtype) -> Tensor:
        """Softmax over the neighbours of their (scaled) squared distance: ``(n,)``."""
        key = (torch.device(device), dtype)
        cached = self._pos_cache.get(key)
        if cached is None:
            cached = self._pos_affinity.to(device=device, dtype=dtype)
            self._pos_cache[key] = cached
        return cached

    def _neighbors(self, x: Tensor) -> list[Tensor]:
        """Views of ``x`` shifted to every neighbour offset, from one replicate-padded copy."""
        h, w = x.shape[-2:]
        p = self.pad
        padded = F.pad(x, (p, p, p, p), mode="replicate")
        return [padded[..., p + dy : p + dy + h, p + dx : p + dx + w] for dy, dx in self.offsets]

    def affinity(self, image: Tensor) -> Tensor:
        """Propagation weights ``(B, n, H, W)``; they sum to ``1 + pos_weight`` over the
        neighbours (to 1 with ``normalize``).

        The result is a view of an ``(n, B, H, W)`` tensor so that :meth:`propagate` reads each
        neighbour's weights as one contiguous block. The neighbours are visited one at a time
        (two-pass mean / variance, then the logits) so no ``(B, 3, n, H, W)`` tensor is built:
        on CPU, fresh allocations of that size cost more than the arithmetic.
        """
        image = _as_float(image)
        b, _, h, w = image.shape
        n = self.num_neighbors
        shifted = self._neighbors(image)
        mean = torch.zeros_like(image)
        for v in shifted:
            mean.add_(v)
        mean = mean / n
        var = torch.zeros_like(image)
        for v in shifted:
            centred = v - mean
            var.addcmul_(centred, centred)
        # Unbiased std over the neighbours, per pixel and colour channel.
        inv_scale = (((var / (n - 1)).sqrt() + _STD_EPS) * self.color_temperature).reciprocal()
        del mean, var
        logits = image.new_empty((n, b, h, w))
        for k, v in enumerate(shifted):
            # (|a| / s)^2 == (a / s)^2: the abs of the authors' formula is redundant.
            logits[k] = ((v - image) * inv_scale).square().mean(dim=1)
        aff = torch.softmax(logits.neg_(), dim=0)
        if self.pos_weight > 0:
            pos = self.position_affinity(aff.device, aff.dtype).view(-1, 1, 1, 1)
            if self.normalize:
                aff = (aff * (1.0 / (1.0 + self.pos_weight))).add_(
                    pos * (self.pos_weight / (1.0 + self.pos_weight))
                )
            else:
                aff = aff + pos * self.pos_weight
        return aff.transpose(0, 1)

    def propagate(self, maps: Tensor, affinity: Tensor) -> Tensor:
        """Run ``num_iter`` rounds of neighbour averaging with precomputed ``affinity``."""
        if affinity.shape[0] != maps.shape[0] or affinity.shape[-2:] != maps.shape[-2:]:
            raise ValueError(
                f"PAR.propagate: affinity {tuple(affinity.shape)} does not match maps "
                f"{tuple(maps.shape)}"
            )
        maps = maps.to(affinity.dtype)
        # (n, B, 1, H, W): each neighbour's weights are one contiguous block (no copy when the
        # affinity comes from :meth:`affinity`).
        weights = affinity.transpose(0, 1).contiguous().unsqueeze(2)
        for _ in range(self.num_iter):
            out = torch.zeros_like(maps)
            # Accumulate in place: no (B, C, n, H, W) tensor, only one padded copy per round.
            for w_k, shifted in zip(weights, self._neighbors(maps)):
                out.addcmul_(w_k, shifted)
            maps = out
        return maps

    def forward(self, image: Tensor, maps: Tensor, affinity: Tensor | None = None) -> Tensor:
        """Refine ``maps`` along ``image``; ``affinity`` is ``self.affinity(image)`` if the caller
        already has it (several refinements of one image share it)."""
        _check_inputs(image, maps)
        dtype = torch.promote_types(_as_float(image).dtype, _as_float(maps).dtype)
        image, maps = image.to(dtype), maps.to(dtype)
        if tuple(maps.shape[-2:]) != tuple(image.shape[-2:]):
            maps = F.interpolate(maps, size=image.shape[-2:], mode="bilinear", align_corners=True)
        return self.propagate(maps, self.affinity(image) if affinity is None else affinity)


def par_refine(image: Tensor, maps: Tensor, **settings: Any) -> Tensor:
    """Functional form of :class:`PAR`: ``PAR(**settings)(image, maps)`` (the module is tiny and
    has no parameters, so building it on each call costs nothing)."""
    return PAR(**settings)(image, maps)


def _as_float(x: Tensor) -> Tensor:
    """Work in at least float32: the per-pixel std of nearby colours underflows in half."""
    if x.dtype in (torch.float32, torch.float64):
        return x
    return x.float()


def _check_inputs(image: Tensor, maps: Tensor) -> None:
    if image.dim() != 4 or image.shape[1] != 3:
        raise ValueError(f"PAR: image must be (B, 3, H, W) RGB in [0, 1], got {tuple(image.shape)}")
    if not image.is_floating_point():
        raise ValueError(
            f"PAR: image must be a float tensor in [0, 1] (divide uint8 images by 255), "
            f"got {image.dtype}"
        )
    if maps.dim() != 4 or maps.shape[0] != image.shape[0]:
        raise ValueError(
            f"PAR: maps must be (B, C, h, w) with the image's batch size {image.shape[0]}, "
            f"got {tuple(maps.shape)}"
        )
