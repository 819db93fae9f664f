"""BMP-D2: Branches Mutual Promotion for end-to-end WSSS, as a Detectron2 project.

Importing ``bmp`` registers its backbones, heads, meta-architecture and datasets with detectron2.
"""

import warnings

with warnings.catch_warnings():
    # detectron2 and fvcore decorate helpers with torch.jit.script at import time, which torch
    # 2.x deprecates with a FutureWarning at every start; nothing a BMP user can act on. Scripts
    # import bmp before detectron2 so that this is where detectron2 gets imported.
    warnings.filterwarnings(
        "ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning
    )
    import detectron2.engine  # noqa: F401
    import detectron2.modeling  # noqa: F401

from . import data, evaluation, modeling  # noqa: E402, F401  (registers components)
from .config import add_bmp_config

__version__ = "0.1.0"
__all__ = ["add_bmp_config", "__version__"]
