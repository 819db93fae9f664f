"""Image tags only: a folder of images and a file of ``<image> <class names...>`` lines.

For users with image-level tags and no masks at all. The labels file is plain text or CSV:

    # comments and blank lines are skipped
    cat_001.jpg cat
    park_17.jpg dog person
    empty_03.jpg                      <- no class: a negative image
    street_9.jpg,person,potted plant  <- with commas, class names may hold spaces

Image paths are relative to ``image_root`` (or absolute). Every problem is one error naming the
file and line: a missing image, an unknown class name, an image listed twice, an empty file.
"""

import csv
import os
from typing import Any, Dict, List, Optional, Sequence

from detectron2.data import DatasetCatalog, MetadataCatalog

from ..registered import IGNORE

__all__ = ["register_image_labels", "load_image_labels"]


def _fields(line: str) -> List[str]:
    if "," in line:
        return [f.strip() for f in next(csv.reader([line])) if f.strip()]
    return line.split()


def load_image_labels(
    labels_file: str, image_root: str, class_names: Sequence[str]
) -> List[Dict[str, Any]]:
    """Dicts ``{"file_name", "image_id", "cls_labels"}`` (ids 1..K in ``class_names`` order)."""
    if not os.path.isfile(labels_file):
        raise FileNotFoundError(f"Labels file '{labels_file}' does not exist.")
    ids = {name: i + 1 for i, name in enumerate(class_names)}
    dicts: List[Dict[str, Any]] = []
    seen: Dict[str, int] = {}
    with open(labels_file, "r", encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            fields = _fields(line.strip())
            if not fields or fields[0].startswith("#"):
                continue
            where = f"Labels file '{labels_file}' line {lineno}"
            image, names = fields[0], fields[1:]
            if image in seen:
                raise ValueError(f"{where}: image '{image}' is listed again (first on line "
                                 f"{seen[image]}); list each image once.")  # fmt: skip
            seen[image] = lineno
            path = os.path.join(image_root, image)
            if not os.path.isfile(path):
                raise FileNotFoundError(f"{where}: image '{image}' not found under '{image_root}'.")
            unknown = [n for n in names if n not in ids]
            if unknown:
                raise ValueError(
                    f"{where}: class '{unknown[0]}' is not in the class list "
                    f"({', '.join(class_names)}); fix the name or add the class."
                )
            dicts.append(
                {
                    "file_name": path,
                    "image_id": os.path.splitext(image)[0],
                    "cls_labels": sorted({ids[n] for n in names}),
                }
            )
    if not dicts:
        raise ValueError(f"Labels file '{labels_file}' lists no images.")
    return dicts


def register_image_labels(
    name: str,
    image_root: str,
    labels_file: str,
    class_names: Sequence[str],
    colors: Optional[Sequence[Sequence[int]]] = None,
) -> None:
    """Register a labels-only dataset: it trains by name, and is scored by image-label accuracy.

    ``class_names`` are the foreground classes (a leading "background" is allowed and dropped);
    ``colors`` one RGB colour per foreground class for pictures (default: detectron2's colour
    map).
    """
    classes = [str(c) for c in class_names]
    if classes and classes[0].lower() == "background":
        classes = classes[1:]
    if not classes:
        raise ValueError(f"Dataset '{name}': class_names is empty; give the foreground classes.")
    doubles = sorted({c for c in classes if classes.count(c) > 1})
    if doubles:
        raise ValueError(f"Dataset '{name}': class name(s) {doubles} are given twice.")
    if colors is not None and len(colors) != len(classes):
        raise ValueError(f"Dataset '{name}': {len(colors)} colours for {len(classes)} classes.")
    DatasetCatalog.register(name, lambda: load_image_labels(labels_file, image_root, classes))
    meta: Dict[str, Any] = dict(stuff_classes=["background"] + classes, ignore_label=IGNORE)
    if colors is not None:
        meta["stuff_colors"] = [[0, 0, 0]] + [[int(v) for v in c] for c in colors]
    MetadataCatalog.get(name).set(**meta)
