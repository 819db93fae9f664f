"""PASCAL VOC 2012 with the SBD augmentation, laid out by ``datasets/prepare_voc_aug.py``.

Under ``$DETECTRON2_DATASETS/VOC2012/``: ``JPEGImages/``, ``SegmentationClassAug/`` (masks, 255 =
boundary), ``ImageSets/Segmentation/{train_aug,train,val,test}.txt``, ``cls_labels.txt`` (labels
derived from the masks) and ``image_sizes.txt``.
"""

from typing import List

from detectron2.data import MetadataCatalog

from ..registered import SUBMISSION_EVALUATOR
from .split import SplitLayout, register_family

__all__ = ["VOC_CLASSES", "voc_palette", "register_all_voc"]

VOC_CLASSES = [
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
]


def voc_palette(n: int = 256) -> List[List[int]]:
    """The official VOC colour map: bits of the class id spread over the high bits of R, G, B."""
    colors = []
    for i in range(n):
        r = g = b = 0
        c = i
        for shift in range(7, -1, -1):
            r |= ((c >> 0) & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        colors.append([r, g, b])
    return colors


_VOC = "VOC2012"
_LISTS = f"{_VOC}/ImageSets/Segmentation"
_HINT = "run `python datasets/prepare_voc_aug.py` (see datasets/README.md)"


def register_all_voc() -> None:
    """Register the four VOC splits (cheap: nothing is read until a split is loaded)."""
    labels, masks = f"{_VOC}/cls_labels.txt", f"{_VOC}/SegmentationClassAug"

    def layout(split: str, with_labels: bool, with_masks: bool) -> SplitLayout:
        return SplitLayout(
            f"{_VOC}/JPEGImages", f"{_LISTS}/{split}.txt", labels if with_labels else None,
            masks if with_masks else None, f"{_VOC}/image_sizes.txt",
        )  # fmt: skip

    splits = [
        ("voc_2012_train_aug_wsss", layout("train_aug", True, False), True),
        ("voc_2012_train_sem_seg", layout("train", True, True), False),
        ("voc_2012_val_sem_seg", layout("val", True, True), False),
        # Test images come from the separate VOC2012 test download; no labels, no masks.
        ("voc_2012_test", layout("test", False, False), False),
    ]
    register_family(splits, VOC_CLASSES, voc_palette(len(VOC_CLASSES)), _HINT)
    # No ground truth: scored by writing palette PNGs for the evaluation server.
    MetadataCatalog.get("voc_2012_test").set(evaluator_type=SUBMISSION_EVALUATOR)
