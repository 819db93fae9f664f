"""Generic registration of semantic-segmentation datasets with image-level labels.

Every BMP dataset (VOC, COCO, the synthetic one, COCO-mini) is a folder of images, a split list of
file stems, optionally a folder of PNG masks and a file of image-level labels. This module turns
such a layout into detectron2 dataset dicts:

    {"file_name", "image_id", "height", "width", "cls_labels": [ids in 1..K],
     optional "sem_seg_file_name"}

Paths are stored relative to ``$DETECTRON2_DATASETS`` (default ``./datasets``) and resolved when
the dataset is *loaded*, not when ``bmp`` is imported, so registration is free and the root can be
changed (e.g. by tests) after import. Nothing is dropped silently: missing files and inconsistent
label files are errors, and images without any foreground label are excluded from training splits
with a warning that says how many and from which list.
"""

import json
import logging
import os
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from detectron2.data import DatasetCatalog, MetadataCatalog

from ..image_io import image_size

__all__ = [
    "dataset_root",
    "resolve_path",
    "read_split_file",
    "read_image_labels",
    "write_image_labels",
    "read_image_sizes",
    "write_image_sizes",
    "register_sem_seg_dataset",
    "registered_bmp_datasets",
    "load_dataset_dicts",
]

logger = logging.getLogger(__name__)

IGNORE_LABEL = 255
_BMP_DATASETS: List[str] = []


def dataset_root() -> str:
    """The datasets root, read now (not at import) from ``$DETECTRON2_DATASETS``."""
    return os.path.expanduser(os.environ.get("DETECTRON2_DATASETS", "datasets"))


def resolve_path(path: Optional[str], root: Optional[str] = None) -> Optional[str]:
    """Join a root-relative path with the datasets root; absolute paths are kept."""
    if path is None:
        return None
    path = os.path.expanduser(path)
    if os.path.isabs(path):
        return path
    return os.path.join(root if root is not None else dataset_root(), path)


def read_split_file(path: str) -> List[str]:
    """Stems listed one per line (blank lines and ``#`` comments skipped; first token used)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"Split list '{path}' not found. Prepare the dataset first (see datasets/README.md) "
            "or point $DETECTRON2_DATASETS at the folder that contains it."
        )
    stems: List[str] = []
    seen = set()
    with open(path, "r", encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            stem = line.split()[0]
            if stem in seen:
                raise ValueError(f"Split list '{path}' line {lineno}: '{stem}' is listed twice.")
            seen.add(stem)
            stems.append(stem)
    return stems


def _check_ids(ids: Sequence[Any], num_classes: Optional[int], where: str) -> List[int]:
    out = []
    for v in ids:
        if isinstance(v, bool) or not isinstance(v, int):
            try:
                iv = int(str(v))
            except ValueError:
                raise ValueError(f"{where}: class id {v!r} is not an integer.") from None
        else:
            iv = v
        if iv < 1 or (num_classes is not None and iv > num_classes):
            hi = num_classes if num_classes is not None else "K"
            raise ValueError(
                f"{where}: class id {iv} is out of range; image-level labels are foreground ids "
                f"1..{hi} (0 is background and never listed)."
            )
        out.append(iv)
    return sorted(set(out))


def read_image_labels(path: str, num_classes: Optional[int] = None) -> Dict[str, List[int]]:
    """Read image-level labels: ``{stem: sorted foreground ids}``.

    Two formats: a text file with one ``<stem> <id> <id> ...`` line per image (an image with no
    foreground is a line with the stem alone), or a JSON object ``{"<stem>": [ids], ...}``.
    Ids must be in ``1..num_classes``; anything else is an error naming the file and line.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"Image-label file '{path}' not found. It is written by the dataset's prepare script "
            "(see datasets/README.md)."
        )
    labels: Dict[str, List[int]] = {}
    if path.endswith(".json"):
        with open(path, "r", encoding="utf-8") as f:
            try:
                raw = json.load(f)
            except json.JSONDecodeError as e:
                raise ValueError(f"Image-label file '{path}' is not valid JSON: {e}") from e
        if not isinstance(raw, dict):
            raise ValueError(f"Image-label file '{path}' must hold a JSON object stem -> [ids].")
        for stem, ids in raw.items():
            if not isinstance(ids, list):
                raise ValueError(f"Image-label file '{path}', '{stem}': expected a list of ids.")
            labels[str(stem)] = _check_ids(ids, num_classes, f"Image-label file '{path}', {stem}")
        return labels
    with open(path, "r", encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            parts = line.split()
            if not parts or parts[0].startswith("#"):
                continue
            stem = parts[0]
            if stem in labels:
                raise ValueError(f"Image-label file '{path}' line {lineno}: '{stem}' is repeated.")
            labels[stem] = _check_ids(
                parts[1:], num_classes, f"Image-label file '{path}' line {lineno} ({stem})"
            )
    return labels


def _atomic_write_text(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def write_image_labels(path: str, labels: Mapping[str, Sequence[int]]) -> None:
    """Write labels in the format :func:`read_image_labels` reads (JSON if ``path`` ends so)."""
    clean = {str(k): sorted(int(i) for i in set(v)) for k, v in labels.items()}
    if path.endswith(".json"):
        text = json.dumps(clean, indent=0, sort_keys=True) + "\n"
    else:
        text = "".join(" ".join([k] + [str(i) for i in clean[k]]) + "\n" for k in sorted(clean))
    _atomic_write_text(path, text)


def read_image_sizes(path: str) -> Dict[str, Tuple[int, int]]:
    """Read ``<stem> <height> <width>`` lines (a cache that spares reading image headers)."""
    sizes: Dict[str, Tuple[int, int]] = {}
    with open(path, "r", encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 3:
                raise ValueError(f"Size file '{path}' line {lineno}: expected '<stem> <h> <w>'.")
            sizes[parts[0]] = (int(parts[1]), int(parts[2]))
    return sizes


def write_image_sizes(path: str, sizes: Mapping[str, Tuple[int, int]]) -> None:
    """Write the ``<stem> <height> <width>`` cache read by :func:`read_image_sizes`."""
    text = "".join(f"{k} {int(h)} {int(w)}\n" for k, (h, w) in sorted(sizes.items()))
    _atomic_write_text(path, text)


def _missing_error(kind: str, missing: List[str], folder: str, name: str) -> FileNotFoundError:
    shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
    return FileNotFoundError(
        f"Dataset '{name}': {len(missing)} {kind} listed in the split are missing from '{folder}' "
        f"(e.g. {shown}). Re-run the dataset's prepare script or fix the split list."
    )


def load_sem_seg_dicts(
    name: str,
    *,
    image_dir: str,
    split_file: str,
    num_classes: int,
    mask_dir: Optional[str] = None,
    label_file: Optional[str] = None,
    sizes_file: Optional[str] = None,
    image_ext: str = ".jpg",
    mask_ext: str = ".png",
    require_labels: bool = False,
    root: Optional[str] = None,
    prepare_hint: str = "see datasets/README.md",
) -> List[Dict[str, Any]]:
    """Build the dataset dicts of one split; see :func:`register_sem_seg_dataset`."""
    root = root if root is not None else dataset_root()
    image_dir_abs = resolve_path(image_dir, root)
    split_abs = resolve_path(split_file, root)
    mask_abs = resolve_path(mask_dir, root)
    for what, path in (
        ("split list", split_abs),
        ("image-label file", resolve_path(label_file, root)),
    ):
        if path is not None and not os.path.isfile(path):
            raise FileNotFoundError(
                f"Dataset '{name}': {what} '{path}' not found (datasets root '{root}', from "
                f"$DETECTRON2_DATASETS or ./datasets). To create it, {prepare_hint}."
            )
    stems = read_split_file(split_abs)
    if not stems:
        raise ValueError(
            f"Dataset '{name}' is empty: split list '{split_abs}' lists no images. Re-run the "
            "dataset's prepare script."
        )
    labels = None
    if label_file is not None:
        label_abs = resolve_path(label_file, root)
        labels = read_image_labels(label_abs, num_classes)
        unknown = [s for s in stems if s not in labels]
        if unknown:
            shown = ", ".join(unknown[:5]) + (" ..." if len(unknown) > 5 else "")
            raise ValueError(
                f"Dataset '{name}': {len(unknown)} images of '{split_abs}' have no entry in the "
                f"image-label file '{label_abs}' (e.g. {shown}). The two files are out of sync; "
                "re-run the prepare script."
            )
        if require_labels:
            empty = [s for s in stems if not labels[s]]
            if empty:
                shown = ", ".join(empty[:5]) + (" ..." if len(empty) > 5 else "")
                logger.warning(
                    "Dataset '%s': excluding %d of %d images listed in '%s' that have no "
                    "foreground image-level label in '%s' (e.g. %s); training needs at least one.",
                    name,
                    len(empty),
                    len(stems),
                    split_abs,
                    label_abs,
                    shown,
                )
                stems = [s for s in stems if labels[s]]
                if not stems:
                    raise ValueError(
                        f"Dataset '{name}' is empty: no image of '{split_abs}' has a foreground "
                        f"label in '{label_abs}'."
                    )
    elif require_labels:
        raise ValueError(f"Dataset '{name}' is a training split but has no image-label file.")

    files = [os.path.join(image_dir_abs, s + image_ext) for s in stems]
    missing = [f for f in files if not os.path.isfile(f)]
    if missing:
        raise _missing_error("images", [os.path.basename(m) for m in missing], image_dir_abs, name)
    mask_files = None
    if mask_abs is not None:
        mask_files = [os.path.join(mask_abs, s + mask_ext) for s in stems]
        missing = [f for f in mask_files if not os.path.isfile(f)]
        if missing:
            raise _missing_error("masks", [os.path.basename(m) for m in missing], mask_abs, name)

    sizes: Dict[str, Tuple[int, int]] = {}
    sizes_abs = resolve_path(sizes_file, root)
    if sizes_abs is not None and os.path.isfile(sizes_abs):
        sizes = read_image_sizes(sizes_abs)

    dicts = []
    for i, stem in enumerate(stems):
        h, w = sizes[stem] if stem in sizes else image_size(files[i])
        d: Dict[str, Any] = {"file_name": files[i], "image_id": stem, "height": h, "width": w}
        if labels is not None:
            d["cls_labels"] = list(labels[stem])
        if mask_files is not None:
            d["sem_seg_file_name"] = mask_files[i]
        dicts.append(d)
    return dicts


def register_sem_seg_dataset(
    name: str,
    *,
    image_dir: str,
    split_file: str,
    class_names: Sequence[str],
    mask_dir: Optional[str] = None,
    label_file: Optional[str] = None,
    sizes_file: Optional[str] = None,
    stuff_colors: Optional[Sequence[Sequence[int]]] = None,
    image_ext: str = ".jpg",
    mask_ext: str = ".png",
    require_labels: bool = False,
    prepare: Optional[Callable[[], None]] = None,
    prepare_hint: str = "see datasets/README.md",
    evaluator_type: Optional[str] = "sem_seg",
    **extra_metadata: Any,
) -> None:
    """Register a split with detectron2's ``DatasetCatalog`` / ``MetadataCatalog``.

    Args:
        name: dataset name.
        image_dir, split_file, mask_dir, label_file, sizes_file: paths relative to the datasets
            root (or absolute). ``mask_dir=None`` makes a labels-only split (no
            ``sem_seg_file_name``), as training splits must be.
        class_names: all classes with ``"background"`` at index 0 (K + 1 names).
        require_labels: a training split; images whose label set is empty are excluded (with a
            warning naming the count and the list file), a split left empty is an error.
        prepare: called before every load, e.g. to generate a synthetic dataset on first use.
        prepare_hint: what to do when the files are missing, quoted in the error.
        evaluator_type: ``"sem_seg"`` for splits with masks; ``None`` for image-only splits.
        extra_metadata: more metadata fields.

    Metadata gets ``stuff_classes``, ``stuff_colors``, ``ignore_label=255``,
    ``num_fg_classes`` (K), ``has_sem_seg`` and the (root-relative) paths ``image_dir``,
    ``sem_seg_dir``, ``split_file``, ``image_label_file``.
    """
    if not class_names or class_names[0] != "background":
        raise ValueError(f"Dataset '{name}': class_names must start with 'background'.")
    num_classes = len(class_names) - 1

    def _load() -> List[Dict[str, Any]]:
        if prepare is not None:
            prepare()
        return load_sem_seg_dicts(
            name,
            image_dir=image_dir,
            split_file=split_file,
            num_classes=num_classes,
            mask_dir=mask_dir,
            label_file=label_file,
            sizes_file=sizes_file,
            image_ext=image_ext,
            mask_ext=mask_ext,
            require_labels=require_labels,
            prepare_hint=prepare_hint,
        )

    DatasetCatalog.register(name, _load)
    meta: Dict[str, Any] = dict(
        stuff_classes=list(class_names),
        ignore_label=IGNORE_LABEL,
        num_fg_classes=num_classes,
        has_sem_seg=mask_dir is not None,
        image_dir=image_dir,
        sem_seg_dir=mask_dir,
        split_file=split_file,
        image_label_file=label_file,
        dataset_root_env="DETECTRON2_DATASETS",
    )
    if evaluator_type is not None:
        meta["evaluator_type"] = evaluator_type
    if stuff_colors is not None:
        if len(stuff_colors) != len(class_names):
            raise ValueError(
                f"Dataset '{name}': {len(stuff_colors)} colours for " f"{len(class_names)} classes."
            )
        meta["stuff_colors"] = [list(int(c) for c in col) for col in stuff_colors]
    meta.update(extra_metadata)
    MetadataCatalog.get(name).set(**meta)
    _BMP_DATASETS.append(name)


def registered_bmp_datasets() -> List[str]:
    """Names registered through :func:`register_sem_seg_dataset`, in registration order."""
    return list(_BMP_DATASETS)


def load_dataset_dicts(name: str) -> List[Dict[str, Any]]:
    """``DatasetCatalog.get`` with errors that help: unknown names list BMP's datasets."""
    if name not in DatasetCatalog.list():
        raise KeyError(
            f"Dataset '{name}' is not registered. BMP registers: "
            f"{', '.join(registered_bmp_datasets())}. Did you `import bmp` (which registers them) "
            "or misspell DATASETS.TRAIN / DATASETS.TEST?"
        )
    dicts = DatasetCatalog.get(name)
    if not dicts:
        raise ValueError(f"Dataset '{name}' is empty.")
    return dicts
