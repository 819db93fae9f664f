"""SegFormer's all-MLP decoder: BMP's segmentation branch."""

from __future__ import annotations

from typing import Dict, List

import torch.nn.functional as F
from detectron2.config import CfgNode, configurable
from detectron2.layers import Conv2d, ShapeSpec, get_norm
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY
from torch import Tensor, nn

__all__ = ["SegFormerHead"]


class _PixelLinear(nn.Module):
    """Holds a level's per-pixel projection under SegFormer's key layout (``linear_c{i}.proj``).

    The head folds it into the fuse conv (see ``SegFormerHead.forward``) instead of calling it.
    """

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(in_dim, out_dim)


@SEM_SEG_HEADS_REGISTRY.register()
class SegFormerHead(nn.Module):
    """Project every level to a common width, upsample to the finest level, fuse, classify.

    Levels are ordered by stride (finest = level 1) whatever their names, so MiT's ``mit1..4``
    and ResNet's ``res2..5`` both work. The forward returns (B, K+1, h1, w1) logits at level-1
    resolution; resizing to the input and the losses belong to the meta-architecture, because
    BMP's supervision targets are built there.
    """

    @configurable
    def __init__(
        self,
        input_shape: Dict[str, ShapeSpec],
        *,
        num_classes: int,
        embed_dim: int = 256,
        dropout: float = 0.1,
        norm: str = "BN",
    ) -> None:
        super().__init__()
        if not input_shape:
            raise ValueError(
                "SegFormerHead needs at least one input feature (SEM_SEG_HEAD.IN_FEATURES)"
            )
        ordered = sorted(input_shape.items(), key=lambda kv: kv[1].stride)
        self.in_features: List[str] = [name for name, _ in ordered]
        for i, (_, shape) in enumerate(ordered):
            setattr(self, f"linear_c{i + 1}", _PixelLinear(shape.channels, embed_dim))
        n = len(ordered)
        self.linear_fuse = Conv2d(
            n * embed_dim,
            embed_dim,
            kernel_size=1,
            bias=False,
            norm=get_norm(norm, embed_dim),
            activation=F.relu,
        )
        self.dropout = nn.Dropout2d(dropout)
        self.predictor = nn.Conv2d(embed_dim, num_classes, kernel_size=1)
        self.num_classes = num_classes

    @classmethod
    def from_config(cls, cfg: CfgNode, input_shape: Dict[str, ShapeSpec]) -> dict:
        names = list(cfg.MODEL.SEM_SEG_HEAD.IN_FEATURES)
        missing = sorted(set(names) - set(input_shape))
        if missing:
            raise ValueError(
                f"MODEL.SEM_SEG_HEAD.IN_FEATURES asks for {missing}, which the backbone does not "
                f"output (it has {list(input_shape)}); fix IN_FEATURES or the backbone's "
                "OUT_FEATURES"
            )
        if cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES < 1:
            raise ValueError(
                f"MODEL.SEM_SEG_HEAD.NUM_CLASSES is {cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES}: it is "
                "derived from MODEL.BMP.NUM_CLASSES by bmp.config.derive_keys(cfg), which "
                "load_config and the BMP model call; call it before building the head alone"
            )
        return {
            "input_shape": {n: input_shape[n] for n in names},
            "num_classes": cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
            "embed_dim": cfg.MODEL.SEM_SEG_HEAD.EMBED_DIM,
            "dropout": cfg.MODEL.SEM_SEG_HEAD.DROPOUT,
            "norm": cfg.MODEL.SEM_SEG_HEAD.NORM,
        }

    def forward(self, features: Dict[str, Tensor]) -> Tensor:
        """Return (B, K+1, h1, w1) segmentation logits at the finest level's resolution.

        Computes ``linear_fuse(cat(up(c4), up(c3), up(c2), c1))`` with ``c_i = linear_c{i}(f_i)``
        without building the 4E-channel concatenation: the fuse conv's weight splits into one
        E x E block per level, and the per-pixel affine maps and bilinear upsampling are all
        linear (upsampling keeps constants), so each level's block is folded into its projection
        and applied at the level's own resolution before upsampling. Same function and
        parameters, about a tenth of the decoder's FLOPs and activation memory at stride 4.
        """
        size = features[self.in_features[0]].shape[-2:]
        n = len(self.in_features)
        fuse = self.linear_fuse
        e = fuse.weight.shape[0]
        # Concatenation order is (n, ..., 1): level i + 1 occupies block n - 1 - i.
        blocks = fuse.weight.view(e, n, e)
        fused = None
        bias = None
        for i, name in enumerate(self.in_features):
            proj = getattr(self, f"linear_c{i + 1}").proj
            block = blocks[:, n - 1 - i]
            weight = block @ proj.weight  # (E, C_i)
            level_bias = block @ proj.bias
            x = F.linear(features[name].permute(0, 2, 3, 1), weight).permute(0, 3, 1, 2)
            if x.shape[-2:] != size:
                x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            fused = x if fused is None else fused + x
            bias = level_bias if bias is None else bias + level_bias
        x = fused + bias.view(1, -1, 1, 1)
        if fuse.norm is not None:
            x = fuse.norm(x)
        x = fuse.activation(x)
        return self.predictor(self.dropout(x))
