"""Backbones (importing this registers them in detectron2's BACKBONE_REGISTRY)."""

from .mit import MIT_PRESETS, MixTransformer, build_mit_backbone

__all__ = ["MIT_PRESETS", "MixTransformer", "build_mit_backbone"]
