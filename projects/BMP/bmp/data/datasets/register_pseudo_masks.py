"""An exported folder of pseudo masks as a detectron2 semantic-segmentation dataset.

``tools/export_pseudo_masks.py`` writes, for every image of a registered split::

    <export>/SegmentationClass/<stem>.png      palette PNG (VOC colours), for people and VOC tools
    <export>/SegmentationClassIds/<stem>.png   plain ids, what detectron2's DatasetMapper reads
    <export>/export_info.json                  settings, classes and the images (file, size, labels)

:func:`register_pseudo_masks` turns that folder into a dataset whose ``sem_seg_file_name`` are
the id PNGs, so any detectron2 semantic-segmentation trainer (e.g. its DeepLab project) can train
on the pseudo masks, with 255 (uncertain) ignored by the loss.
"""

import json
import os
from typing import Any, Dict, List

from detectron2.data import DatasetCatalog, MetadataCatalog

__all__ = [
    "INFO_FILE",
    "PALETTE_DIR",
    "IDS_DIR",
    "read_export_info",
    "load_pseudo_mask_dicts",
    "register_pseudo_masks",
]

INFO_FILE = "export_info.json"
PALETTE_DIR = "SegmentationClass"
IDS_DIR = "SegmentationClassIds"


def read_export_info(export_dir: str) -> Dict[str, Any]:
    """The export's ``export_info.json``, with an error saying how to create it."""
    path = os.path.join(export_dir, INFO_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"'{path}' not found: '{export_dir}' is not a pseudo-mask export; create one with "
            "`python tools/export_pseudo_masks.py`."
        )
    with open(path, "r", encoding="utf-8") as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"'{path}' is not valid JSON: {e}") from e


def load_pseudo_mask_dicts(export_dir: str) -> List[Dict[str, Any]]:
    """Dataset dicts of an export; every listed mask must exist (a finished export)."""
    info = read_export_info(export_dir)
    dicts, missing = [], []
    for image in info["images"]:
        mask = os.path.join(export_dir, IDS_DIR, image["stem"] + ".png")
        if not os.path.isfile(mask):
            missing.append(image["stem"])
            continue
        dicts.append(
            {
                "file_name": image["file_name"],
                "image_id": image["stem"],
                "height": image["height"],
                "width": image["width"],
                "cls_labels": list(image["cls_labels"]),
                "sem_seg_file_name": mask,
            }
        )
    if missing:
        raise FileNotFoundError(
            f"Pseudo-mask export '{export_dir}' is incomplete: {len(missing)} masks missing "
            f"(e.g. {', '.join(missing[:5])}). Re-run tools/export_pseudo_masks.py to finish it."
        )
    return dicts


def register_pseudo_masks(name: str, export_dir: str) -> None:
    """Register ``export_dir`` as dataset ``name`` (masks = pseudo labels, 255 ignored)."""
    export_dir = os.path.abspath(export_dir)
    info = read_export_info(export_dir)
    DatasetCatalog.register(name, lambda: load_pseudo_mask_dicts(export_dir))
    MetadataCatalog.get(name).set(
        stuff_classes=list(info["class_names"]),
        stuff_colors=[list(c) for c in info["stuff_colors"]],
        ignore_label=int(info["ignore_label"]),
        evaluator_type="sem_seg",
    )
