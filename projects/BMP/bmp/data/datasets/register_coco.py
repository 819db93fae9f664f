"""MS COCO 2014 as semantic segmentation, laid out by ``datasets/prepare_coco_2014_sem_seg.py``.

Under ``$DETECTRON2_DATASETS/coco/``: the official ``train2014/`` and ``val2014/`` images, and
``sem_seg_2014/`` with ``{train2014,val2014}/*.png`` masks (ids 1..80 = COCO categories in id order,
255 = crowd), split lists ``{split}.txt``, labels ``cls_labels_{split}.txt`` and sizes.
"""

from typing import List

from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES

from .split import SplitLayout, register_family

__all__ = ["COCO_CLASSES", "COCO_COLORS", "register_all_coco"]

_THINGS = sorted((c for c in COCO_CATEGORIES if c.get("isthing", 0) == 1), key=lambda c: c["id"])
COCO_CLASSES: List[str] = ["background"] + [c["name"] for c in _THINGS]
COCO_COLORS: List[List[int]] = [[0, 0, 0]] + [list(c["color"]) for c in _THINGS]

_SEG = "coco/sem_seg_2014"
_HINT = "run `python datasets/prepare_coco_2014_sem_seg.py` (see datasets/README.md)"


def _layout(split: str, with_masks: bool) -> SplitLayout:
    return SplitLayout(
        f"coco/{split}", f"{_SEG}/{split}.txt", f"{_SEG}/cls_labels_{split}.txt",
        f"{_SEG}/{split}" if with_masks else None, f"{_SEG}/image_sizes_{split}.txt",
    )  # fmt: skip


def register_all_coco() -> None:
    """Register COCO 2014 train (labels only / with masks) and val (masks)."""
    splits = [
        ("coco_2014_train_wsss", _layout("train2014", False), True),
        ("coco_2014_train_sem_seg", _layout("train2014", True), False),
        ("coco_2014_val_sem_seg", _layout("val2014", True), False),
    ]
    register_family(splits, COCO_CLASSES, COCO_COLORS, _HINT)
