"""Image-level classification mAP / F1: a cheap signal of whether the classifier (and so the CAMs)
learns anything, long before segmentation numbers move.

The model provides ``outputs["cls_score"]``: a ``(K,)`` tensor of per-class probabilities
(sigmoid of the pooled classifier logits). Ground truth is the input's ``cls_label`` (multi-hot),
else the classes present in its ``sem_seg`` mask, else the dataset dict's ``cls_labels``.
"""

import logging
from collections import OrderedDict
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np
import torch
from detectron2.data import DatasetCatalog
from detectron2.evaluation import DatasetEvaluator

from ..data.registered import bmp_metadata
from .gather import gather_on_main

__all__ = ["ClassificationEvaluator", "average_precision", "classification_metrics"]

logger = logging.getLogger(__name__)


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """Non-interpolated AP: sum over score thresholds of (recall gain) x precision.

    Tied scores form one threshold (so the order of ties cannot change the result); NaN when
    there is no positive.
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels).astype(bool)
    npos = int(labels.sum())
    if npos == 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], labels[order]
    tp, fp = np.cumsum(y), np.cumsum(~y)
    last = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]  # last index of each tie group
    tp, fp = tp[last], fp[last]
    precision = tp / (tp + fp)
    recall = tp / npos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def classification_metrics(
    scores: np.ndarray, labels: np.ndarray, class_names: Sequence[str], threshold: float = 0.5
) -> "OrderedDict[str, float]":
    """mAP, micro/macro F1, micro precision/recall and per-class AP, in percent.

    ``scores`` and ``labels`` are ``(N, K)``; ``class_names`` the K foreground names. Averages run
    over classes with at least one positive image.
    """
    labels = labels.astype(bool)
    pred = scores >= threshold
    ap = np.array([average_precision(scores[:, k], labels[:, k]) for k in range(labels.shape[1])])
    tp = (pred & labels).sum(axis=0).astype(np.float64)
    fp = (pred & ~labels).sum(axis=0).astype(np.float64)
    fn = (~pred & labels).sum(axis=0).astype(np.float64)
    has_pos = labels.sum(axis=0) > 0
    f1 = np.where(2 * tp + fp + fn > 0, 2 * tp / np.maximum(2 * tp + fp + fn, 1), np.nan)
    res: "OrderedDict[str, float]" = OrderedDict()
    res["mAP"] = 100.0 * float(np.mean(ap[has_pos])) if has_pos.any() else float("nan")
    denom = 2 * tp.sum() + fp.sum() + fn.sum()
    res["F1"] = 100.0 * float(2 * tp.sum() / denom) if denom > 0 else float("nan")
    res["F1_macro"] = 100.0 * float(np.mean(f1[has_pos])) if has_pos.any() else float("nan")
    res["precision"] = (
        100.0 * float(tp.sum() / (tp.sum() + fp.sum())) if tp.sum() + fp.sum() > 0 else float("nan")
    )
    res["recall"] = (
        100.0 * float(tp.sum() / (tp.sum() + fn.sum())) if tp.sum() + fn.sum() > 0 else float("nan")
    )
    for k, name in enumerate(class_names):
        res[f"AP-{name}"] = 100.0 * float(ap[k])
    return res


class ClassificationEvaluator(DatasetEvaluator):
    """Multi-label classification quality from ``outputs["cls_score"]``; results under
    ``"classification"``: ``mAP``, ``F1`` (micro, at ``threshold``), ``F1_macro``, ``precision``,
    ``recall`` and ``AP-<class>``."""

    def __init__(
        self,
        dataset_name: str,
        distributed: bool = True,
        output_dir: Optional[str] = None,
        threshold: float = 0.5,
    ):
        meta = bmp_metadata(dataset_name)
        self._dataset_name = dataset_name
        self._class_names: List[str] = list(meta.stuff_classes)[1:]
        self._num_classes = len(self._class_names)
        self._ignore_label = int(meta.get("ignore_label", 255))
        self._distributed = distributed
        self._threshold = threshold
        self._dict_labels: Optional[Dict[str, List[int]]] = None
        self.reset()

    def reset(self) -> None:
        self._scores: List[np.ndarray] = []
        self._labels: List[np.ndarray] = []

    def _gt(self, inp: Mapping) -> np.ndarray:
        k = self._num_classes
        if "cls_label" in inp:
            lab = inp["cls_label"]
            lab = lab.cpu().numpy() if isinstance(lab, torch.Tensor) else np.asarray(lab)
            return lab.astype(bool).reshape(k)
        if "sem_seg" in inp:
            gt = inp["sem_seg"]
            ids = np.unique(gt.cpu().numpy() if isinstance(gt, torch.Tensor) else np.asarray(gt))
            out = np.zeros(k, dtype=bool)
            out[[int(i) - 1 for i in ids if 1 <= i <= k]] = True
            return out
        if self._dict_labels is None:
            self._dict_labels = {
                d["file_name"]: d["cls_labels"]
                for d in DatasetCatalog.get(self._dataset_name)
                if "cls_labels" in d
            }
        ids = self._dict_labels.get(inp.get("file_name"))
        if ids is None:
            raise KeyError(
                f"No image-level ground truth for '{inp.get('file_name')}': no 'cls_label', no "
                f"'sem_seg' and no 'cls_labels' in dataset '{self._dataset_name}'."
            )
        out = np.zeros(k, dtype=bool)
        out[[int(i) - 1 for i in ids]] = True
        return out

    def process(self, inputs, outputs) -> None:
        for inp, out in zip(inputs, outputs):
            if not isinstance(out, Mapping) or "cls_score" not in out:
                raise KeyError(
                    "ClassificationEvaluator needs outputs['cls_score'] (K per-class "
                    "probabilities) from the model."
                )
            score = out["cls_score"]
            score = score.detach().float().cpu().numpy() if isinstance(score, torch.Tensor) else (
                np.asarray(score, dtype=np.float64)
            )  # fmt: skip
            if score.shape != (self._num_classes,):
                raise ValueError(
                    f"outputs['cls_score'] has shape {score.shape}, expected "
                    f"({self._num_classes},) for '{inp.get('file_name')}'."
                )
            self._scores.append(score.astype(np.float64))
            self._labels.append(self._gt(inp))

    def evaluate(self):
        parts = gather_on_main((self._scores, self._labels), self._distributed)
        if parts is None:
            return None
        scores = [s for rank_scores, _ in parts for s in rank_scores]
        labels = [lab for _, rank_labels in parts for lab in rank_labels]
        if not scores:
            logger.warning("ClassificationEvaluator received no predictions.")
            return OrderedDict()
        res = classification_metrics(
            np.stack(scores), np.stack(labels), self._class_names, self._threshold
        )
        logger.info("Classification on %s: mAP %.2f, F1 %.2f", self._dataset_name,
                    res["mAP"], res["F1"])  # fmt: skip
        return OrderedDict({"classification": res})
