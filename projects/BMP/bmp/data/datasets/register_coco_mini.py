"""coco_mini with the PASCAL VOC label set: 396 real COCO photos for real-image WSSS runs.

The folder (see its README) holds ``images/<stem>.jpg``, ``masks_voc21/<stem>.png`` (palette PNG,
0 = background, 1..20 = VOC classes, 255 = ignore), ``image_labels_voc21.txt`` (``<stem> <ids>``,
derived from the masks) and the splits ``split_train.txt`` (314) / ``split_val.txt`` (82).

Registered names:

* ``coco_mini_voc_train_wsss``: train images with image labels only (no masks). Training leaves out
  the images without any VOC class (67 of 314, logged; ``DATALOADER.FILTER_EMPTY_ANNOTATIONS``),
  as every VOC training image has one.
* ``coco_mini_voc_train_sem_seg``: the same 247 images with masks, for seed evaluation on the
  images the model trains on.
* ``coco_mini_voc_val_sem_seg``: all 82 val images with masks (background-only images kept: they
  are legitimate test images).

The root is ``$BMP_COCO_MINI`` if set, else ``../shared/data/coco_mini`` next to the repository
(tried relative to the repository root, then to the working directory); unlike the other datasets
it does not live under ``$DETECTRON2_DATASETS``. Registration does no I/O: the root is found and the
folder read when a dataset is loaded. Metadata follows VOC (background first, VOC colours).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Optional, Tuple

from detectron2.data import DatasetCatalog

from ..label_files import read_split_file
from .register_voc import VOC_CLASSES, voc_palette
from .split import SplitLayout, register_split

__all__ = ["COCO_MINI_ENV", "COCO_MINI_DATASETS", "coco_mini_root", "register_all_coco_mini"]

COCO_MINI_ENV = "BMP_COCO_MINI"
_DEFAULT_REL = os.path.join("..", "shared", "data", "coco_mini")
# This file is <repo>/projects/BMP/bmp/data/datasets/register_coco_mini.py.
_REPO_ROOT = Path(__file__).resolve().parents[5]
_HINT = (
    f"put coco_mini at ../shared/data/coco_mini next to the repository or set {COCO_MINI_ENV} "
    "to its folder"
)

# name -> (split file, with masks, of the training images). The training split keeps every image
# (training leaves out those without a VOC class: DATALOADER.FILTER_EMPTY_ANNOTATIONS); its masked
# twin drops them here, so that seeds are scored on the images the model trains on.
COCO_MINI_DATASETS: Dict[str, Tuple[str, bool, bool]] = {
    "coco_mini_voc_train_wsss": ("split_train.txt", False, True),
    "coco_mini_voc_train_sem_seg": ("split_train.txt", True, True),
    "coco_mini_voc_val_sem_seg": ("split_val.txt", True, False),
}


def coco_mini_root() -> str:
    """Locate coco_mini now; ``FileNotFoundError`` names every path tried and the env var."""
    env = os.environ.get(COCO_MINI_ENV, "")
    if env:
        candidates = [Path(env).expanduser()]
    else:
        candidates = [_REPO_ROOT / _DEFAULT_REL, Path.cwd() / _DEFAULT_REL]
    for path in candidates:
        if (path / "split_train.txt").is_file():
            return str(path.resolve())
    tried = ", ".join(str(p) for p in candidates)
    raise FileNotFoundError(
        f"coco_mini not found (tried {tried}): {_HINT} (the folder with images/, masks_voc21/, "
        "classes_voc21.txt, image_labels_voc21.txt, split_train.txt and split_val.txt)."
    )


def _checked_root(root: Optional[str]) -> str:
    """The coco_mini root, after checking that its label set is VOC's."""
    root = root or coco_mini_root()
    classes_file = os.path.join(root, "classes_voc21.txt")
    classes = read_split_file(classes_file)  # one name per line, like a split list
    if classes != list(VOC_CLASSES):
        raise ValueError(
            f"{classes_file} lists {classes}; expected the 21 VOC classes {list(VOC_CLASSES)} "
            "(is this the VOC-21 label set of coco_mini?)."
        )
    return root


def register_all_coco_mini(root: Optional[str] = None) -> None:
    """Register the coco_mini VOC datasets; idempotent, and lazy: ``root`` (default: found by
    :func:`coco_mini_root`) is only read when a dataset is loaded."""
    labels = "image_labels_voc21.txt"
    colours = voc_palette(len(VOC_CLASSES))
    for name, (split, masks, train) in COCO_MINI_DATASETS.items():
        if name in DatasetCatalog.list():
            continue
        register_split(
            name, SplitLayout("images", split, labels, "masks_voc21" if masks else None),
            VOC_CLASSES, colours, require_labels=train, root=lambda: _checked_root(root),
            prepare_hint=_HINT, drop_unlabelled=train and masks,
        )  # fmt: skip
