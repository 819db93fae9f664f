"""Registration of the embedded synthetic dataset; generated on first load if absent.

See :mod:`bmp.data.synthetic_wsss` for what it contains and why.
"""

import os

from .. import synthetic_wsss as gen
from .common import dataset_root, register_sem_seg_dataset

__all__ = ["SYNTHETIC_DIR", "register_all_synthetic", "ensure_default_synthetic"]

SYNTHETIC_DIR = "synthetic_wsss"


def ensure_default_synthetic() -> None:
    """Generate the default dataset under the current datasets root unless it is there."""
    if os.environ.get("BMP_TESTING") == "1" and "DETECTRON2_DATASETS" not in os.environ:
        raise RuntimeError(
            "Refusing to generate the synthetic dataset into ./datasets during tests: set "
            "$DETECTRON2_DATASETS (e.g. with the `datasets_root` fixture) first."
        )
    gen.ensure_synthetic_wsss(
        os.path.join(dataset_root(), SYNTHETIC_DIR), gen.DEFAULT_NUM_TRAIN, gen.DEFAULT_NUM_VAL
    )


def register_all_synthetic() -> None:
    """Register train (labels only), train with masks (seed evaluation) and val (masks)."""
    common = dict(
        image_dir=f"{SYNTHETIC_DIR}/JPEGImages",
        label_file=f"{SYNTHETIC_DIR}/image_labels.json",
        sizes_file=f"{SYNTHETIC_DIR}/image_sizes.txt",
        class_names=gen.CLASS_NAMES,
        stuff_colors=gen.class_colors(),
        prepare=ensure_default_synthetic,
        prepare_hint="run `python datasets/prepare_synthetic_wsss.py`",
        context_classes=gen.CONTEXT_CLASSES,
    )
    train = f"{SYNTHETIC_DIR}/ImageSets/Segmentation/train.txt"
    masks = f"{SYNTHETIC_DIR}/SegmentationClass"
    register_sem_seg_dataset(
        "synthetic_wsss_train", split_file=train, require_labels=True, **common
    )
    register_sem_seg_dataset(
        "synthetic_wsss_train_sem_seg", split_file=train, mask_dir=masks, **common
    )
    register_sem_seg_dataset(
        "synthetic_wsss_val_sem_seg",
        split_file=f"{SYNTHETIC_DIR}/ImageSets/Segmentation/val.txt",
        mask_dir=masks,
        **common,
    )
