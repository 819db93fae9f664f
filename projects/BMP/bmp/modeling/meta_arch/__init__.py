"""Meta-architectures (importing this registers them in detectron2's META_ARCH_REGISTRY)."""

from .bmp import BMP

__all__ = ["BMP"]
