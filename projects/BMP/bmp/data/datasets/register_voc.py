"""PASCAL VOC 2012 with the SBD augmentation, laid out by ``datasets/prepare_voc_aug.py``.

Under ``$DETECTRON2_DATASETS/VOC2012/``: ``JPEGImages/``, ``SegmentationClassAug/`` (masks, 255 =
boundary), ``ImageSets/Segmentation/{train_aug,train,val,test}.txt``, ``cls_labels.txt`` (labels
derived from the masks) and ``image_sizes.txt``.
"""

from typing import List

from .split import SplitLayout, register_split

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
    colors = voc_palette(len(VOC_CLASSES))
    for name, split, labels, masks, train in (
        ("voc_2012_train_aug_wsss", "train_aug", True, False, True),
        ("voc_2012_train_sem_seg", "train", True, True, False),
        ("voc_2012_val_sem_seg", "val", True, True, False),
        # Test images come from the separate VOC2012 test download; no labels, no masks.
        ("voc_2012_test", "test", False, False, False),
    ):
        layout = SplitLayout(
            image_dir=f"{_VOC}/JPEGImages",
            split_file=f"{_LISTS}/{split}.txt",
            label_file=f"{_VOC}/cls_labels.txt" if labels else None,
            mask_dir=f"{_VOC}/SegmentationClassAug" if masks else None,
            sizes_file=f"{_VOC}/image_sizes.txt",
        )
        register_split(name, layout, VOC_CLASSES, colors, require_labels=train, prepare_hint=_HINT)
