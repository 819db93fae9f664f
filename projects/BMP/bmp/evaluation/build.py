"""Which evaluators a split gets: segmentation, CRF, seeds, classification, or a submission.

The trainer's ``build_evaluator`` only calls :func:`build_bmp_evaluator`, so the choice lives
with the evaluators it chooses between.
"""

import logging
import os
from typing import List, Optional

from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import DatasetEvaluator, DatasetEvaluators, SemSegEvaluator
from detectron2.utils import comm

from .classification_evaluation import ClassificationEvaluator
from .crf import CRFParams
from .crf_evaluator import CRFRefinedEvaluator
from .progress import EvalProgressBar
from .seed_evaluation import SeedEvaluator
from .submission_writer import VOC_SUBMISSION_DIR, SemSegSubmissionWriter

__all__ = ["OutputGatedEvaluator", "build_bmp_evaluator"]


class OutputGatedEvaluator(DatasetEvaluator):
    """Run ``inner`` only if the model's outputs carry ``key``; otherwise report nothing.

    Image-level classification is evaluated from ``outputs["cls_score"]``, which not every
    model variant returns. The decision is made on the outputs themselves and agreed across ranks,
    so every process calls the inner evaluator's (collective) ``evaluate`` or none does.
    """

    def __init__(self, key: str, inner: DatasetEvaluator) -> None:
        self._key = key
        self._inner = inner
        self._seen = False

    def reset(self) -> None:
        self._seen = False
        self._inner.reset()

    def process(self, inputs, outputs) -> None:
        if outputs and all(isinstance(o, dict) and self._key in o for o in outputs):
            self._seen = True
            self._inner.process(inputs, outputs)

    def evaluate(self):
        seen = any(comm.all_gather(self._seen)) if comm.get_world_size() > 1 else self._seen
        if not seen:
            logging.getLogger(__name__).info(
                f"The model returns no '{self._key}'; {type(self._inner).__name__} skipped."
            )
            return {}
        return self._inner.evaluate()


def build_bmp_evaluator(
    cfg: CfgNode, dataset_name: str, output_folder: Optional[str] = None
) -> DatasetEvaluator:
    """Segmentation mIoU (and with ``TEST.CRF`` the CRF-refined mIoU beside it), the seeds' mIoU
    when the model emits them (``TEST.BMP.EXTRA_OUTPUTS``) and image-label accuracy.

    A split without ground truth (no ``evaluator_type``, e.g. ``voc_2012_test``) instead gets its
    predictions written as palette PNGs for the benchmark server.
    """
    crf = CRFParams.from_config(cfg.TEST.CRF)
    progress = EvalProgressBar(dataset_name, len(DatasetCatalog.get(dataset_name)))
    if MetadataCatalog.get(dataset_name).get("evaluator_type") is None:
        folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "submission", dataset_name)
        writer = SemSegSubmissionWriter(dataset_name, os.path.join(folder, VOC_SUBMISSION_DIR))
        if crf is not None:  # the server gets the CRF-refined prediction only
            writer = CRFRefinedEvaluator(writer, crf)
        return DatasetEvaluators([progress, writer])
    evaluators: List[DatasetEvaluator] = [progress, SemSegEvaluator(dataset_name, distributed=True)]
    if crf is not None:  # mIoU with and without CRF, from the same predictions
        evaluators.append(
            CRFRefinedEvaluator(SemSegEvaluator(dataset_name), crf, result_key="sem_seg_crf")
        )
    if cfg.TEST.BMP.EXTRA_OUTPUTS:
        evaluators.append(SeedEvaluator(dataset_name, distributed=True))
    evaluators.append(
        OutputGatedEvaluator("cls_score", ClassificationEvaluator(dataset_name, distributed=True))
    )
    return DatasetEvaluators(evaluators)
