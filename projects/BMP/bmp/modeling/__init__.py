"""BMP's model: backbones, the three heads, the meta-architecture, its parts and pure tensor ops.

Importing this package registers the backbone, the segmentation head and the ``BMP``
meta-architecture with detectron2.
"""

from . import backbone, heads, meta_arch  # noqa: F401  (registers components)
from .backbone import MixTransformer, build_mit_backbone
from .heads import AffinityHead, ClassificationHead, SegFormerHead
from .meta_arch import BMP, BMPSupervised, BMPWithTTA, with_test_time_augmentation

__all__ = [
    "BMP",
    "BMPSupervised",
    "BMPWithTTA",
    "with_test_time_augmentation",
    "AffinityHead",
    "ClassificationHead",
    "MixTransformer",
    "SegFormerHead",
    "build_mit_backbone",
]
