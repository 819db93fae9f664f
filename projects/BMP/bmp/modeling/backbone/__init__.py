"""Backbones (importing this registers them in detectron2's BACKBONE_REGISTRY)."""

from .efficientnet_lite import EfficientNetLite, build_efficientnet_lite_backbone
from .mit import MIT_PRESETS, MixTransformer, build_mit_backbone

__all__ = [
    "MIT_PRESETS",
    "EfficientNetLite",
    "MixTransformer",
    "build_efficientnet_lite_backbone",
    "build_mit_backbone",
]
