"""BMP's view of any registered dataset: image-level labels, ground truth and classes.

A dataset trains and is scored by its name alone, whichever of detectron2's standard fields its
dicts carry. The **source** of image-level labels is the first of these a dict holds:

==============  ================================  =============================================
source          dicts carry                       image-level labels (BMP ids 1..K)
==============  ================================  =============================================
``cls_labels``  ``cls_labels`` (BMP's own splits,  as given
                :mod:`.datasets.register_image_labels`)
``instances``   ``annotations`` with              the classes of the non-crowd annotations
                ``category_id`` (COCO JSON, LVIS)
``masks``       ``sem_seg_file_name``              the classes present in the mask (read once
                (``load_sem_seg``)                 per process), the ignore value left out
==============  ================================  =============================================

Rules, each checked with an error that names the dataset and says what to do:

* **classes**: background is BMP's class 0. Instance datasets get ``["background"] +
  thing_classes``. Mask datasets must name their background: ``metadata.background_id`` if set,
  else the class named "background" in ``stuff_classes``; the other classes keep their order.
* **category ids**: dicts hold detectron2's contiguous ids ``0..len(thing_classes) - 1`` (what
  ``load_coco_json`` gives); dicts whose ids cannot be contiguous (one id at or past the class
  count) are read as dataset ids through ``thing_dataset_id_to_contiguous_id``.
* **ground truth** for scoring: the mask file (ids moved as the classes are), or the annotations
  rasterised in memory by :func:`bmp.data.rasterize.render_instances` (crowd = ignore, smaller
  objects on top).
* **what a split is scored with** (``evaluation``): mIoU where it has ground truth; image-label
  accuracy only where it has image-level labels only; the VOC submission writer only where its
  metadata says ``evaluator_type = "voc_submission"``.
"""

import logging
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.catalog import Metadata
from detectron2.utils.colormap import colormap

from .image_io import read_sem_seg
from .rasterize import render_instances

__all__ = [
    "IGNORE",
    "SUBMISSION_EVALUATOR",
    "SemanticView",
    "semantic_view",
    "bmp_metadata",
    "bmp_dataset_dicts",
    "training_dataset_dicts",
]

logger = logging.getLogger(__name__)

# The ignore id of every BMP mask (ground truth, pseudo labels): 255.
IGNORE = 255
# The metadata ``evaluator_type`` of a split scored by writing predictions for a server.
SUBMISSION_EVALUATOR = "voc_submission"


def _default_colors(n: int) -> List[Tuple[int, int, int]]:
    """Black background, then detectron2's fixed colour map: for datasets that name no colours."""
    palette = colormap(rgb=True, maximum=255).astype(int).tolist()
    return [(0, 0, 0)] + [tuple(palette[i % len(palette)]) for i in range(n - 1)]


@dataclass(frozen=True)
class SemanticView:
    """How BMP reads one registered dataset (see the module docstring)."""

    dataset: str
    source: str  # "cls_labels", "instances", "masks" or "none"
    class_names: Tuple[str, ...]  # background first
    colors: Tuple[Tuple[int, int, int], ...]
    evaluation: str  # "sem_seg", "classification", "submission" or "none"
    category_to_class: Optional[Mapping[int, int]] = None  # instances: category_id -> 1..K
    mask_lut: Optional[np.ndarray] = field(default=None, compare=False)  # masks: id -> BMP id
    mask_ignore: int = IGNORE  # the ignore id of the dataset's own mask files

    @property
    def num_classes(self) -> int:
        """K, the foreground classes."""
        return len(self.class_names) - 1

    def metadata(self) -> Metadata:
        """The semantic metadata every BMP consumer reads: the registered one for BMP's own
        splits, else one derived here (``stuff_classes``, ``stuff_colors``, ``ignore_label``,
        ``evaluator_type``)."""
        own = MetadataCatalog.get(self.dataset)
        if (
            self.source == "cls_labels"
            and tuple(own.get("stuff_classes") or ()) == self.class_names
        ):
            return own
        meta = Metadata(name=self.dataset)
        meta.set(
            stuff_classes=list(self.class_names),
            stuff_colors=[list(c) for c in self.colors],
            ignore_label=IGNORE,
        )
        if self.evaluation == "sem_seg":
            meta.set(evaluator_type="sem_seg")
        elif self.evaluation == "submission":
            meta.set(evaluator_type=SUBMISSION_EVALUATOR)
        return meta

    def image_labels(self, d: Mapping[str, Any]) -> List[int]:
        """BMP ids 1..K present in one dict, sorted where derived (see the module docstring)."""
        if "cls_labels" in d:  # as given: the mapper checks each id and names the file
            return list(d["cls_labels"])
        if self.source == "instances":
            return sorted(
                {
                    self._class_of(a, d)
                    for a in d.get("annotations") or ()
                    if not a.get("iscrowd", 0)
                }
            )
        if self.source == "masks" and "sem_seg_file_name" in d:
            return _mask_labels(self, d["sem_seg_file_name"])
        return []

    def _class_of(self, annotation: Mapping[str, Any], d: Mapping[str, Any]) -> int:
        cls = (self.category_to_class or {}).get(annotation.get("category_id"))
        if cls is None:
            raise ValueError(
                f"Dataset '{self.dataset}': an annotation of '{d.get('file_name')}' has "
                f"category_id {annotation.get('category_id')!r}, which its metadata's classes do "
                "not have; fix the annotation file or its 'categories'."
            )
        return cls

    def read_mask(self, path: str, size: Optional[Tuple[int, int]] = None) -> np.ndarray:
        """A mask file of this dataset in BMP ids (0..K, 255 = ignore)."""
        n = len(self.class_names)
        if self.mask_lut is None:
            return read_sem_seg(path, n - 1, IGNORE, size)
        raw = read_sem_seg(path, n - 1, self.mask_ignore, size)
        return self.mask_lut[raw]

    def ground_truth(
        self, d: Mapping[str, Any], size: Optional[Tuple[int, int]] = None
    ) -> Optional[np.ndarray]:
        """``(H, W)`` int64 BMP ids of one image, or None without any ground truth.

        ``size`` is the decoded image's ``(height, width)``: a mask of another size, or an
        instance dict that declares another size (its polygons were drawn on an image of that
        size), is an error. Without it, instance dicts must declare their size.
        """
        if "sem_seg_file_name" in d:
            return self.read_mask(d["sem_seg_file_name"], size).astype(np.int64)
        if self.source != "instances" or self.evaluation != "sem_seg":
            return None
        file_name = d.get("file_name")
        if size is None:
            if "height" not in d or "width" not in d:
                raise ValueError(
                    f"Dataset '{self.dataset}': '{file_name}' declares no height/width; they are "
                    "needed to rasterise its annotations."
                )
            size = (int(d["height"]), int(d["width"]))
        height, width = size
        declared = (int(d.get("height", height)), int(d.get("width", width)))
        if declared != (height, width):
            raise ValueError(
                f"Dataset '{self.dataset}': image '{file_name}' is {height}x{width} (HxW) but its "
                f"annotation entry says {declared[0]}x{declared[1]}; its polygons would not fit. "
                "Fix the image's height/width in the annotation file (or the image)."
            )
        instances = []
        for a in d.get("annotations") or ():
            if "segmentation" not in a:
                raise ValueError(
                    f"Dataset '{self.dataset}': an annotation of '{file_name}' has no "
                    "'segmentation'; scoring needs every object's polygons or RLE."
                )
            crowd = bool(a.get("iscrowd", 0))
            cls = 0 if crowd else self._class_of(a, d)
            instances.append((cls, a["segmentation"], crowd))
        try:
            mask = render_instances(height, width, instances, IGNORE)
        except ValueError as e:
            raise ValueError(
                f"Dataset '{self.dataset}': cannot rasterise an annotation of '{file_name}': {e}."
            ) from e
        return mask.astype(np.int64)


# Image-level labels read from mask files, by dataset and path: read once per process. The
# dataset is part of the key because two datasets may read one file with different class ids.
_MASK_LABELS: Dict[Tuple[str, str], List[int]] = {}


def _mask_labels(view: SemanticView, path: str) -> List[int]:
    key = (view.dataset, path)
    if key not in _MASK_LABELS:
        ids = np.unique(view.read_mask(path))
        _MASK_LABELS[key] = [int(i) for i in ids if 1 <= i <= view.num_classes]
    return _MASK_LABELS[key]


def _load(name: str) -> List[Dict[str, Any]]:
    from .datasets.split import load_dataset_dicts

    return load_dataset_dicts(name)


def _source(dicts: Sequence[Mapping[str, Any]]) -> str:
    for key, source in (
        ("cls_labels", "cls_labels"),
        ("annotations", "instances"),
        ("sem_seg_file_name", "masks"),
    ):
        if any(key in d for d in dicts):
            return source
    return "none"


def _category_map(name: str, dicts, meta: Metadata, k: int) -> Dict[int, int]:
    ids = {a.get("category_id") for d in dicts for a in d.get("annotations") or ()}
    if all(isinstance(i, int) and 0 <= i < k for i in ids):
        return {i: i + 1 for i in range(k)}
    to_contiguous = meta.get("thing_dataset_id_to_contiguous_id") or {}
    if ids <= set(to_contiguous):
        logger.info(
            f"Dataset '{name}': its dicts hold dataset category ids; read through "
            "thing_dataset_id_to_contiguous_id."
        )
        return {int(i): int(c) + 1 for i, c in to_contiguous.items()}
    bad = sorted(i for i in ids if i not in to_contiguous and not (isinstance(i, int) and i < k))
    where = next(
        d.get("file_name") for d in dicts for a in d.get("annotations") or ()
        if a.get("category_id") == bad[0]
    )  # fmt: skip
    raise ValueError(
        f"Dataset '{name}': category_id {bad[0]!r} (e.g. in '{where}') is neither a contiguous "
        f"id 0..{k - 1} of its {k} thing_classes nor a key of thing_dataset_id_to_contiguous_id; "
        "fix the annotations or the dataset's metadata."
    )


def _instances_view(name: str, dicts, meta: Metadata) -> SemanticView:
    things = meta.get("thing_classes")
    if not things:
        raise ValueError(
            f"Dataset '{name}' has instance annotations but its metadata has no thing_classes; "
            f"set MetadataCatalog.get({name!r}).thing_classes = [...] when registering it."
        )
    k = len(things)
    colors = meta.get("thing_colors")
    colors = [(0, 0, 0)] + [tuple(c) for c in colors] if colors else _default_colors(k + 1)
    with_segm = any("segmentation" in a for d in dicts for a in d.get("annotations") or ())
    return SemanticView(
        dataset=name,
        source="instances",
        class_names=("background",) + tuple(things),
        colors=tuple(tuple(int(v) for v in c) for c in colors),
        evaluation=_evaluation(meta, with_segm, True),
        category_to_class=_category_map(name, dicts, meta, k),
    )


def background_id(name: str, classes: Sequence[str], meta: Metadata) -> int:
    """The background's id in a mask dataset (see the module docstring)."""
    if meta.get("background_id") is not None:
        bg = int(meta.background_id)
        if not 0 <= bg < len(classes):
            raise ValueError(
                f"Dataset '{name}': background_id {bg} is not an id of its {len(classes)} classes."
            )
        return bg
    named = [i for i, c in enumerate(classes) if str(c).strip().lower() == "background"]
    if not named:
        raise ValueError(
            f"Dataset '{name}' has no background class, which WSSS needs: name one of its "
            f"stuff_classes 'background' or set MetadataCatalog.get({name!r}).background_id."
        )
    return named[0]


def _masks_view(name: str, meta: Metadata) -> SemanticView:
    classes = meta.get("stuff_classes")
    if not classes:
        raise ValueError(
            f"Dataset '{name}' has masks but its metadata has no stuff_classes; set "
            f"MetadataCatalog.get({name!r}).stuff_classes (load_sem_seg datasets need it)."
        )
    bg = background_id(name, classes, meta)
    order = [bg] + [i for i in range(len(classes)) if i != bg]
    ignore = int(meta.get("ignore_label", IGNORE))
    lut = None
    if order != list(range(len(classes))) or ignore != IGNORE:
        lut = np.full(max(len(classes), ignore + 1, IGNORE + 1), IGNORE, dtype=np.int64)
        lut[order] = np.arange(len(classes))
    colors = meta.get("stuff_colors")
    colors = [tuple(colors[i]) for i in order] if colors else _default_colors(len(classes))
    return SemanticView(
        dataset=name,
        source="masks",
        class_names=("background",) + tuple(classes[i] for i in order[1:]),
        colors=tuple(tuple(int(v) for v in c) for c in colors),
        evaluation=_evaluation(meta, True, True),
        mask_lut=lut,
        mask_ignore=ignore,
    )


def _evaluation(meta: Metadata, has_ground_truth: bool, has_labels: bool) -> str:
    if meta.get("evaluator_type") == SUBMISSION_EVALUATOR:
        return "submission"
    if has_ground_truth:
        return "sem_seg"
    return "classification" if has_labels else "none"


def _cls_labels_view(name: str, dicts, meta: Metadata) -> SemanticView:
    classes = meta.get("stuff_classes")
    if not classes:
        things = meta.get("thing_classes")
        if not things:
            raise ValueError(
                f"Dataset '{name}' gives cls_labels but its metadata names no classes; set "
                f"MetadataCatalog.get({name!r}).stuff_classes = ['background', ...]."
            )
        classes = ["background"] + list(things)
    if str(classes[0]).lower() != "background":
        raise ValueError(
            f"Dataset '{name}': with cls_labels, stuff_classes must start with 'background' "
            f"(cls_labels are ids 1..K), not {classes[0]!r}."
        )
    colors = meta.get("stuff_colors") or _default_colors(len(classes))
    has_masks = any("sem_seg_file_name" in d for d in dicts)
    return SemanticView(
        dataset=name,
        source="cls_labels",
        class_names=tuple(classes),
        colors=tuple(tuple(int(v) for v in c) for c in colors),
        evaluation=_evaluation(meta, has_masks, True),
    )


_VIEWS: Dict[Tuple[str, int], SemanticView] = {}


def semantic_view(name: str, dicts: Optional[Sequence[Mapping[str, Any]]] = None) -> SemanticView:
    """The :class:`SemanticView` of a registered dataset, derived once per process (per
    registration); ``dicts`` spares loading the dataset when the caller already has them."""
    key = (name, id(DatasetCatalog[name]) if name in DatasetCatalog.list() else 0)
    if key not in _VIEWS:
        dicts = _load(name) if dicts is None else dicts
        meta = MetadataCatalog.get(name)
        source = _source(dicts)
        if source == "cls_labels":
            view = _cls_labels_view(name, dicts, meta)
        elif source == "instances":
            view = _instances_view(name, dicts, meta)
        elif source == "masks":
            view = _masks_view(name, meta)
        else:
            classes = meta.get("stuff_classes") or ["background"] + list(
                meta.get("thing_classes") or []
            )
            view = SemanticView(
                dataset=name,
                source="none",
                class_names=tuple(classes),
                colors=tuple(_default_colors(len(classes))),
                evaluation=_evaluation(meta, False, False),
            )
        _VIEWS[key] = view
    return _VIEWS[key]


def bmp_metadata(name: str) -> Metadata:
    """The semantic metadata of a registered dataset (see :meth:`SemanticView.metadata`); for
    BMP's own splits and for a name with metadata but no registered dicts, the catalog's."""
    from .datasets.split import registered_bmp_datasets

    if name not in DatasetCatalog.list() or name in registered_bmp_datasets():
        return MetadataCatalog.get(name)  # BMP's own splits: no need to load them
    return semantic_view(name).metadata()


def _check_files(name: str, dicts: Sequence[Mapping[str, Any]]) -> None:
    for key, what in (("file_name", "images"), ("sem_seg_file_name", "masks")):
        missing = [d[key] for d in dicts if key in d and not os.path.isfile(d[key])]
        if missing:
            raise FileNotFoundError(
                f"Dataset '{name}': {len(missing)} of its {what} do not exist (e.g. "
                f"{', '.join(repr(m) for m in missing[:3])}); check the image root / mask folder "
                "given when registering it."
            )


def bmp_dataset_dicts(name: str) -> List[Dict[str, Any]]:
    """The dicts of a registered dataset, each with its ``cls_labels`` (BMP ids 1..K).

    The dicts are shallow copies; files are checked to exist here, so a wrong image root is one
    line before any training, not an error minutes into it.
    """
    dicts = _load(name)
    view = semantic_view(name, dicts)
    if view.source not in ("cls_labels",):
        _check_files(name, dicts)
        if view.source == "masks":
            logger.info(f"Dataset '{name}': reading {len(dicts)} masks for image-level labels.")
    out = []
    for d in dicts:
        d = dict(d)
        d["cls_labels"] = view.image_labels(d)
        out.append(d)
    return out


def training_dataset_dicts(names: Sequence[str], filter_empty: bool = True) -> List[Dict[str, Any]]:
    """The training dicts of ``DATASETS.TRAIN``: image-level labels from any source.

    Images without any foreground class follow ``DATALOADER.FILTER_EMPTY_ANNOTATIONS``: left out
    with one log line that counts them (``True``), or kept as negatives (``False``): their
    classifier target is all zeros and their pseudo labels are background.
    """
    if not names:
        raise ValueError("DATASETS.TRAIN is empty; name a registered training dataset.")
    views, out = [], []
    for name in names:
        dicts = bmp_dataset_dicts(name)
        view = semantic_view(name)
        if view.source == "none":
            raise ValueError(
                f"Dataset '{name}' gives no image-level labels: its dicts carry none of "
                "'cls_labels', 'annotations' (with category_id) or 'sem_seg_file_name'."
            )
        views.append(view)
        if filter_empty:
            empty = sum(1 for d in dicts if not d["cls_labels"])
            if empty:
                logger.warning(
                    f"Dataset '{name}': {empty} of {len(dicts)} images have no foreground class "
                    "and are left out of training (DATALOADER.FILTER_EMPTY_ANNOTATIONS True)."
                )
                dicts = [d for d in dicts if d["cls_labels"]]
            if not dicts:
                raise ValueError(f"Dataset '{name}': no image has a foreground class to train on.")
        out.extend(dicts)
    first = views[0]
    for view in views[1:]:
        if view.class_names != first.class_names:
            raise ValueError(
                f"DATASETS.TRAIN: '{view.dataset}' and '{first.dataset}' name different classes "
                f"({list(view.class_names)[:4]}... vs {list(first.class_names)[:4]}...); "
                "training datasets must share one class list."
            )
    return out
