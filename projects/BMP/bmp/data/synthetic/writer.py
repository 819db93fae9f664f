"""Writing the synthetic dataset to disk once, safely when several processes ask at once."""

import json
import logging
import os
import shutil
import tempfile
import time
from typing import Dict, Iterable, List, Tuple

import numpy as np
from iopath.common.file_io import file_lock
from PIL import Image

from ..label_files import write_image_labels, write_image_sizes
from .render import render_sample
from .spec import (
    CLASS_NAMES,
    DEFAULT_NUM_TRAIN,
    DEFAULT_NUM_VAL,
    DEFAULT_SEED,
    GENERATOR_VERSION,
    JPEG_QUALITY,
    class_colors,
    generator_hash,
    sample_rng,
)

__all__ = ["ensure_synthetic_wsss", "is_complete"]

logger = logging.getLogger(__name__)


def _palette() -> List[int]:
    flat = [v for col in class_colors() for v in col]
    return flat + [0] * (768 - len(flat))


def _save_mask(mask: np.ndarray, path: str) -> None:
    im = Image.fromarray(mask)  # uint8 -> "L"
    im.putpalette(_palette())  # becomes "P": ids stay the pixel values, viewers show colours
    im.save(path, optimize=False)


def _jobs(num_train: int, num_val: int, progress: bool) -> Iterable[Tuple[str, int]]:
    jobs = [("train", i) for i in range(num_train)] + [("val", i) for i in range(num_val)]
    if not progress:
        return jobs
    from tqdm import tqdm

    return tqdm(jobs, desc="synthetic_wsss", unit="img")


def _write_dataset(out_dir: str, num_train: int, num_val: int, seed: int, progress: bool) -> Dict:
    """Write the dataset into the empty folder ``out_dir``; returns the ``info.json`` dict.
    Not safe against concurrent writers: :func:`ensure_synthetic_wsss` calls it under a lock."""
    if num_train < 1 or num_val < 1:
        raise ValueError("num_train and num_val must be at least 1.")
    start = time.perf_counter()
    img_dir = os.path.join(out_dir, "JPEGImages")
    mask_dir = os.path.join(out_dir, "SegmentationClass")
    list_dir = os.path.join(out_dir, "ImageSets", "Segmentation")
    for d in (img_dir, mask_dir, list_dir):
        os.makedirs(d, exist_ok=True)
    labels: Dict[str, List[int]] = {}
    sizes: Dict[str, Tuple[int, int]] = {}
    stems: Dict[str, List[str]] = {"train": [], "val": []}
    for split, i in _jobs(num_train, num_val, progress):
        sample = render_sample(sample_rng(seed, split, i))
        stem = f"{split}_{i:05d}"
        path = os.path.join(img_dir, stem + ".jpg")
        Image.fromarray(sample.image).save(path, quality=JPEG_QUALITY)
        _save_mask(sample.mask, os.path.join(mask_dir, stem + ".png"))
        labels[stem], sizes[stem] = sample.labels, sample.mask.shape
        stems[split].append(stem)
    for split, names in stems.items():
        with open(os.path.join(list_dir, f"{split}.txt"), "w", encoding="utf-8") as f:
            f.write("".join(s + "\n" for s in names))
    write_image_labels(os.path.join(out_dir, "image_labels.txt"), labels)
    write_image_sizes(os.path.join(out_dir, "image_sizes.txt"), sizes)
    info = dict(
        generator_hash=generator_hash(),
        generator_version=GENERATOR_VERSION,
        seed=int(seed),
        num_train=int(num_train),
        num_val=int(num_val),
        classes=CLASS_NAMES,
        seconds=round(time.perf_counter() - start, 2),
    )
    with open(os.path.join(out_dir, "info.json"), "w", encoding="utf-8") as f:
        json.dump(info, f, indent=1)
    return info


def is_complete(out_dir: str) -> bool:
    """True if ``out_dir`` holds a finished dataset written by this generator version."""
    try:
        with open(os.path.join(out_dir, "info.json"), "r", encoding="utf-8") as f:
            info = json.load(f)
    except (OSError, ValueError):
        return False
    return info.get("generator_hash") == generator_hash()


def ensure_synthetic_wsss(
    out_dir: str,
    num_train: int = DEFAULT_NUM_TRAIN,
    num_val: int = DEFAULT_NUM_VAL,
    seed: int = DEFAULT_SEED,
    force: bool = False,
    progress: bool = False,
) -> str:
    """Generate the dataset into ``out_dir`` unless a complete, current one is already there.

    A dataset made by this generator version is reused whatever its size or seed (so a smaller
    set made on purpose with ``prepare_synthetic_wsss.py --num-train`` stays). Generation goes to
    a temporary sibling folder renamed into place, under iopath's inter-process file lock, so
    concurrent processes (e.g. DDP ranks) neither collide nor ever see a half-written dataset.
    """
    out_dir = os.path.abspath(out_dir)
    if not force and is_complete(out_dir):
        return out_dir
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    with file_lock(out_dir):
        if not force and is_complete(out_dir):
            return out_dir
        why = "forced" if force else ("outdated" if os.path.exists(out_dir) else "missing")
        logger.warning(
            "Generating the synthetic WSSS dataset in '%s' (%s; %d train + %d val images, "
            "seed %d); this happens once.", out_dir, why, num_train, num_val, seed,
        )  # fmt: skip
        info = _generate_into_place(out_dir, num_train, num_val, seed, progress)
    logger.info("Synthetic WSSS dataset ready in %.1f s.", info["seconds"])
    return out_dir


def _generate_into_place(
    out_dir: str, num_train: int, num_val: int, seed: int, progress: bool
) -> Dict:
    parent = os.path.dirname(out_dir)
    tmp = tempfile.mkdtemp(prefix=".synthetic_wsss.tmp-", dir=parent)
    try:
        info = _write_dataset(tmp, num_train, num_val, seed, progress)
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; the dataset is for everyone
        stale = None
        if os.path.exists(out_dir):
            stale = tempfile.mkdtemp(prefix=".synthetic_wsss.stale-", dir=parent)
            os.rename(out_dir, os.path.join(stale, "old"))
        os.rename(tmp, out_dir)
        if stale is not None:
            shutil.rmtree(stale, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return info
