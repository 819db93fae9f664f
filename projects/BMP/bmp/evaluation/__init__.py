"""Evaluation: seed quality (CAM / PAR / BSP), image-level classification, per-class tables.

Test splits without masks get PNGs for the benchmark server. Segmentation mIoU uses
detectron2's ``SemSegEvaluator`` unchanged.
"""

from .baselines import all_background_miou
from .classification_evaluation import (
    ClassificationEvaluator,
    average_precision,
    classification_metrics,
)
from .seed_evaluation import SeedEvaluator, seed_metrics
from .submission_writer import VOC_SUBMISSION_DIR, SemSegSubmissionWriter
from .tables import format_per_class_table

__all__ = [
    "all_background_miou",
    "ClassificationEvaluator",
    "SeedEvaluator",
    "SemSegSubmissionWriter",
    "VOC_SUBMISSION_DIR",
    "average_precision",
    "classification_metrics",
    "format_per_class_table",
    "seed_metrics",
]
