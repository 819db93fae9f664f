"""Meta-architectures (importing this registers them in detectron2's META_ARCH_REGISTRY)."""

from .bmp import BMP
from .supervised import BMPSupervised
from .tta import BMPWithTTA, with_test_time_augmentation

__all__ = ["BMP", "BMPSupervised", "BMPWithTTA", "with_test_time_augmentation"]
