"""Trivial baselines that put a WSSS number in context.

A segmentation mIoU means little without the score of predicting background everywhere: on
datasets where background covers most pixels it is far from zero, and a weak model can sit near
it while looking busy.
"""

import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog

from ..data.image_io import read_sem_seg

__all__ = ["all_background_miou"]


def all_background_miou(dataset_name: str) -> float:
    """mIoU (%) of predicting class 0 on every pixel, with detectron2's ``SemSegEvaluator`` rules.

    Ignored pixels are left out; classes count if they appear in the ground truth (every
    foreground class present then scores 0, background scores its pixel share).
    """
    meta = MetadataCatalog.get(dataset_name)
    k = len(meta.stuff_classes)
    ignore = meta.get("ignore_label", 255)
    counts = np.zeros(k, dtype=np.int64)
    dicts = DatasetCatalog.get(dataset_name)
    for d in dicts:
        if "sem_seg_file_name" not in d:
            raise KeyError(
                f"{d.get('file_name')} in '{dataset_name}' has no sem_seg_file_name; the "
                "all-background baseline needs a split with masks"
            )
        gt = read_sem_seg(d["sem_seg_file_name"], k - 1, ignore).ravel()
        counts += np.bincount(gt[gt != ignore], minlength=k)[:k]
    present = counts > 0
    if not present.any():
        raise ValueError(f"'{dataset_name}' has no labelled pixel; cannot score a baseline")
    # Predicting 0 everywhere: IoU(0) = background pixels / all pixels; IoU(c > 0) = 0.
    ious = np.zeros(k)
    ious[0] = counts[0] / counts.sum()
    return float(100 * ious[present].mean())
