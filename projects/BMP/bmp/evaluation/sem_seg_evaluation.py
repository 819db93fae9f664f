"""detectron2's ``SemSegEvaluator``, with the ground truth the evaluation mapper attached.

The stock evaluator opens ``sem_seg_file_name`` for every image, so a dataset with instance
annotations (``register_coco_instances``) or with masks whose ids BMP moves (a background that
is not id 0) could not be scored. Here the ground truth is the ``sem_seg`` the mapper put in each
input (:meth:`bmp.data.registered.SemanticView.ground_truth`: a mask file, or annotations
rasterised in memory) and the classes are BMP's (:func:`bmp.data.registered.bmp_metadata`);
detectron2's ``reset``/``evaluate`` compute and report the metrics unchanged, so every dataset is
scored the same way and with the same result keys.
"""

import logging
from typing import Any, Dict, Optional

import numpy as np
import torch
from detectron2.data import DatasetCatalog
from detectron2.evaluation import SemSegEvaluator

from ..data.registered import bmp_metadata, semantic_view

__all__ = ["GroundTruthSemSegEvaluator"]


class GroundTruthSemSegEvaluator(SemSegEvaluator):
    """mIoU, fwIoU, mACC, pACC and per-class IoU/ACC from ``inputs[i]["sem_seg"]``."""

    def __init__(
        self, dataset_name: str, distributed: bool = True, output_dir: Optional[str] = None
    ) -> None:
        # SemSegEvaluator.__init__ is not called: it maps every dict to a mask file and reads the
        # registered metadata. The state its reset/evaluate use is set here instead.
        meta = bmp_metadata(dataset_name)
        self._logger = logging.getLogger(__name__)
        self._dataset_name = dataset_name
        self._distributed = distributed
        self._output_dir = output_dir
        self._cpu_device = torch.device("cpu")
        self.input_file_to_gt_file = {}
        self._contiguous_id_to_dataset_id = None
        self._class_names = list(meta.stuff_classes)
        self._num_classes = len(self._class_names)
        self._ignore_label = int(meta.ignore_label)
        # Newer detectron2 also reports boundary IoU from its own pass over the mask files.
        self._compute_boundary_iou = False
        self._by_file: Optional[Dict[str, Dict[str, Any]]] = None

    def process(self, inputs, outputs) -> None:
        n = self._num_classes
        for inp, out in zip(inputs, outputs):
            pred = out["sem_seg"].argmax(dim=0).to(self._cpu_device).numpy().astype(np.int64)
            gt = self._ground_truth(inp)
            if gt.shape != pred.shape:
                raise ValueError(
                    f"Prediction of '{inp.get('file_name')}' is {pred.shape}, its ground truth "
                    f"{gt.shape}; the model must predict at the original image size."
                )
            gt = np.where(gt == self._ignore_label, n, gt)
            self._conf_matrix += np.bincount(
                (n + 1) * pred.reshape(-1) + gt.reshape(-1), minlength=self._conf_matrix.size
            ).reshape(self._conf_matrix.shape)
            self._predictions.extend(self.encode_json_sem_seg(pred, inp["file_name"]))

    def _ground_truth(self, inp) -> np.ndarray:
        """The input's ``sem_seg``; for inputs without one (a mapper of the caller's own), the
        dataset's ground truth of its ``file_name``, read as the evaluation mapper reads it."""
        if "sem_seg" in inp:
            gt = inp["sem_seg"]
            gt = gt.cpu().numpy() if isinstance(gt, torch.Tensor) else np.asarray(gt)
            return gt.astype(np.int64)
        if self._by_file is None:
            self._by_file = {d["file_name"]: d for d in DatasetCatalog.get(self._dataset_name)}
        d = self._by_file.get(inp.get("file_name"))
        gt = None if d is None else semantic_view(self._dataset_name).ground_truth(d)
        if gt is None:
            raise KeyError(
                f"No ground truth for '{inp.get('file_name')}' in dataset "
                f"'{self._dataset_name}': the input has no 'sem_seg' and the dataset no mask or "
                "annotations for it."
            )
        return gt
