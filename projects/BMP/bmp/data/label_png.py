"""Label maps as PNG files: written atomically, checked before they are trusted.

Two encodings, because tools disagree on how to read a PNG of class ids:

* palette (mode ``P``, VOC colours): what VOC tools, papers' released pseudo labels and people
  looking at the files expect;
* plain ids (mode ``L``): what detectron2's ``DatasetMapper`` needs, since it reads masks with
  ``convert("L")``, which turns a palette PNG into colour luminance instead of ids.
"""

import os
from typing import Optional, Sequence, Tuple

import numpy as np
from PIL import Image

__all__ = ["write_label_png", "is_valid_label_png"]


def write_label_png(path: str, labels: np.ndarray, palette: Optional[Sequence[int]] = None) -> None:
    """Save (H, W) ids 0..255 as ``path``; with a flat RGB ``palette`` as mode P, else mode L.

    The file appears under its name only once complete, so an interrupted export never leaves a
    truncated PNG that a resumed one would have to detect.
    """
    if labels.ndim != 2:
        raise ValueError(f"{path}: label map must be (H, W), got shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > 255):
        raise ValueError(f"{path}: ids must be in 0..255, got {labels.min()}..{labels.max()}")
    ids = np.ascontiguousarray(labels, dtype=np.uint8)
    size = (ids.shape[1], ids.shape[0])
    # The same bytes either way: in mode P they index the palette, in mode L they are the value.
    image = Image.frombytes("L" if palette is None else "P", size, ids.tobytes())
    if palette is not None:
        image.putpalette(list(palette) + [0] * (768 - len(palette)))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    # Hidden and not ending in .png, so a kill never leaves something that looks like a mask.
    tmp = os.path.join(os.path.dirname(path) or ".", f".{os.path.basename(path)}.tmp{os.getpid()}")
    image.save(tmp, format="PNG")
    os.replace(tmp, path)


def is_valid_label_png(
    path: str, size: Tuple[int, int], num_classes: int, ignore_label: int = 255
) -> bool:
    """True if ``path`` decodes to an (H, W) = ``size`` map of ids in 0..num_classes or ignore."""
    try:
        with Image.open(path) as image:
            if image.mode not in ("L", "P"):
                return False
            labels = np.asarray(image)
    except (OSError, ValueError, SyntaxError):
        return False
    if labels.shape != tuple(size):
        return False
    return bool(np.all((labels <= num_classes) | (labels == ignore_label)))
