"""Registration of the embedded synthetic dataset (see :mod:`bmp.data.synthetic`).

Registering reads nothing and generates nothing: ``python datasets/prepare_synthetic_wsss.py``,
the main job (``tools/run_default_job.py``) and the tests generate it with
:func:`ensure_default_synthetic`; loading a split that is not there says so.
"""

import os

from ..synthetic import (
    CLASS_NAMES,
    DEFAULT_NUM_TRAIN,
    DEFAULT_NUM_VAL,
    class_colors,
    ensure_synthetic_wsss,
)
from .split import SplitLayout, dataset_root, register_family

__all__ = [
    "SYNTHETIC_DIR",
    "SYNTHETIC_DATASETS",
    "register_all_synthetic",
    "ensure_default_synthetic",
]

SYNTHETIC_DIR = "synthetic_wsss"
_HINT = "run `python datasets/prepare_synthetic_wsss.py` (or `make demo`, which does)"


def ensure_default_synthetic(progress: bool = False) -> str:
    """Generate the default dataset under the current datasets root unless it is there."""
    out = os.path.join(dataset_root(), SYNTHETIC_DIR)
    return ensure_synthetic_wsss(out, DEFAULT_NUM_TRAIN, DEFAULT_NUM_VAL, progress=progress)


def _layout(split: str, with_masks: bool) -> SplitLayout:
    root = SYNTHETIC_DIR
    return SplitLayout(
        f"{root}/JPEGImages", f"{root}/ImageSets/Segmentation/{split}.txt",
        f"{root}/image_labels.txt", f"{root}/SegmentationClass" if with_masks else None,
        f"{root}/image_sizes.txt",
    )  # fmt: skip


# Dataset name: (split, with masks). Training reads the split without masks (image labels only);
# the seed evaluation reads train with masks, the segmentation evaluation val.
SYNTHETIC_DATASETS = {
    "synthetic_wsss_train": ("train", False),
    "synthetic_wsss_train_sem_seg": ("train", True),
    "synthetic_wsss_val_sem_seg": ("val", True),
}


def register_all_synthetic() -> None:
    """Register the :data:`SYNTHETIC_DATASETS`; image labels are required where masks are not
    read (training)."""
    splits = [(n, _layout(s, masks), not masks) for n, (s, masks) in SYNTHETIC_DATASETS.items()]
    register_family(splits, CLASS_NAMES, class_colors(), _HINT)
