"""Affinity head: turns the backbone's attention logits into a pixel affinity matrix."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["AffinityHead"]


class AffinityHead(nn.Module):
    """(B, A, N, N) attention logits -> (B, N, N) affinities in (0, 1).

    Attention is not symmetric (query i -> key j differs from j -> i) while "same class" is, so
    the maps are symmetrised before a learnt 1x1 combination of the A head/block maps.
    """

    def __init__(self, num_maps: int) -> None:
        super().__init__()
        if num_maps <= 0:
            raise ValueError(f"AffinityHead needs at least one attention map, got {num_maps}")
        self.num_maps = num_maps
        self.attn_proj = nn.Conv2d(num_maps, 1, kernel_size=1, bias=True)
        nn.init.kaiming_normal_(self.attn_proj.weight, a=math.sqrt(5), mode="fan_out")

    def forward(self, attn_logits: Tensor) -> Tensor:
        if attn_logits.dim() != 4 or attn_logits.shape[1] != self.num_maps:
            raise ValueError(
                f"AffinityHead expects (B, {self.num_maps}, N, N) attention logits, "
                f"got {tuple(attn_logits.shape)}"
            )
        sym = attn_logits + attn_logits.transpose(-2, -1)
        return torch.sigmoid(self.attn_proj(sym)).squeeze(1)
