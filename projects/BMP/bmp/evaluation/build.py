"""Which evaluators a split gets: segmentation, CRF, seeds, classification, or a submission.

The trainer's ``build_evaluator`` only calls :func:`build_bmp_evaluator`, so the choice lives
with the evaluators it chooses between.
"""

import logging
import os
from typing import List, Optional

from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog
from detectron2.evaluation import DatasetEvaluator, DatasetEvaluators
from detectron2.utils import comm

from ..data.registered import SUBMISSION_EVALUATOR, semantic_view
from .classification_evaluation import ClassificationEvaluator
from .crf import CRFParams
from .crf_evaluator import CRFRefinedEvaluator
from .progress import EvalProgressBar
from .seed_evaluation import SeedEvaluator
from .sem_seg_evaluation import GroundTruthSemSegEvaluator
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

    Any registered dataset is scored (:mod:`bmp.data.registered`): mIoU where it has ground
    truth, label accuracy where it has image-level labels only. A split whose metadata says
    ``evaluator_type = "voc_submission"`` (``voc_2012_test``) instead gets its predictions written
    as palette PNGs for the benchmark server.
    """
    crf = CRFParams.from_config(cfg.TEST.CRF)
    dicts = DatasetCatalog.get(dataset_name)
    progress = EvalProgressBar(dataset_name, len(dicts))
    evaluation = semantic_view(dataset_name, dicts).evaluation
    if evaluation == "submission":
        folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "submission", dataset_name)
        writer = SemSegSubmissionWriter(dataset_name, os.path.join(folder, VOC_SUBMISSION_DIR))
        if crf is not None:  # the server gets the CRF-refined prediction only
            writer = CRFRefinedEvaluator(writer, crf)
        return DatasetEvaluators([progress, writer])
    if evaluation == "none":
        raise ValueError(
            f"Dataset '{dataset_name}' in DATASETS.TEST has nothing to score against: no masks, "
            "no annotations, no image-level labels. To write predictions for a server instead, "
            f'set MetadataCatalog.get("{dataset_name}").evaluator_type = "{SUBMISSION_EVALUATOR}".'
        )
    classification = ClassificationEvaluator(dataset_name, distributed=True)
    if evaluation == "classification":  # image-level labels only: no mIoU to compute
        logging.getLogger(__name__).info(
            f"Dataset '{dataset_name}' has image-level labels only: scored by label accuracy."
        )
        return DatasetEvaluators([progress, OutputGatedEvaluator("cls_score", classification)])
    evaluators: List[DatasetEvaluator] = [progress, GroundTruthSemSegEvaluator(dataset_name)]
    if crf is not None:  # mIoU with and without CRF, from the same predictions
        evaluators.append(
            CRFRefinedEvaluator(
                GroundTruthSemSegEvaluator(dataset_name), crf, result_key="sem_seg_crf"
            )
        )
    if cfg.TEST.BMP.EXTRA_OUTPUTS:
        evaluators.append(SeedEvaluator(dataset_name, distributed=True))
    evaluators.append(OutputGatedEvaluator("cls_score", classification))
    return DatasetEvaluators(evaluators)
