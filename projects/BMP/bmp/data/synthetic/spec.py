"""What the synthetic dataset is made of: its classes, families, colours and constants.

Ten object classes in four *families*. A family shares its body (shape, colour, texture), so the
body says "some boat" but not which boat; each class carries a small **discriminative part** (a
coloured disk, square, cross or ring covering ~3-10% of the body) that alone tells the classes of
a family apart. Four classes come with **co-occurring context** strips (water, grass). See
:mod:`bmp.data.synthetic` for why.
"""

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np

# Bump when the rendering changes in a way the hashed constants below do not capture.
GENERATOR_VERSION = 2  # 2: image-level labels as image_labels.txt
DEFAULT_NUM_TRAIN = 1200
DEFAULT_NUM_VAL = 200
DEFAULT_SEED = 0
JPEG_QUALITY = 90
MIN_SIDE, MAX_SIDE = 128, 192
NUM_OBJECTS_P = (0.30, 0.35, 0.22, 0.13)  # P(1..4 objects)
P_CONTEXT = 0.92  # a context class appears with its strip
P_CONTEXT_DISTRACTOR = 0.04  # a strip appears without its classes
MIN_VISIBLE_BODY = 0.5  # occlusion limits, as fractions of an object's full area
MIN_VISIBLE_PART = 0.7

# Body families: shape in normalised local coordinates, base colour, texture, aspect (a/b),
# major length as a fraction of the image's short side, part anchor and part radius / b.
FAMILIES: Dict[str, Dict] = {
    "boat": dict(
        shape="ellipse", color=(35, 55, 115), texture="dots", aspect=(2.2, 2.8),
        length=(0.45, 0.65), anchor=(0.55, 0.0), part_radius=0.4,
    ),
    "cow": dict(
        shape="superellipse", color=(125, 85, 50), texture="stripes", aspect=(1.3, 1.7),
        length=(0.38, 0.55), anchor=(0.55, 0.0), part_radius=0.32,
    ),
    "kite": dict(
        shape="triangle", color=(215, 135, 45), texture="checker", aspect=(1.1, 1.4),
        length=(0.32, 0.48), anchor=(-0.45, 0.0), part_radius=0.3,
    ),
    "bot": dict(
        shape="octagon", color=(140, 140, 152), texture="gradient", aspect=(0.9, 1.1),
        length=(0.3, 0.42), anchor=(0.0, -0.5), part_radius=0.26,
    ),
}  # fmt: skip

PART_COLORS: Dict[str, Tuple[int, int, int]] = {
    "red": (225, 35, 35),
    "yellow": (250, 215, 30),
    "white": (245, 245, 240),
    "magenta": (225, 45, 205),
    "cyan": (40, 215, 225),
    "blue": (45, 85, 235),
    "green": (40, 200, 70),
    "purple": (140, 50, 210),
}


@dataclass(frozen=True)
class ClassSpec:
    """One foreground class: a family body plus a part (shape, colour); optional context strip."""

    name: str
    family: str
    part_shape: str
    part_color: str
    context: Optional[str] = None


CLASSES: Tuple[ClassSpec, ...] = (
    ClassSpec("boat_red", "boat", "disk", "red", "water"),
    ClassSpec("boat_yellow", "boat", "square", "yellow", "water"),
    ClassSpec("cow_white", "cow", "cross", "white", "grass"),
    ClassSpec("cow_magenta", "cow", "disk", "magenta", "grass"),
    ClassSpec("cow_cyan", "cow", "ring", "cyan"),
    ClassSpec("kite_blue", "kite", "disk", "blue"),
    ClassSpec("kite_green", "kite", "cross", "green"),
    ClassSpec("bot_red", "bot", "square", "red"),
    ClassSpec("bot_yellow", "bot", "ring", "yellow"),
    ClassSpec("bot_purple", "bot", "disk", "purple"),
)
CLASS_NAMES: List[str] = ["background"] + [c.name for c in CLASSES]
NUM_CLASSES = len(CLASSES)
# Class ids (1..K) that co-occur with each context strip.
CONTEXT_CLASSES: Dict[str, List[int]] = {
    kind: [i + 1 for i, c in enumerate(CLASSES) if c.context == kind] for kind in ("water", "grass")
}
_SPLITS = {"train": 0, "val": 1}


def generator_hash() -> str:
    """Hash of everything that defines the rendering; a cached dataset with another is stale."""
    spec = dict(
        version=GENERATOR_VERSION,
        families=FAMILIES,
        parts=PART_COLORS,
        classes=[asdict(c) for c in CLASSES],
        consts=[JPEG_QUALITY, MIN_SIDE, MAX_SIDE, NUM_OBJECTS_P, P_CONTEXT, P_CONTEXT_DISTRACTOR,
                MIN_VISIBLE_BODY, MIN_VISIBLE_PART],
    )  # fmt: skip
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def sample_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The RNG of one image; independent of every other image, so rendering is random-access."""
    return np.random.default_rng([int(seed), _SPLITS[split], int(index)])


def class_colors() -> List[List[int]]:
    """Display colours for the mask palette: background black, each class its part colour
    blended with its family body colour so that the 10 classes stay distinguishable."""
    colors = [[0, 0, 0]]
    for c in CLASSES:
        body = np.array(FAMILIES[c.family]["color"], dtype=np.float64)
        part = np.array(PART_COLORS[c.part_color], dtype=np.float64)
        colors.append([int(v) for v in np.rint(0.35 * body + 0.65 * part)])
    return colors
