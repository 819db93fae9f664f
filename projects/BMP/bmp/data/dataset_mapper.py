"""Dataset mappers: image-level labels only for training, image + ground truth for evaluation.

Weak supervision is only weak if no mask reaches training. ``WSSSDatasetMapper`` therefore never
reads ``sem_seg_file_name``, even when the dict has one; it emits the image, the multi-hot class
label and ``valid_mask`` (True on real pixels, False on crop padding) so that pseudo labels and
losses can ignore the padding.
"""

import copy
import logging
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import transforms as T

from .eval_size import EvalImageSize
from .image_io import read_image_rgb, read_sem_seg
from .registered import SemanticView, semantic_view
from .transforms import RandomPadCrop, RandomScale

__all__ = [
    "WSSSDatasetMapper",
    "SupervisedDatasetMapper",
    "SemSegEvalMapper",
    "build_train_mapper",
    "cls_labels_to_multi_hot",
]

logger = logging.getLogger(__name__)


def cls_labels_to_multi_hot(
    cls_labels: Sequence[Any], num_classes: int, file_name: str = "?"
) -> torch.Tensor:
    """``[ids in 1..K]`` -> float ``(K,)`` with index ``k - 1`` set for class ``k``.

    An id outside ``1..K`` is an error naming the file: a wrong K or a background id in the label
    file would otherwise train a classifier on shifted classes.
    """
    out = torch.zeros(num_classes, dtype=torch.float32)
    for c in cls_labels:
        if isinstance(c, bool) or not isinstance(c, (int, np.integer)):
            raise ValueError(f"Image '{file_name}': class id {c!r} is not an integer.")
        if not 1 <= int(c) <= num_classes:
            raise ValueError(
                f"Image '{file_name}': class id {int(c)} is out of range; image-level labels must "
                f"be foreground ids in 1..{num_classes} (MODEL.BMP.NUM_CLASSES = {num_classes})."
            )
        out[int(c) - 1] = 1.0
    return out


def pad_fill(cfg) -> tuple[float, float, float]:
    """RGB colour of crop padding from ``INPUT.CROP.PAD_FILL``.

    ``"zero"`` is the authors' black padding (RGB 0 before normalisation); ``"mean"`` pads with
    ``MODEL.PIXEL_MEAN``, which is zero after normalisation.
    """
    mode = cfg.INPUT.CROP.PAD_FILL
    if mode == "zero":
        return (0.0, 0.0, 0.0)
    if mode == "mean":
        return tuple(float(v) for v in cfg.MODEL.PIXEL_MEAN)
    raise ValueError(f"INPUT.CROP.PAD_FILL must be 'zero' or 'mean', got {mode!r}.")


def _to_format(image: np.ndarray, image_format: str) -> np.ndarray:
    if image_format == "RGB":
        return image
    if image_format == "BGR":
        return image[:, :, ::-1]
    raise ValueError(f"INPUT.FORMAT '{image_format}' is not supported; use 'RGB' (or 'BGR').")


def _image_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))


class WSSSDatasetMapper:
    """Training mapper: random rescale, flip, pad-and-crop; labels only, never a mask.

    Output: ``image`` uint8 (3, H, W), ``cls_label`` float (K,), ``valid_mask`` bool (H, W),
    ``height``, ``width`` (of the original image), ``file_name``, ``image_id``.
    """

    @configurable
    def __init__(
        self,
        is_train: bool = True,
        *,
        augmentations: List[T.Augmentation],
        image_format: str,
        num_classes: int,
    ):
        """
        Args:
            is_train: training dicts must carry ``cls_labels`` (empty for a negative image);
                otherwise they may have none (e.g. the VOC test split) and no ``cls_label`` is
                emitted.
            augmentations: applied in order; they must not move pixels in a way that
                ``apply_segmentation`` cannot follow (the valid mask is a segmentation).
            image_format: ``"RGB"`` (or ``"BGR"``).
            num_classes: K, the number of foreground classes.
        """
        self.is_train = is_train
        self.augmentations = T.AugmentationList(augmentations)
        self.image_format = image_format
        self.num_classes = num_classes
        logger.info(f"[WSSSDatasetMapper] augmentations: {augmentations}")

    @classmethod
    def from_config(cls, cfg, is_train: bool = True) -> Dict[str, Any]:
        augs: List[T.Augmentation] = []
        if is_train:
            if cfg.INPUT.COLOR_JITTER:
                augs += [
                    T.RandomBrightness(0.7, 1.3),
                    T.RandomContrast(0.7, 1.3),
                    T.RandomSaturation(0.7, 1.3),
                ]
            lo, hi = cfg.INPUT.SCALE_RANGE
            augs += [RandomScale(lo, hi), T.RandomFlip(horizontal=True, vertical=False)]
            if cfg.INPUT.CROP.ENABLED:
                augs.append(RandomPadCrop(tuple(cfg.INPUT.CROP.SIZE), fill=pad_fill(cfg)))
        return {
            "is_train": is_train,
            "augmentations": augs,
            "image_format": cfg.INPUT.FORMAT,
            "num_classes": cfg.MODEL.BMP.NUM_CLASSES,
        }

    def _labels(self, dataset_dict: Dict[str, Any]) -> Optional[torch.Tensor]:
        file_name = dataset_dict.get("file_name", "?")
        labels = dataset_dict.get("cls_labels")
        if labels is None:
            if self.is_train:
                raise ValueError(
                    f"Dataset dict of '{file_name}' has no 'cls_labels'; training needs "
                    "image-level labels (is DATASETS.TRAIN a labelled split?)."
                )
            return None
        # An empty set is a negative image, kept by DATALOADER.FILTER_EMPTY_ANNOTATIONS False.
        return cls_labels_to_multi_hot(labels, self.num_classes, file_name)

    def __call__(self, dataset_dict: Dict[str, Any]) -> Dict[str, Any]:
        return self._map(copy.deepcopy(dataset_dict))[0]

    def _map(self, d: Dict[str, Any]) -> Tuple[Dict[str, Any], T.Transform]:
        """The output dict and the transforms applied (for a mask that must follow them)."""
        cls_label = self._labels(d)  # validate before the (costly) image read
        image = read_image_rgb(d["file_name"])
        height, width = image.shape[:2]
        ones = np.ones((height, width), dtype=np.uint8)
        aug_input = T.AugInput(image, sem_seg=ones)
        transforms = self.augmentations(aug_input)
        out: Dict[str, Any] = {
            "image": _image_tensor(_to_format(aug_input.image, self.image_format)),
            "valid_mask": torch.as_tensor(aug_input.sem_seg == 1),
            "height": height,
            "width": width,
            "file_name": d["file_name"],
            "image_id": d.get("image_id", d["file_name"]),
        }
        if cls_label is not None:
            out["cls_label"] = cls_label
        return out, transforms


class SupervisedDatasetMapper(WSSSDatasetMapper):
    """Training mapper of the fully supervised ceiling: the WSSS augmentations, plus the mask.

    Only ``MODEL.META_ARCHITECTURE: "BMPSupervised"`` with ``INPUT.DATASET_MAPPER_NAME:
    "supervised"`` uses it; weakly supervised training uses :class:`WSSSDatasetMapper`, which never
    reads a mask. ``sem_seg`` follows the image through the same transforms (nearest sampling);
    crop padding is ``ignore_label`` there.
    """

    @configurable
    def __init__(self, is_train: bool = True, *, ignore_label: int = 255, **kwargs: Any):
        """``ignore_label`` marks crop padding in the mask; ``kwargs`` are the WSSS mapper's."""
        super().__init__(is_train, **kwargs)
        self.ignore_label = ignore_label

    @classmethod
    def from_config(cls, cfg, is_train: bool = True) -> Dict[str, Any]:
        args = WSSSDatasetMapper.from_config(cfg, is_train)
        args["ignore_label"] = cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE
        return args

    def __call__(self, dataset_dict: Dict[str, Any]) -> Dict[str, Any]:
        d = copy.deepcopy(dataset_dict)
        if "sem_seg_file_name" not in d:
            raise ValueError(
                f"Image '{d.get('file_name', '?')}' has no 'sem_seg_file_name': the supervised "
                "ceiling trains on ground-truth masks; use a split that has them."
            )
        out, transforms = self._map(d)
        size = (out["height"], out["width"])
        mask = read_sem_seg(d["sem_seg_file_name"], self.num_classes, self.ignore_label, size)
        # A copy: the transforms may return a read-only view (of a PIL-resized array).
        mask = np.array(transforms.apply_segmentation(mask.astype(np.uint8)))
        mask[~out["valid_mask"].numpy()] = self.ignore_label
        out["sem_seg"] = torch.as_tensor(mask.astype(np.int64))
        return out


def build_train_mapper(cfg) -> WSSSDatasetMapper:
    """The training mapper ``INPUT.DATASET_MAPPER_NAME`` names, checked against the model.

    Masks must never reach a weakly supervised model, so ``"supervised"`` is refused for every
    meta-architecture but the fully supervised ceiling, and the ceiling refuses ``"wsss"``.
    """
    name, arch = cfg.INPUT.DATASET_MAPPER_NAME, cfg.MODEL.META_ARCHITECTURE
    if name not in ("wsss", "supervised"):
        raise ValueError(f"INPUT.DATASET_MAPPER_NAME must be 'wsss' or 'supervised', got {name!r}.")
    if (name == "supervised") != (arch == "BMPSupervised"):
        raise ValueError(
            f"INPUT.DATASET_MAPPER_NAME {name!r} does not fit MODEL.META_ARCHITECTURE {arch!r}: "
            "only 'BMPSupervised' (the fully supervised ceiling) trains on masks, with "
            "'supervised'; every weakly supervised model uses 'wsss', which never reads a mask."
        )
    if name == "supervised":
        return SupervisedDatasetMapper(cfg, True)
    return WSSSDatasetMapper(cfg, True)


class SemSegEvalMapper:
    """Evaluation mapper: image and ``sem_seg`` ground truth at the original size.

    Only the image is resized, to the test size of :mod:`bmp.data.eval_size` (long-side cap,
    optional short side, too-small rule); ``sem_seg``, ``height`` and ``width`` stay original,
    which is what the model's output and ``SemSegEvaluator`` compare.
    """

    @configurable
    def __init__(
        self,
        *,
        image_format: str,
        num_classes: int,
        ignore_label: int = 255,
        size: Optional[EvalImageSize] = None,
        view: Optional[SemanticView] = None,
    ):
        """``size``: the test size and small-image rule (default: long side capped at 4096,
        small images resized up). ``view``: how the dataset's ground truth is read (mask files
        with moved ids, or instance annotations rasterised); without one, ``sem_seg_file_name``
        is read as BMP ids."""
        self.image_format = image_format
        self.num_classes = num_classes
        self.ignore_label = ignore_label
        self.size = size or EvalImageSize(0, 4096, 0, "resize")
        self.view = view

    @classmethod
    def from_config(
        cls, cfg, is_train: bool = False, dataset_name: Optional[str] = None
    ) -> Dict[str, Any]:
        return {
            "image_format": cfg.INPUT.FORMAT,
            "num_classes": cfg.MODEL.BMP.NUM_CLASSES,
            "ignore_label": cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
            "size": EvalImageSize.from_config(cfg),
            "view": semantic_view(dataset_name) if dataset_name else None,
        }

    def __call__(self, dataset_dict: Dict[str, Any]) -> Dict[str, Any]:
        d = copy.deepcopy(dataset_dict)
        file_name = d["file_name"]
        image = read_image_rgb(file_name)
        height, width = image.shape[:2]
        out: Dict[str, Any] = {
            "height": height,
            "width": width,
            "file_name": file_name,
            "image_id": d.get("image_id", file_name),
        }
        if self.view is not None:
            mask = self.view.ground_truth(d, (height, width))
        elif "sem_seg_file_name" in d:
            mask = read_sem_seg(
                d["sem_seg_file_name"], self.num_classes, self.ignore_label, (height, width)
            )
        else:
            mask = None
        if mask is not None:
            out["sem_seg"] = torch.as_tensor(mask, dtype=torch.long)
        if d.get("cls_labels") is not None:
            out["cls_label"] = cls_labels_to_multi_hot(d["cls_labels"], self.num_classes, file_name)
        image = self.size.apply(image, file_name)
        out["image"] = _image_tensor(_to_format(image, self.image_format))
        return out
