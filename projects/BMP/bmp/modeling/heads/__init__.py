"""Heads of BMP's three branches (the segmentation head registers in SEM_SEG_HEADS_REGISTRY)."""

from .affinity_head import AffinityHead
from .classification_head import ClassificationHead
from .segformer_head import SegFormerHead

__all__ = ["AffinityHead", "ClassificationHead", "SegFormerHead"]
