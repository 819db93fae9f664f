"""BMP-D2: Branches Mutual Promotion for end-to-end WSSS, as a Detectron2 project.

Importing ``bmp`` registers its backbones, heads, meta-architecture and datasets with detectron2.
"""

from . import data, evaluation, modeling  # noqa: F401  (registers components)
from .config import add_bmp_config

__version__ = "0.1.0"
__all__ = ["add_bmp_config", "__version__"]
