"""Evaluation: seed quality (CAM / PAR / BSP), image-level classification, per-class tables.

Segmentation mIoU uses detectron2's ``SemSegEvaluator`` unchanged.
"""

from .classification_evaluation import (
    ClassificationEvaluator,
    average_precision,
    classification_metrics,
)
from .seed_evaluation import SeedEvaluator, seed_metrics
from .tables import format_per_class_table

__all__ = [
    "ClassificationEvaluator",
    "SeedEvaluator",
    "average_precision",
    "classification_metrics",
    "format_per_class_table",
    "seed_metrics",
]
