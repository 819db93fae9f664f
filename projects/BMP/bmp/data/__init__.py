"""Data: dataset registration (on import), robust image I/O, mappers and augmentations."""

from . import datasets  # noqa: F401  (registers VOC, COCO and the synthetic dataset)
from .dataset_mapper import (
    SemSegEvalMapper,
    SupervisedDatasetMapper,
    WSSSDatasetMapper,
    build_train_mapper,
    cls_labels_to_multi_hot,
)
from .image_io import read_image_rgb, read_sem_seg
from .transforms import FillPadTransform, RandomPadCrop, RandomScale

__all__ = [
    "datasets",
    "SemSegEvalMapper",
    "WSSSDatasetMapper",
    "SupervisedDatasetMapper",
    "build_train_mapper",
    "cls_labels_to_multi_hot",
    "read_image_rgb",
    "read_sem_seg",
    "FillPadTransform",
    "RandomPadCrop",
    "RandomScale",
]
