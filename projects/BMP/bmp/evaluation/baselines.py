"""Trivial baselines that put a WSSS number in context.

A segmentation mIoU means little without the score of predicting background everywhere: on
datasets where background covers most pixels it is far from zero, and a weak model can sit near
it while looking busy.
"""

import numpy as np

from ..data.datasets.split import load_dataset_dicts
from ..data.registered import IGNORE, semantic_view

__all__ = ["all_background_miou"]


def all_background_miou(dataset_name: str) -> float:
    """mIoU (%) of predicting class 0 on every pixel, with detectron2's ``SemSegEvaluator`` rules.

    Ignored pixels are left out; classes count if they appear in the ground truth (every
    foreground class present then scores 0, background scores its pixel share).
    """
    view = semantic_view(dataset_name)
    k = len(view.class_names)
    counts = np.zeros(k, dtype=np.int64)
    for d in load_dataset_dicts(dataset_name):  # no image is read: only the ground truth
        gt = view.ground_truth(d)
        if gt is None:
            raise KeyError(
                f"{d.get('file_name')} in '{dataset_name}' has no ground truth (masks or "
                "annotations); the all-background baseline needs a split with them"
            )
        gt = gt.ravel()
        counts += np.bincount(gt[gt != IGNORE], minlength=k)[:k]
    present = counts > 0
    if not present.any():
        raise ValueError(f"'{dataset_name}' has no labelled pixel; cannot score a baseline")
    # Predicting 0 everywhere: IoU(0) = background pixels / all pixels; IoU(c > 0) = 0.
    ious = np.zeros(k)
    ious[0] = counts[0] / counts.sum()
    return float(100 * ious[present].mean())
