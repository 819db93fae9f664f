"""One split of a semantic-segmentation dataset with image-level labels, as detectron2 dicts.

Every BMP dataset (VOC, COCO, the synthetic one, coco_mini) is a folder of images, a split list,
optionally a folder of PNG masks, and a file of image-level labels (:mod:`bmp.data.label_files`).
A :class:`SplitLayout` says where those are; :func:`load_split` turns them into

    {"file_name", "image_id", "height", "width", "cls_labels": [ids in 1..K],
     optional "sem_seg_file_name"}

and :func:`register_split` registers a split with detectron2's catalogs. Paths are relative to a
root read when the split is *loaded* (``$DETECTRON2_DATASETS``, default ``./datasets``), so
registration does no I/O and the root can change after import. Nothing is dropped silently:
missing files are errors.
"""

import logging
import os
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from detectron2.data import DatasetCatalog, MetadataCatalog

from ..image_io import image_size
from ..label_files import read_image_labels, read_image_sizes, read_split_file

__all__ = [
    "IGNORE_LABEL",
    "SplitLayout",
    "dataset_root",
    "load_split",
    "register_split",
    "register_family",
    "registered_bmp_datasets",
    "load_dataset_dicts",
]

logger = logging.getLogger(__name__)

# The id of "not labelled" in every mask file BMP reads or writes.
IGNORE_LABEL = 255
_BMP_DATASETS: List[str] = []


def dataset_root() -> str:
    """The datasets root, read now (not at import) from ``$DETECTRON2_DATASETS``."""
    return os.path.expanduser(os.environ.get("DETECTRON2_DATASETS", "datasets"))


@dataclass(frozen=True)
class SplitLayout:
    """Where one split's files are, relative to the dataset root (or absolute).

    ``mask_dir=None`` makes a labels-only split, as weakly supervised training splits are;
    ``label_file=None`` a split without image-level labels (the VOC test images).
    """

    image_dir: str
    split_file: str
    label_file: Optional[str] = None
    mask_dir: Optional[str] = None
    sizes_file: Optional[str] = None
    image_ext: str = ".jpg"
    mask_ext: str = ".png"


def _join(root: str, path: Optional[str]) -> Optional[str]:
    return None if path is None else os.path.join(root, os.path.expanduser(path))


def _exclude_unlabelled(name: str, stems: List[str], labels: Dict[str, List[int]], where: str):
    empty = [s for s in stems if not labels[s]]
    if empty:
        logger.warning(
            "Dataset '%s': excluding %d of %d images that have no foreground image-level label "
            "in %s (e.g. %s), as training leaves them out.",
            name, len(empty), len(stems), where, ", ".join(empty[:5]),
        )  # fmt: skip
    kept = [s for s in stems if labels[s]]
    if not kept:
        raise ValueError(f"Dataset '{name}' is empty: no image has a foreground label in {where}.")
    return kept


def _labels(name: str, stems: List[str], path: str, num_classes: int) -> Dict[str, List[int]]:
    labels = read_image_labels(path, num_classes)
    unknown = [s for s in stems if s not in labels]
    if unknown:
        raise ValueError(
            f"Dataset '{name}': {len(unknown)} images of the split have no entry in the "
            f"image-label file '{path}' (e.g. {', '.join(unknown[:5])}). The split list and the "
            "label file are out of sync; re-run the prepare script."
        )
    return labels


def _existing(name: str, kind: str, folder: str, stems: List[str], ext: str) -> List[str]:
    files = [os.path.join(folder, s + ext) for s in stems]
    missing = [os.path.basename(f) for f in files if not os.path.isfile(f)]
    if missing:
        raise FileNotFoundError(
            f"Dataset '{name}': {len(missing)} {kind} listed in the split are missing from "
            f"'{folder}' (e.g. {', '.join(missing[:5])}). Re-run the dataset's prepare script or "
            "fix the split list."
        )
    return files


def load_split(
    name: str,
    layout: SplitLayout,
    num_classes: int,
    root: str,
    require_labels: bool = False,
    prepare_hint: str = "see datasets/README.md",
    drop_unlabelled: bool = False,
) -> List[Dict[str, Any]]:
    """The dataset dicts of one split (see the module docstring).

    ``require_labels`` marks a training split: it must have a label file. Its images without a
    foreground label stay in the dicts; training leaves them out or keeps them as negatives
    (``DATALOADER.FILTER_EMPTY_ANNOTATIONS``, :func:`bmp.data.registered.training_dataset_dicts`).
    ``drop_unlabelled`` leaves them out here, with a warning: for a split with masks that must
    hold the images training sees (seed evaluation on coco_mini's train images).
    """
    split_file = _join(root, layout.split_file)
    label_file = _join(root, layout.label_file)
    for what, path in (("split list", split_file), ("image-label file", label_file)):
        if path is not None and not os.path.isfile(path):
            raise FileNotFoundError(
                f"Dataset '{name}': {what} '{path}' not found (datasets root '{root}', from "
                f"$DETECTRON2_DATASETS or ./datasets). To create it, {prepare_hint}."
            )
    stems = read_split_file(split_file)
    if not stems:
        raise ValueError(f"Dataset '{name}' is empty: '{split_file}' lists no images.")
    labels = None
    if label_file is not None:
        labels = _labels(name, stems, label_file, num_classes)
        if drop_unlabelled:
            where = f"'{label_file}' (split list '{split_file}')"
            stems = _exclude_unlabelled(name, stems, labels, where)
    elif require_labels:
        raise ValueError(f"Dataset '{name}' is a training split but has no image-level labels.")
    files = _existing(name, "images", _join(root, layout.image_dir), stems, layout.image_ext)
    masks = None
    if layout.mask_dir is not None:
        masks = _existing(name, "masks", _join(root, layout.mask_dir), stems, layout.mask_ext)
    sizes_file = _join(root, layout.sizes_file)
    sizes = read_image_sizes(sizes_file) if sizes_file and os.path.isfile(sizes_file) else {}
    dicts = []
    for i, stem in enumerate(stems):
        h, w = sizes[stem] if stem in sizes else image_size(files[i])
        d: Dict[str, Any] = {"file_name": files[i], "image_id": stem, "height": h, "width": w}
        if labels is not None:
            d["cls_labels"] = list(labels[stem])
        if masks is not None:
            d["sem_seg_file_name"] = masks[i]
        dicts.append(d)
    return dicts


def register_split(
    name: str,
    layout: SplitLayout,
    class_names: Sequence[str],
    colors: Sequence[Sequence[int]],
    *,
    require_labels: bool = False,
    root: Callable[[], str] = dataset_root,
    prepare_hint: str = "see datasets/README.md",
    drop_unlabelled: bool = False,
) -> None:
    """Register a split with detectron2's ``DatasetCatalog`` / ``MetadataCatalog``.

    ``class_names`` are all classes with ``"background"`` first (K + 1), ``colors`` one RGB
    colour each; ``root`` is called when the split is loaded. Metadata: ``stuff_classes``,
    ``stuff_colors``, ``ignore_label`` and, for splits with masks, ``evaluator_type`` "sem_seg".
    """
    if not class_names or class_names[0] != "background":
        raise ValueError(f"Dataset '{name}': class_names must start with 'background'.")
    if len(colors) != len(class_names):
        raise ValueError(f"Dataset '{name}': {len(colors)} colours for {len(class_names)} classes.")
    k = len(class_names) - 1
    DatasetCatalog.register(
        name,
        lambda: load_split(name, layout, k, root(), require_labels, prepare_hint, drop_unlabelled),
    )
    meta: Dict[str, Any] = dict(
        stuff_classes=list(class_names),
        stuff_colors=[[int(c) for c in col] for col in colors],
        ignore_label=IGNORE_LABEL,
    )
    if layout.mask_dir is not None:
        meta["evaluator_type"] = "sem_seg"
    MetadataCatalog.get(name).set(**meta)
    _BMP_DATASETS.append(name)


def register_family(
    splits: Sequence[Tuple[str, SplitLayout, bool]],
    class_names: Sequence[str],
    colors: Sequence[Sequence[int]],
    prepare_hint: str,
    root: Callable[[], str] = dataset_root,
) -> None:
    """Register the splits ``(name, layout, require_labels)`` of one dataset family."""
    for name, layout, train in splits:
        register_split(
            name, layout, class_names, colors, require_labels=train, root=root,
            prepare_hint=prepare_hint,
        )  # fmt: skip


def registered_bmp_datasets() -> List[str]:
    """Names registered through :func:`register_split`, in registration order."""
    return list(_BMP_DATASETS)


def load_dataset_dicts(name: str) -> List[Dict[str, Any]]:
    """``DatasetCatalog.get`` with errors that help: unknown names list BMP's datasets."""
    if name not in DatasetCatalog.list():
        raise KeyError(
            f"Dataset '{name}' is not registered. BMP registers: "
            f"{', '.join(registered_bmp_datasets())}. Register yours first (train_net.py "
            "--register FILE), or check DATASETS.TRAIN / DATASETS.TEST for a typo."
        )
    try:
        dicts = DatasetCatalog.get(name)
    except KeyError as e:  # load_coco_json: a category_id that the file's 'categories' lack
        where = MetadataCatalog.get(name).get("json_file")
        raise ValueError(
            f"Dataset '{name}' could not be loaded{f' from {where!r}' if where else ''}: "
            f"{str(e).strip(chr(34))} Add the category to the file's 'categories' or remove the "
            "annotation."
        ) from e
    if not dicts:
        raise ValueError(f"Dataset '{name}' is empty: its loader returned no images.")
    return dicts
