"""Dataset registration: importing this registers every BMP dataset (cheap, no file I/O)."""

from . import coco, coco_mini, common, synthetic, voc  # coco_mini registers itself on import
from .common import (
    dataset_root,
    load_dataset_dicts,
    read_image_labels,
    read_split_file,
    register_sem_seg_dataset,
    registered_bmp_datasets,
    write_image_labels,
)

__all__ = [
    "dataset_root",
    "load_dataset_dicts",
    "read_image_labels",
    "read_split_file",
    "register_sem_seg_dataset",
    "registered_bmp_datasets",
    "write_image_labels",
    "coco",
    "coco_mini",
    "common",
    "synthetic",
    "voc",
]

voc.register_all_voc()
coco.register_all_coco()
synthetic.register_all_synthetic()
