"""Mix Transformer (MiT) encoder of SegFormer as a detectron2 backbone.

BMP needs two things from the encoder besides its four feature maps: the last stage must stay
at stride 16 (patch-embedding strides 4, 2, 2, 1) so CAMs keep detail, and the raw attention
logits q·kᵀ of the last blocks feed the affinity head. Parameter names follow SegFormer's
released ``mit_b*.pth`` so ImageNet weights load by a pure key mapping (their ``head.*`` is
dropped).
"""

from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from detectron2.config import CfgNode
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone
from torch import Tensor, nn
from torchvision.ops import stochastic_depth

__all__ = ["MIT_PRESETS", "MixTransformer", "build_mit_backbone"]

# Architecture facts of SegFormer's MiT family; all use MLP ratio 4. "mit_tiny" is ours: a
# few-thousand-parameter encoder for tests and CPU experiments on the synthetic dataset.
_SR_RATIOS = (8, 4, 2, 1)  # every preset
# name: (embed_dims, num_heads, depths) of each of the four stages.
_ARCHS: Dict[str, Tuple[Tuple[int, ...], ...]] = {
    "mit_tiny": ((16, 32, 64, 128), (1, 2, 4, 8), (1, 1, 1, 2)),
    "mit_b0": ((32, 64, 160, 256), (1, 2, 5, 8), (2, 2, 2, 2)),
    "mit_b1": ((64, 128, 320, 512), (1, 2, 5, 8), (2, 2, 2, 2)),
    "mit_b2": ((64, 128, 320, 512), (1, 2, 5, 8), (3, 4, 6, 3)),
    "mit_b3": ((64, 128, 320, 512), (1, 2, 5, 8), (3, 4, 18, 3)),
    "mit_b4": ((64, 128, 320, 512), (1, 2, 5, 8), (3, 8, 27, 3)),
    "mit_b5": ((64, 128, 320, 512), (1, 2, 5, 8), (3, 6, 40, 3)),
}
MIT_PRESETS: Dict[str, Dict[str, Tuple[int, ...]]] = {
    name: dict(embed_dims=e, num_heads=h, depths=d, sr_ratios=_SR_RATIOS)
    for name, (e, h, d) in _ARCHS.items()
}

# SegFormer uses PyTorch's default LayerNorm eps inside the patch embeddings and the
# spatial-reduction branch; only the block and stage norms take the configurable eps.
_DEFAULT_LN_EPS = 1e-5


def _tokens_to_map(x: Tensor, h: int, w: int) -> Tensor:
    """(B, h*w, C) -> (B, C, h, w)."""
    return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], h, w)


class OverlapPatchEmbed(nn.Module):
    """Strided conv whose kernel is larger than its stride, so neighbouring patches overlap."""

    def __init__(self, in_chans: int, embed_dim: int, kernel_size: int, stride: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size, stride, padding=kernel_size // 2)
        self.norm = nn.LayerNorm(embed_dim, eps=_DEFAULT_LN_EPS)

    def forward(self, x: Tensor) -> Tuple[Tensor, int, int]:
        x = self.proj(x)
        h, w = x.shape[-2:]
        return self.norm(x.flatten(2).transpose(1, 2)), h, w


class EfficientSelfAttention(nn.Module):
    """Multi-head attention whose keys/values come from a spatially reduced token grid.

    With ``sr_ratio > 1`` keys and values are computed on a grid shrunk by a strided conv, which
    makes attention affordable at stride 4; at ``sr_ratio == 1`` it is plain self-attention and
    its logits form the N x N token affinity BMP uses.
    """

    def __init__(self, dim: int, num_heads: int, sr_ratio: int, qkv_bias: bool) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"MiT stage width {dim} is not divisible by its {num_heads} heads")
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.sr_ratio = sr_ratio
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, kernel_size=sr_ratio, stride=sr_ratio)
            self.norm = nn.LayerNorm(dim, eps=_DEFAULT_LN_EPS)

    def forward(
        self, x: Tensor, h: int, w: int, return_logits: bool = False
    ) -> Tuple[Tensor, Optional[Tensor]]:
        """Return the attended tokens and, when asked, the unscaled logits (B, heads, N, M)."""
        b, n, c = x.shape
        heads = self.num_heads
        if self.sr_ratio > 1 and (h < self.sr_ratio or w < self.sr_ratio):
            raise ValueError(
                f"Input too small for MiT: a {h}x{w} token grid cannot be reduced by sr_ratio "
                f"{self.sr_ratio}; feed larger images (at least 32 px per side for the defaults)"
            )
        q = self.q(x).reshape(b, n, heads, c // heads).transpose(1, 2)
        if self.sr_ratio > 1:
            kv_in = self.norm(self.sr(_tokens_to_map(x, h, w)).flatten(2).transpose(1, 2))
        else:
            kv_in = x
        kv = self.kv(kv_in).reshape(b, -1, 2, heads, c // heads).permute(2, 0, 3, 1, 4)
        k, v = kv[0], kv[1]
        if return_logits:
            logits = q @ k.transpose(-2, -1)
            out = torch.softmax(logits * self.scale, dim=-1) @ v
        else:
            # Fused kernel: same math, no N x M matrix kept around when nobody needs it.
            logits = None
            out = F.scaled_dot_product_attention(q, k, v)
        out = out.transpose(1, 2).reshape(b, n, c)
        return self.proj(out), logits


class DWConv(nn.Module):
    """3x3 depthwise conv over the token grid: the positional cue of Mix-FFN."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim)

    def forward(self, x: Tensor, h: int, w: int) -> Tensor:
        return self.dwconv(_tokens_to_map(x, h, w)).flatten(2).transpose(1, 2)


class MixFFN(nn.Module):
    """fc1 -> depthwise 3x3 -> GELU -> fc2; the conv replaces explicit position embeddings."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.dwconv = DWConv(hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: Tensor, h: int, w: int) -> Tensor:
        return self.fc2(self.act(self.dwconv(self.fc1(x), h, w)))


class MiTBlock(nn.Module):
    """Pre-norm transformer block with stochastic depth on both residual branches."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float,
        sr_ratio: int,
        qkv_bias: bool,
        drop_path: float,
        norm_eps: float,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = EfficientSelfAttention(dim, num_heads, sr_ratio, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = MixFFN(dim, int(dim * mlp_ratio))
        self.drop_path = drop_path

    def _drop(self, x: Tensor) -> Tensor:
        if self.drop_path == 0.0 or not self.training:
            return x
        return stochastic_depth(x, self.drop_path, mode="row", training=True)

    def forward(
        self, x: Tensor, h: int, w: int, return_logits: bool = False
    ) -> Tuple[Tensor, Optional[Tensor]]:
        attn_out, logits = self.attn(self.norm1(x), h, w, return_logits)
        x = x + self._drop(attn_out)
        x = x + self._drop(self.mlp(self.norm2(x), h, w))
        return x, logits


def _check_arch(
    embed_dims: Sequence[int],
    num_heads: Sequence[int],
    depths: Sequence[int],
    sr_ratios: Sequence[int],
    patch_strides: Sequence[int],
    attn_blocks: int,
) -> None:
    """Errors naming the MODEL.MIT key of an architecture MixTransformer cannot build."""
    lists = dict(
        EMBED_DIMS=embed_dims,
        NUM_HEADS=num_heads,
        DEPTHS=depths,
        SR_RATIOS=sr_ratios,
        PATCH_STRIDES=patch_strides,
    )
    for key, value in lists.items():
        if len(value) != 4:
            raise ValueError(f"MODEL.MIT.{key} must have 4 entries (one per stage), got {value}")
    if not 0 <= attn_blocks <= depths[3]:
        raise ValueError(
            f"MODEL.MIT.ATTN_BLOCKS={attn_blocks} must be between 0 and the last stage's depth "
            f"({depths[3]})"
        )
    if attn_blocks > 0 and sr_ratios[3] != 1:
        raise ValueError(
            "Attention logits for the affinity head need square N x N maps: set "
            f"MODEL.MIT.SR_RATIOS[3] to 1 (got {sr_ratios[3]}) or MODEL.MIT.ATTN_BLOCKS to 0"
        )


class MixTransformer(Backbone):
    """Four-stage MiT encoder.

    ``forward(x)`` follows detectron2's contract and returns only the feature dict
    ``{"mit1".."mit4": (B, C_i, H/s_i, W/s_i)}`` (the requested ``out_features``), using the
    fused attention kernel everywhere. ``forward_with_attention(x)`` additionally returns the
    pre-softmax, pre-scaling attention logits q·kᵀ of the last ``attn_blocks`` blocks of the last
    stage, concatenated over blocks then heads: (B, attn_blocks * heads, N, N) with N the number
    of last-stage tokens. Only that path materialises the N x N logits, so inference and the
    pseudo-label passes do not pay for them.
    """

    def __init__(
        self,
        *,
        embed_dims: Sequence[int],
        num_heads: Sequence[int],
        depths: Sequence[int],
        sr_ratios: Sequence[int],
        patch_strides: Sequence[int] = (4, 2, 2, 1),
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path_rate: float = 0.1,
        norm_eps: float = 1e-6,
        attn_blocks: int = 2,
        in_chans: int = 3,
        out_features: Sequence[str] = ("mit1", "mit2", "mit3", "mit4"),
    ) -> None:
        super().__init__()
        _check_arch(embed_dims, num_heads, depths, sr_ratios, patch_strides, attn_blocks)
        self.num_stages = 4
        self.attn_blocks = attn_blocks
        self.num_attention_maps = attn_blocks * num_heads[3]

        dpr = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        self._out_feature_channels: Dict[str, int] = {}
        self._out_feature_strides: Dict[str, int] = {}
        prev_dim, stride = in_chans, 1
        for i in range(4):
            start = sum(depths[:i])
            setattr(
                self,
                f"patch_embed{i + 1}",
                OverlapPatchEmbed(prev_dim, embed_dims[i], 7 if i == 0 else 3, patch_strides[i]),
            )
            blocks = [
                MiTBlock(
                    embed_dims[i], num_heads[i], mlp_ratio, sr_ratios[i], qkv_bias,
                    dpr[start + j], norm_eps,
                )  # fmt: skip
                for j in range(depths[i])
            ]
            setattr(self, f"block{i + 1}", nn.ModuleList(blocks))
            setattr(self, f"norm{i + 1}", nn.LayerNorm(embed_dims[i], eps=norm_eps))
            stride *= patch_strides[i]
            self._out_feature_channels[f"mit{i + 1}"] = embed_dims[i]
            self._out_feature_strides[f"mit{i + 1}"] = stride
            prev_dim = embed_dims[i]

        unknown = [f for f in out_features if f not in self._out_feature_channels]
        if unknown or not out_features:
            raise ValueError(
                f"MODEL.MIT.OUT_FEATURES has unknown names {unknown}; choose from "
                f"{list(self._out_feature_channels)}"
            )
        self._out_features: List[str] = list(out_features)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def _forward(
        self, x: Tensor, with_attention: bool
    ) -> Tuple[Dict[str, Tensor], Optional[Tensor]]:
        if x.dim() != 4:
            raise ValueError(
                f"MixTransformer expects (B, C, H, W) images, got shape {tuple(x.shape)}"
            )
        outputs: Dict[str, Tensor] = {}
        logits: List[Tensor] = []
        last = self.num_stages - 1
        for i in range(self.num_stages):
            x, h, w = getattr(self, f"patch_embed{i + 1}")(x)
            blocks = getattr(self, f"block{i + 1}")
            first_logit_block = len(blocks) - self.attn_blocks
            for j, block in enumerate(blocks):
                want = with_attention and i == last and j >= first_logit_block
                x, attn = block(x, h, w, return_logits=want)
                if attn is not None:
                    logits.append(attn)
            x = _tokens_to_map(getattr(self, f"norm{i + 1}")(x), h, w)
            name = f"mit{i + 1}"
            if name in self._out_features:
                outputs[name] = x
        attn_logits = torch.cat(logits, dim=1) if logits else None
        return outputs, attn_logits

    def forward(self, x: Tensor) -> Dict[str, Tensor]:
        """Feature dict only (detectron2 Backbone contract)."""
        return self._forward(x, with_attention=False)[0]

    def forward_with_attention(self, x: Tensor) -> Tuple[Dict[str, Tensor], Optional[Tensor]]:
        """Features plus (B, attn_blocks * heads, N, N) attention logits (None if 0 blocks)."""
        return self._forward(x, with_attention=self.attn_blocks > 0)

    def output_shape(self) -> Dict[str, ShapeSpec]:
        return {
            name: ShapeSpec(
                channels=self._out_feature_channels[name], stride=self._out_feature_strides[name]
            )
            for name in self._out_features
        }


def _resolve_arch(cfg: CfgNode) -> Dict[str, Tuple[int, ...]]:
    name = cfg.MODEL.MIT.NAME
    if name not in MIT_PRESETS:
        raise ValueError(
            f"MODEL.MIT.NAME={name!r} is not a MiT preset; choose from {list(MIT_PRESETS)}"
        )
    arch = dict(MIT_PRESETS[name])
    for key in ("EMBED_DIMS", "NUM_HEADS", "DEPTHS", "SR_RATIOS"):
        override = list(cfg.MODEL.MIT.get(key, []))
        if override:
            arch[key.lower()] = tuple(int(v) for v in override)
    return arch


@BACKBONE_REGISTRY.register()
def build_mit_backbone(cfg: CfgNode, input_shape: ShapeSpec) -> MixTransformer:
    """Build a MiT from ``cfg.MODEL.MIT``: a preset by NAME, non-empty list keys override it."""
    mit = cfg.MODEL.MIT
    return MixTransformer(
        **_resolve_arch(cfg),
        patch_strides=tuple(int(s) for s in mit.PATCH_STRIDES),
        mlp_ratio=float(mit.MLP_RATIO),
        qkv_bias=bool(mit.QKV_BIAS),
        drop_path_rate=float(mit.DROP_PATH_RATE),
        norm_eps=float(mit.NORM_EPS),
        attn_blocks=int(mit.ATTN_BLOCKS),
        in_chans=input_shape.channels,
        out_features=tuple(mit.OUT_FEATURES),
    )
