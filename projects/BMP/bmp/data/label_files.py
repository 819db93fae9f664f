"""The small text files every BMP dataset is described by.

* split lists: one image stem per line;
* image-level labels: one ``<stem> <id> <id> ...`` line per image (foreground ids 1..K; an image
  with no foreground is its stem alone). This is the one label format: every prepare script and
  the synthetic generator write it;
* the size cache: ``<stem> <height> <width>`` lines, which spare reading every image header.

Readers check what they read and name the file and line of anything wrong.
"""

import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

__all__ = [
    "read_split_file",
    "read_image_labels",
    "write_image_labels",
    "read_image_sizes",
    "write_image_sizes",
]


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
        try:
            iv = int(str(v))
        except ValueError:
            raise ValueError(f"{where}: class id {v!r} is not an integer.") from None
        if iv < 1 or (num_classes is not None and iv > num_classes):
            hi = num_classes if num_classes is not None else "K"
            raise ValueError(
                f"{where}: class id {iv} is out of range; image-level labels are foreground ids "
                f"1..{hi} (0 is background and never listed)."
            )
        out.append(iv)
    return sorted(set(out))


def read_image_labels(path: str, num_classes: Optional[int] = None) -> Dict[str, List[int]]:
    """Read image-level labels: ``{stem: sorted foreground ids}`` (see the module docstring)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"Image-label file '{path}' not found. It is written by the dataset's prepare script "
            "(see datasets/README.md)."
        )
    labels: Dict[str, List[int]] = {}
    with open(path, "r", encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            parts = line.split()
            if not parts or parts[0].startswith("#"):
                continue
            stem = parts[0]
            if stem in labels:
                raise ValueError(f"Image-label file '{path}' line {lineno}: '{stem}' is repeated.")
            where = f"Image-label file '{path}' line {lineno} ({stem})"
            labels[stem] = _check_ids(parts[1:], num_classes, where)
    return labels


def _atomic_write_text(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def write_image_labels(path: str, labels: Mapping[str, Sequence[int]]) -> None:
    """Write labels in the format :func:`read_image_labels` reads, sorted by stem."""
    clean = {str(k): sorted(int(i) for i in set(v)) for k, v in labels.items()}
    text = "".join(" ".join([k] + [str(i) for i in clean[k]]) + "\n" for k in sorted(clean))
    _atomic_write_text(path, text)


def read_image_sizes(path: str) -> Dict[str, Tuple[int, int]]:
    """Read ``<stem> <height> <width>`` lines."""
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
