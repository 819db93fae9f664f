"""The embedded default dataset: small, offline, deterministic, and hard in the ways CAMs fail.

Ten object classes in four *families*. A family shares its body (shape, colour, texture), so the
body says "some boat" but not which boat; each class carries a small **discriminative part** (a
coloured disk, square, cross or ring covering ~3-10% of the body) that alone tells the classes of
a family apart. A classifier can therefore succeed by looking at the part, while the mask covers
the whole body: CAMs under-segment (*partial activation*).

Four classes come with **co-occurring context**: boats sit on a textured water strip and two of
the cows stand on a grass strip in ~92% of their images (the strips appear in only ~4% of other
images). Strips are background in the masks, so CAMs that claim them over-segment.

Images are 128-192 px per side with 1-4 objects (occluding each other), textured backgrounds and
neutral clutter. Every image is drawn from its own RNG seeded by ``(seed, split, index)``, so the
dataset is bit-identical across machines and any image can be re-rendered alone.

Layout written under ``<root>/synthetic_wsss/`` (VOC-like): ``JPEGImages/*.jpg``,
``SegmentationClass/*.png`` (palette PNG of ids), ``ImageSets/Segmentation/{train,val}.txt``,
``image_labels.txt``, ``image_sizes.txt`` and ``info.json`` (written last: the "complete" mark,
with the generator hash so that a changed generator regenerates).

The package is split by concern: :mod:`.spec` (classes and constants), :mod:`.render` (drawing
one sample), :mod:`.writer` (files, caching, locking) and :mod:`.sheet` (a contact sheet).
Nothing here runs on import or on a dataset load: the prepare script, the main job and the tests
call :func:`ensure_synthetic_wsss`.
"""

from .render import Sample, render_sample
from .sheet import save_sample_sheet
from .spec import (
    CLASS_NAMES,
    CLASSES,
    CONTEXT_CLASSES,
    DEFAULT_NUM_TRAIN,
    DEFAULT_NUM_VAL,
    DEFAULT_SEED,
    NUM_CLASSES,
    class_colors,
    generator_hash,
    sample_rng,
)
from .writer import ensure_synthetic_wsss, is_complete

__all__ = [
    "CLASS_NAMES",
    "CLASSES",
    "CONTEXT_CLASSES",
    "DEFAULT_NUM_TRAIN",
    "DEFAULT_NUM_VAL",
    "DEFAULT_SEED",
    "NUM_CLASSES",
    "Sample",
    "class_colors",
    "ensure_synthetic_wsss",
    "generator_hash",
    "is_complete",
    "render_sample",
    "sample_rng",
    "save_sample_sheet",
]
