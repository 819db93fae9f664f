"""Dataset registration: importing this registers every BMP dataset (cheap, no file I/O).

One small ``register_*.py`` per dataset family, each built on :mod:`.split`;
:mod:`.register_image_labels` registers a user's images with tags only. Any other registered
dataset trains and is scored through :mod:`bmp.data.registered`.
"""

from .register_coco import register_all_coco
from .register_coco_mini import register_all_coco_mini
from .register_image_labels import load_image_labels, register_image_labels
from .register_synthetic import ensure_default_synthetic, register_all_synthetic
from .register_voc import register_all_voc
from .split import (
    IGNORE_LABEL,
    SplitLayout,
    dataset_root,
    load_dataset_dicts,
    load_split,
    register_split,
    registered_bmp_datasets,
)

__all__ = [
    "IGNORE_LABEL",
    "SplitLayout",
    "dataset_root",
    "ensure_default_synthetic",
    "load_image_labels",
    "register_image_labels",
    "load_dataset_dicts",
    "load_split",
    "register_split",
    "registered_bmp_datasets",
]

register_all_voc()
register_all_coco()
register_all_synthetic()
register_all_coco_mini()
