"""The size an evaluation image is fed at, and what happens to images too small or too large.

* **Test size.** ``INPUT.MAX_SIZE_TEST`` caps the long side (the authors resize it to 512 at
  test); smaller images keep their size. ``INPUT.MIN_SIZE_TEST > 0`` additionally resizes the
  short side to that value, as detectron2's ``ResizeShortestEdge`` does. Predictions are always
  scored at the original size.
* **Oversized images** (long side above twice the cap) are still evaluated, at the test size,
  with one warning naming the file: decoding them and upsampling their logits back to full size
  dominates the evaluation time and memory, so they are usually worth a look.
* **Too-small images.** A backbone needs a minimum input (MiT with the default stride and
  spatial reduction: 32 px per side; test-time scale 0.5 doubles that). An image whose short
  side is below ``INPUT.MIN_SIDE_TEST`` at the test size follows ``INPUT.SMALL_TEST_IMAGE``:
  ``"resize"`` enlarges it to that side (its prediction is scored at the original size) and
  ``"skip"`` leaves it out of the evaluation. Either way one warning names the file.
"""

import logging
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np
from detectron2.data import transforms as T

from .image_io import image_size

__all__ = [
    "SMALL_IMAGE_RULES",
    "OVERSIZE_FACTOR",
    "EvalImageSize",
    "scaled_size",
    "drop_small_images",
]

logger = logging.getLogger(__name__)

SMALL_IMAGE_RULES = ("resize", "skip")
OVERSIZE_FACTOR = 2


def scaled_size(height: int, width: int, min_size: int, max_size: int) -> Tuple[int, int]:
    """``(h, w)`` after the test-size rule (see the module docstring)."""
    if min_size > 0:
        scale = min_size / min(height, width)
        if max(height, width) * scale > max_size:
            scale = max_size / max(height, width)
    else:
        scale = min(1.0, max_size / max(height, width))
    return max(1, int(height * scale + 0.5)), max(1, int(width * scale + 0.5))


class EvalImageSize:
    """Apply the test size and the small-image rule to one image at a time.

    One instance warns at most once per file, whatever the number of evaluations it serves.
    """

    def __init__(self, min_size: int, max_size: int, min_side: int, small_rule: str) -> None:
        if small_rule not in SMALL_IMAGE_RULES:
            raise ValueError(
                f"INPUT.SMALL_TEST_IMAGE must be one of {SMALL_IMAGE_RULES}, got {small_rule!r}."
            )
        if max_size <= 0 or min_side < 0 or min_size < 0:
            raise ValueError(
                "INPUT.MAX_SIZE_TEST must be > 0 and INPUT.MIN_SIZE_TEST, INPUT.MIN_SIDE_TEST "
                f">= 0; got {max_size}, {min_size}, {min_side}."
            )
        self.min_size, self.max_size = min_size, max_size
        self.min_side, self.small_rule = min_side, small_rule
        self._warned: set = set()

    @classmethod
    def from_config(cls, cfg: Any) -> "EvalImageSize":
        return cls(
            cfg.INPUT.MIN_SIZE_TEST,
            cfg.INPUT.MAX_SIZE_TEST,
            cfg.INPUT.MIN_SIDE_TEST,
            cfg.INPUT.SMALL_TEST_IMAGE,
        )

    def is_too_small(self, height: int, width: int) -> bool:
        """Whether the image falls under the small-image rule at its test size."""
        return min(scaled_size(height, width, self.min_size, self.max_size)) < self.min_side

    def target_size(self, height: int, width: int, file_name: str) -> Tuple[int, int]:
        """The size to feed; warns (once per file) for oversized and too-small images."""
        h, w = scaled_size(height, width, self.min_size, self.max_size)
        if max(height, width) > OVERSIZE_FACTOR * self.max_size:
            self._warn_once(
                (file_name, "large"),
                f"Evaluation image '{file_name}' is {height}x{width} (HxW), over "
                f"{OVERSIZE_FACTOR}x INPUT.MAX_SIZE_TEST = {self.max_size}; it is evaluated at "
                f"{h}x{w} and scored at full size.",
            )
        if min(h, w) < self.min_side:
            if self.small_rule == "skip":
                raise ValueError(
                    f"Evaluation image '{file_name}' ({height}x{width}) is below "
                    f"INPUT.MIN_SIDE_TEST = {self.min_side} and INPUT.SMALL_TEST_IMAGE is 'skip'; "
                    "leave it out of the dataset (drop_small_images) before mapping it."
                )
            scale = self.min_side / min(h, w)
            h, w = int(h * scale + 0.5), int(w * scale + 0.5)
            self._warn_once(
                (file_name, "small"),
                f"Evaluation image '{file_name}' is {height}x{width} (HxW), below "
                f"INPUT.MIN_SIDE_TEST = {self.min_side}; evaluated enlarged to {h}x{w} "
                '(INPUT.SMALL_TEST_IMAGE "resize").',
            )
        return h, w

    def apply(self, image: np.ndarray, file_name: str) -> np.ndarray:
        """``image`` (H, W, C) resized to its target size (unchanged if already there)."""
        height, width = image.shape[:2]
        h, w = self.target_size(height, width, file_name)
        if (h, w) == (height, width):
            return image
        return T.ResizeTransform(height, width, h, w).apply_image(image)

    def _warn_once(self, key: Any, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            logger.warning(message)


def drop_small_images(
    dicts: Sequence[Dict[str, Any]], test_size: EvalImageSize, dataset_name: str
) -> List[Dict[str, Any]]:
    """``dicts`` without the images the "skip" rule leaves out, with one warning for each.

    Sizes come from the dicts' ``height``/``width`` when present, otherwise from the file
    headers (no decoding).
    """
    if test_size.small_rule != "skip":
        return list(dicts)
    kept = []
    for d in dicts:
        if "height" in d and "width" in d:
            height, width = int(d["height"]), int(d["width"])
        else:
            height, width = image_size(d["file_name"])
        if test_size.is_too_small(height, width):
            logger.warning(
                f"Evaluation image '{d['file_name']}' ({height}x{width}) is below "
                f"INPUT.MIN_SIDE_TEST = {test_size.min_side}; skipped "
                f'(INPUT.SMALL_TEST_IMAGE "skip"), so {dataset_name} is scored without it.'
            )
            continue
        kept.append(d)
    return kept
