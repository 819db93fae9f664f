"""Quality of localisation seeds (CAM, PAR-refined CAM, BSP) against ground-truth masks.

WSSS papers report seed mIoU on the *train* split: how good the pseudo labels are that the
segmentation branch learns from. This evaluator reads the model's ``outputs["seeds"][type]`` label
maps (0..K, 255 = "uncertain") and accumulates one confusion matrix per seed type.

A seed pixel marked uncertain (255) is counted as *not predicting any class*: it lowers the recall
and IoU of its ground-truth class but adds no false positive. The fraction of such pixels is
reported as ``ignore_ratio``. Ground-truth ignore pixels (255) are left out entirely.
"""

import copy
import logging
from collections import OrderedDict
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np
import torch
from detectron2.data import DatasetCatalog
from detectron2.evaluation import DatasetEvaluator

from ..data.image_io import read_sem_seg
from ..data.registered import bmp_metadata
from .gather import gather_on_main

__all__ = ["SeedEvaluator", "seed_metrics", "gt_mask_for_input"]

logger = logging.getLogger(__name__)

SEED_TYPES = ("cam", "par", "bsp")


def gt_mask_for_input(
    inp: Mapping,
    num_classes: int,
    ignore_label: int,
    gt_files: Optional[Dict[str, str]],
) -> np.ndarray:
    """The ``(H, W)`` int64 ground truth of one model input: its ``sem_seg`` tensor if the eval
    mapper attached one, else the mask file the dataset lists for its ``file_name``."""
    if "sem_seg" in inp:
        gt = inp["sem_seg"]
        return (gt.cpu().numpy() if isinstance(gt, torch.Tensor) else np.asarray(gt)).astype(
            np.int64
        )
    file_name = inp.get("file_name")
    if gt_files is None or file_name not in gt_files:
        raise KeyError(
            f"No ground-truth mask for '{file_name}': the input has no 'sem_seg' and the dataset "
            "lists no 'sem_seg_file_name' for it. Evaluate on a *_sem_seg dataset."
        )
    return read_sem_seg(gt_files[file_name], num_classes, ignore_label)


def seed_metrics(conf: np.ndarray, class_names: Sequence[str]) -> "OrderedDict[str, float]":
    """Metrics (in percent) from a seed confusion matrix.

    ``conf[p, g]`` counts pixels with seed ``p`` (0..K, row K+1 = uncertain) and ground truth ``g``
    (0..K). mIoU follows detectron2's ``SemSegEvaluator``: IoU is defined for classes present in
    the ground truth and averaged over classes present in the ground truth or the seeds.
    Foreground precision/recall are class-agnostic (foreground = any id in 1..K).
    """
    n = conf.shape[1]
    conf = conf.astype(np.float64)
    tp = np.diag(conf[:n, :n])
    pos_gt = conf.sum(axis=0)
    pos_pred = conf[:n].sum(axis=1)
    iou = np.full(n, np.nan)
    has_gt = pos_gt > 0
    iou[has_gt] = tp[has_gt] / (pos_gt + pos_pred - tp)[has_gt]
    valid = (pos_gt + pos_pred) > 0
    res: "OrderedDict[str, float]" = OrderedDict()
    res["mIoU"] = 100.0 * float(np.nansum(iou[has_gt]) / max(int(valid.sum()), 1))
    fg_hit = conf[1:n, 1:].sum()
    pred_fg, gt_fg = conf[1:n].sum(), conf[:, 1:].sum()
    res["fg_precision"] = 100.0 * float(fg_hit / pred_fg) if pred_fg > 0 else float("nan")
    res["fg_recall"] = 100.0 * float(fg_hit / gt_fg) if gt_fg > 0 else float("nan")
    total = conf.sum()
    res["ignore_ratio"] = 100.0 * float(conf[n:].sum() / total) if total > 0 else float("nan")
    res["pACC"] = 100.0 * float(tp.sum() / total) if total > 0 else float("nan")
    for i, name in enumerate(class_names):
        res[f"IoU-{name}"] = 100.0 * float(iou[i])
    return res


class SeedEvaluator(DatasetEvaluator):
    """Seed mIoU, per-class IoU and foreground precision/recall per seed type.

    Needs the model to return ``outputs["seeds"]`` (``TEST.BMP.EXTRA_OUTPUTS = True``; for the
    numbers the field reports also ``TEST.BMP.SEED_USE_GT_LABELS = True``). Results are keyed
    ``"seed_<type>"``, e.g. ``{"seed_cam": {"mIoU": ..., "fg_precision": ..., ...}}``.
    """

    def __init__(
        self,
        dataset_name: str,
        seed_types: Optional[Sequence[str]] = SEED_TYPES,
        distributed: bool = True,
        output_dir: Optional[str] = None,
    ):
        """
        Args:
            dataset_name: a dataset with masks (``*_sem_seg``); its metadata gives the classes.
            seed_types: seed types to evaluate; missing ones in an output are an error. ``None``
                evaluates whatever types the outputs carry.
            distributed: gather the confusion matrices of all ranks before computing metrics.
            output_dir: unused; accepted for the common evaluator signature.
        """
        meta = bmp_metadata(dataset_name)
        self._dataset_name = dataset_name
        self._class_names: List[str] = list(meta.stuff_classes)
        self._num_classes = len(self._class_names) - 1
        self._ignore_label = int(meta.get("ignore_label", 255))
        self._seed_types = tuple(seed_types) if seed_types is not None else None
        self._distributed = distributed
        self._output_dir = output_dir
        self._gt_files: Optional[Dict[str, str]] = None
        self.reset()

    def reset(self) -> None:
        self._conf: Dict[str, np.ndarray] = {}
        self._num_images: Dict[str, int] = {}

    def _gt_file_map(self) -> Dict[str, str]:
        if self._gt_files is None:
            self._gt_files = {
                d["file_name"]: d["sem_seg_file_name"]
                for d in DatasetCatalog.get(self._dataset_name)
                if "sem_seg_file_name" in d
            }
        return self._gt_files

    def process(self, inputs, outputs) -> None:
        n = self._num_classes + 1
        for inp, out in zip(inputs, outputs):
            seeds = out.get("seeds") if isinstance(out, Mapping) else None
            if seeds is None:
                raise KeyError(
                    "SeedEvaluator needs outputs['seeds']; enable TEST.BMP.EXTRA_OUTPUTS."
                )
            need_files = "sem_seg" not in inp
            gt = gt_mask_for_input(
                inp,
                self._num_classes,
                self._ignore_label,
                self._gt_file_map() if need_files else None,
            )
            types = self._seed_types if self._seed_types is not None else tuple(seeds)
            for t in types:
                if t not in seeds:
                    raise KeyError(
                        f"Seed type '{t}' missing from outputs['seeds'] (has {sorted(seeds)}) for "
                        f"'{inp.get('file_name')}'. Pass seed_types to SeedEvaluator to match."
                    )
                seed = seeds[t]
                seed = seed.to("cpu").numpy() if isinstance(seed, torch.Tensor) else seed
                seed = np.asarray(seed).astype(np.int64)
                if seed.shape != gt.shape:
                    raise ValueError(
                        f"Seed '{t}' of '{inp.get('file_name')}' is {seed.shape}, ground truth "
                        f"is {gt.shape}; seeds must be at the original image size."
                    )
                bad = (seed != self._ignore_label) & ((seed < 0) | (seed >= n))
                if bad.any():
                    raise ValueError(
                        f"Seed '{t}' of '{inp.get('file_name')}' has ids "
                        f"{np.unique(seed[bad])[:5].tolist()} outside 0..{n - 1} and "
                        f"{self._ignore_label}."
                    )
                keep = gt != self._ignore_label
                pred = np.where(seed[keep] == self._ignore_label, n, seed[keep])
                counts = np.bincount(pred * n + gt[keep], minlength=(n + 1) * n)
                if t not in self._conf:
                    self._conf[t] = np.zeros((n + 1, n), dtype=np.int64)
                    self._num_images[t] = 0
                self._conf[t] += counts.reshape(n + 1, n)
                self._num_images[t] += 1

    def evaluate(self):
        parts = gather_on_main((self._conf, self._num_images), self._distributed)
        if parts is None:
            return None
        conf, num_images = {}, {}
        for c_rank, n_rank in parts:
            for t, m in c_rank.items():
                conf[t] = conf[t] + m if t in conf else m.copy()
                num_images[t] = num_images.get(t, 0) + n_rank[t]
        if not conf:
            logger.warning("SeedEvaluator received no seeds; nothing to report.")
            return OrderedDict()
        order = list(self._seed_types or []) + sorted(
            t for t in conf if t not in (self._seed_types or ())
        )
        results = OrderedDict()
        for t in order:
            if t not in conf:
                continue
            res = seed_metrics(conf[t], self._class_names)
            res["num_images"] = float(num_images[t])
            results[f"seed_{t}"] = res
        logger.info("Seed evaluation on %s: %s", self._dataset_name,
                    {k: round(v["mIoU"], 2) for k, v in results.items()})  # fmt: skip
        return copy.deepcopy(results)
