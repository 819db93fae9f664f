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
``image_labels.json``, ``image_sizes.txt`` and ``info.json`` (written last: the "complete" mark,
with the generator hash so that a changed generator regenerates).
"""

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import cv2
import numpy as np
from PIL import Image

__all__ = [
    "CLASS_NAMES",
    "CLASSES",
    "CONTEXT_CLASSES",
    "DEFAULT_NUM_TRAIN",
    "DEFAULT_NUM_VAL",
    "DEFAULT_SEED",
    "Sample",
    "render_sample",
    "sample_rng",
    "generator_hash",
    "generate_synthetic_wsss",
    "ensure_synthetic_wsss",
    "is_complete",
    "class_colors",
    "save_sample_sheet",
]

logger = logging.getLogger(__name__)

# Bump when the rendering changes in a way the hashed constants below do not capture.
GENERATOR_VERSION = 1
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


@dataclass
class Sample:
    """One rendered image with everything the tests need to check the failure modes."""

    image: np.ndarray  # (H, W, 3) uint8 RGB
    mask: np.ndarray  # (H, W) uint8, 0 = background, 1..K
    part_mask: np.ndarray  # (H, W) bool, visible discriminative parts
    context_mask: np.ndarray  # (H, W) bool, visible context strips (background in ``mask``)
    labels: List[int]  # sorted foreground ids present in ``mask``
    contexts: List[str] = field(default_factory=list)  # strip kinds drawn in this image


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


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------
def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Neutral textured background: tinted grey, smooth blotches, then desaturated clutter."""
    base = rng.uniform(85, 190) + rng.normal(0, 10, 3)
    # Mostly luminance blotches with a little chroma: colourful blobs would mimic the parts.
    coarse = rng.normal(0, 22, (4, 4, 1)) + rng.normal(0, 7, (4, 4, 3))
    coarse = coarse.astype(np.float32)
    img = base[None, None, :] + cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
    yy, xx = np.mgrid[0:h, 0:w]
    for _ in range(int(rng.integers(2, 7))):
        color = rng.uniform(60, 210) + rng.normal(0, 8, 3)
        kind = rng.integers(3)
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        if kind == 0:  # rectangle
            hw, hh = rng.uniform(6, w / 3), rng.uniform(6, h / 3)
            sel = (np.abs(xx - cx) <= hw) & (np.abs(yy - cy) <= hh)
        elif kind == 1:  # disk
            r = rng.uniform(5, min(h, w) / 5)
            sel = (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
        else:  # thick line
            theta = rng.uniform(0, np.pi)
            dist = np.abs((xx - cx) * np.sin(theta) - (yy - cy) * np.cos(theta))
            sel = dist <= rng.uniform(1.5, 4.0)
        img[sel] = 0.3 * img[sel] + 0.7 * color
    return img


def _draw_strip(
    rng: np.random.Generator, img: np.ndarray, kind: str, x0: int, x1: int, top: int
) -> np.ndarray:
    """Paint a water or grass band over ``[top:, x0:x1]``; returns its boolean mask."""
    h, w = img.shape[:2]
    sel = np.zeros((h, w), dtype=bool)
    sel[top:, x0:x1] = True
    yy, xx = np.mgrid[top:h, x0:x1].astype(np.float32)
    if kind == "water":
        phase = rng.uniform(0, 2 * np.pi)
        waves = np.sin(2 * np.pi * (yy / 5.0 + 0.2 * np.sin(2 * np.pi * xx / 23.0 + phase)))
        color = np.array([55, 115, 175], np.float32) + rng.normal(0, 8, 3)
        patch = color + 28.0 * waves[..., None]
    else:
        streaks = rng.normal(0, 1, (max(2, (h - top) // 6), x1 - x0, 1)).astype(np.float32)
        streaks = cv2.resize(streaks, (x1 - x0, h - top), interpolation=cv2.INTER_LINEAR)
        color = np.array([75, 145, 55], np.float32) + rng.normal(0, 8, 3)
        patch = color + 30.0 * streaks[..., None]
    img[top:, x0:x1] = patch
    return sel


def _shape_inside(shape: str, xn: np.ndarray, yn: np.ndarray) -> np.ndarray:
    if shape == "ellipse":
        return xn**2 + yn**2 <= 1.0
    if shape == "superellipse":
        return xn**4 + yn**4 <= 1.0
    if shape == "triangle":  # apex at +x, base at x = -0.8
        return (xn >= -0.8) & (xn <= 1.0) & (np.abs(yn) <= (1.0 - xn) / 1.8)
    if shape == "octagon":
        return (np.abs(xn) <= 1) & (np.abs(yn) <= 1) & (np.abs(xn) + np.abs(yn) <= 1.45)
    raise ValueError(f"unknown shape {shape}")


def _part_inside(shape: str, du: np.ndarray, dv: np.ndarray, r: float) -> np.ndarray:
    if shape == "disk":
        return du**2 + dv**2 <= r * r
    if shape == "square":
        return np.maximum(np.abs(du), np.abs(dv)) <= 0.85 * r
    if shape == "cross":
        thin = 0.34 * r
        return ((np.abs(du) <= thin) & (np.abs(dv) <= r)) | (
            (np.abs(dv) <= thin) & (np.abs(du) <= r)
        )
    if shape == "ring":
        d2 = du**2 + dv**2
        return (d2 <= r * r) & (d2 >= (0.45 * r) ** 2)
    raise ValueError(f"unknown part shape {shape}")


def _texture(kind: str, u: np.ndarray, v: np.ndarray, b: float) -> np.ndarray:
    """Brightness offset of a family texture in the body's own frame (moves with the body)."""
    if kind == "dots":
        return 45.0 * ((np.mod(u, 7.0) < 2.5) & (np.mod(v, 7.0) < 2.5))
    if kind == "stripes":
        return -40.0 * (np.sin(2 * np.pi * v / 8.0) > 0.2)
    if kind == "checker":
        return np.where((np.floor(u / 9.0) + np.floor(v / 9.0)) % 2 == 0, 28.0, -10.0)
    if kind == "gradient":
        return 45.0 * np.clip(-v / max(b, 1.0), -1, 1) + 12.0 * (np.mod(u + v, 11.0) < 1.5)
    raise ValueError(f"unknown texture {kind}")


@dataclass
class _Object:
    cls: int
    ys: np.ndarray  # pixel coordinates of the body (inside the image)
    xs: np.ndarray
    part: np.ndarray  # bool per body pixel
    colors: np.ndarray  # (N, 3) float colours per body pixel


def _make_object(
    rng: np.random.Generator, cls: int, h: int, w: int, strips: Sequence[Tuple[str, int, int, int]]
) -> Optional[_Object]:
    """Sample one placement of class ``cls``; None if it would leave the image too much."""
    spec = CLASSES[cls - 1]
    fam = FAMILIES[spec.family]
    side = min(h, w)
    a = 0.5 * rng.uniform(*fam["length"]) * side
    b = a / rng.uniform(*fam["aspect"])
    tilt = 15.0 if spec.family == "bot" else 30.0
    theta = np.deg2rad(rng.uniform(-tilt, tilt))
    mirror = -1.0 if rng.random() < 0.5 else 1.0
    ext = 1.3 * max(a, b)
    strip = [s for s in strips if s[0] == spec.context]
    if strip:
        _, x0, x1, top = strip[int(rng.integers(len(strip)))]
        cx = rng.uniform(x0 + 0.3 * a, max(x0 + 0.3 * a + 1, x1 - 0.3 * a))
        cy = top + rng.uniform(-0.7, 0.3) * b  # resting on the surface, partly in the strip
    else:
        cx, cy = rng.uniform(0.12 * w, 0.88 * w), rng.uniform(0.12 * h, 0.88 * h)
    y0, y1 = int(np.floor(cy - ext)), int(np.ceil(cy + ext)) + 1
    x0_, x1_ = int(np.floor(cx - ext)), int(np.ceil(cx + ext)) + 1
    yy, xx = np.mgrid[y0:y1, x0_:x1_]
    dx, dy = xx + 0.5 - cx, yy + 0.5 - cy
    u = mirror * (np.cos(theta) * dx + np.sin(theta) * dy)
    v = -np.sin(theta) * dx + np.cos(theta) * dy
    body = _shape_inside(fam["shape"], u / a, v / b)
    total = int(body.sum())
    inside = body & (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
    if total == 0 or inside.sum() < 0.9 * total:
        return None
    r = max(3.0, fam["part_radius"] * min(a, b))
    pu, pv = fam["anchor"][0] * a, fam["anchor"][1] * b
    part_full = _part_inside(spec.part_shape, u - pu, v - pv, r) & body
    if part_full.sum() > (part_full & inside).sum():  # the part must be entirely in view
        return None
    base = np.array(fam["color"], np.float64) * rng.uniform(0.85, 1.15) + rng.normal(0, 8, 3)
    colors = base[None, :] + _texture(fam["texture"], u[inside], v[inside], b)[:, None]
    part = part_full[inside]
    colors[part] = np.array(PART_COLORS[spec.part_color], np.float64) + rng.normal(0, 6, 3)
    return _Object(cls, yy[inside], xx[inside], part, colors)


def render_sample(rng: np.random.Generator) -> Sample:
    """Render one image, its mask and the bookkeeping masks (parts, context) from ``rng``."""
    h, w = (int(v) for v in rng.integers(MIN_SIDE, MAX_SIDE + 1, size=2))
    img = _background(rng, h, w)
    n_obj = int(rng.choice(len(NUM_OBJECTS_P), p=NUM_OBJECTS_P)) + 1
    classes = [int(c) for c in rng.integers(1, NUM_CLASSES + 1, size=n_obj)]

    kinds = []
    for kind, members in CONTEXT_CLASSES.items():
        p = P_CONTEXT if any(c in members for c in classes) else P_CONTEXT_DISTRACTOR
        if rng.random() < p:
            kinds.append(kind)
    strips: List[Tuple[str, int, int, int]] = []
    context_mask = np.zeros((h, w), dtype=bool)
    if kinds:
        top = int(h - rng.uniform(0.25, 0.38) * h)
        order = [str(k) for k in rng.permutation(kinds)]
        cuts = [0] + ([int(rng.uniform(0.35, 0.65) * w)] if len(order) == 2 else []) + [w]
        for kind, x0, x1 in zip(order, cuts[:-1], cuts[1:]):
            context_mask |= _draw_strip(rng, img, kind, x0, x1, top)
            strips.append((kind, x0, x1, top))

    owner = np.full((h, w), -1, dtype=np.int64)  # index of the object on top of each pixel
    placed: List[_Object] = []
    for cls in classes:
        for _ in range(12):
            obj = _make_object(rng, cls, h, w, strips)
            if obj is None:
                continue
            trial = owner.copy()
            trial[obj.ys, obj.xs] = len(placed)
            ok = True
            for j, prev in enumerate(placed):  # keep every earlier object and its part visible
                vis = trial[prev.ys, prev.xs] == j
                if vis.mean() < MIN_VISIBLE_BODY or vis[prev.part].mean() < MIN_VISIBLE_PART:
                    ok = False
                    break
            if ok:
                placed.append(obj)
                owner = trial
                break

    mask = np.zeros((h, w), dtype=np.uint8)
    part_mask = np.zeros((h, w), dtype=bool)
    for j, obj in enumerate(placed):
        vis = owner[obj.ys, obj.xs] == j
        ys, xs = obj.ys[vis], obj.xs[vis]
        img[ys, xs] = obj.colors[vis]
        mask[ys, xs] = obj.cls
        part_mask[ys[obj.part[vis]], xs[obj.part[vis]]] = True
    img += rng.normal(0, 4.0, img.shape)  # sensor noise over everything
    image = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    labels = sorted(int(v) for v in np.unique(mask) if v != 0)
    context_mask &= mask == 0
    return Sample(image, mask, part_mask, context_mask, labels, sorted(kinds))


# ---------------------------------------------------------------------------------------------
# Writing and caching
# ---------------------------------------------------------------------------------------------
def _palette() -> List[int]:
    flat = [v for col in class_colors() for v in col]
    return flat + [0] * (768 - len(flat))


def _save_mask(mask: np.ndarray, path: str) -> None:
    im = Image.fromarray(mask)  # uint8 -> "L"
    im.putpalette(_palette())  # becomes "P": ids stay the pixel values, viewers show colours
    im.save(path, optimize=False)


def generate_synthetic_wsss(
    out_dir: str,
    num_train: int = DEFAULT_NUM_TRAIN,
    num_val: int = DEFAULT_NUM_VAL,
    seed: int = DEFAULT_SEED,
    progress: bool = False,
) -> Dict:
    """Write the dataset into ``out_dir`` (which should be empty); returns the ``info.json`` dict.

    Not safe against concurrent writers on its own: use :func:`ensure_synthetic_wsss`.
    """
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
    jobs = [("train", i) for i in range(num_train)] + [("val", i) for i in range(num_val)]
    iterator: Iterator = iter(jobs)
    if progress:
        from tqdm import tqdm

        iterator = iter(tqdm(jobs, desc="synthetic_wsss", unit="img"))
    stems: Dict[str, List[str]] = {"train": [], "val": []}
    for split, i in iterator:
        sample = render_sample(sample_rng(seed, split, i))
        stem = f"{split}_{i:05d}"
        Image.fromarray(sample.image).save(
            os.path.join(img_dir, stem + ".jpg"), quality=JPEG_QUALITY
        )
        _save_mask(sample.mask, os.path.join(mask_dir, stem + ".png"))
        labels[stem] = sample.labels
        sizes[stem] = sample.mask.shape
        stems[split].append(stem)
    for split, names in stems.items():
        with open(os.path.join(list_dir, f"{split}.txt"), "w", encoding="utf-8") as f:
            f.write("".join(s + "\n" for s in names))
    with open(os.path.join(out_dir, "image_labels.json"), "w", encoding="utf-8") as f:
        json.dump(labels, f, indent=0, sort_keys=True)
    with open(os.path.join(out_dir, "image_sizes.txt"), "w", encoding="utf-8") as f:
        f.write("".join(f"{k} {hw[0]} {hw[1]}\n" for k, hw in sorted(sizes.items())))
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


@contextlib.contextmanager
def _file_lock(path: str) -> Iterator[None]:
    """Exclusive inter-process lock (POSIX ``flock``); elsewhere the atomic rename suffices."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(path, "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


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
    a temporary sibling folder renamed into place, under a file lock, so concurrent processes
    (e.g. DDP ranks) neither collide nor ever see a half-written dataset.
    """
    out_dir = os.path.abspath(out_dir)
    if not force and is_complete(out_dir):
        return out_dir
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    lock = os.path.join(parent, "." + os.path.basename(out_dir) + ".lock")
    with _file_lock(lock):
        if not force and is_complete(out_dir):
            return out_dir
        why = "forced" if force else ("outdated" if os.path.exists(out_dir) else "missing")
        logger.warning(
            "Generating the synthetic WSSS dataset in '%s' (%s; %d train + %d val images, "
            "seed %d); this happens once.", out_dir, why, num_train, num_val, seed,
        )  # fmt: skip
        tmp = tempfile.mkdtemp(prefix=".synthetic_wsss.tmp-", dir=parent)
        try:
            info = generate_synthetic_wsss(tmp, num_train, num_val, seed, progress=progress)
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
    logger.info("Synthetic WSSS dataset ready in %.1f s.", info["seconds"])
    return out_dir


def save_sample_sheet(path: str, seed: int = DEFAULT_SEED, num: int = 8, cols: int = 4) -> None:
    """Save a grid of training images, each above its colour-coded mask, with a class legend.

    Stored as a 256-colour PNG to keep the file small enough to commit.
    """
    from PIL import ImageDraw

    cell = MAX_SIDE + 8
    samples = [render_sample(sample_rng(seed, "train", i)) for i in range(num)]
    rows = (num + cols - 1) // cols
    legend_h = 18 * ((NUM_CLASSES + 1 + 3) // 4) + 8
    sheet = Image.new("RGB", (cols * cell, rows * 2 * cell + legend_h), (255, 255, 255))
    colors = np.array(class_colors(), dtype=np.uint8)
    for k, s in enumerate(samples):
        r, c = divmod(k, cols)
        x, y = c * cell + 4, r * 2 * cell + 4
        sheet.paste(Image.fromarray(s.image), (x, y))
        colored = colors[s.mask]
        colored[s.context_mask] = (60, 60, 60)  # show where the context strip is (background)
        sheet.paste(Image.fromarray(colored), (x, y + cell))
    draw = ImageDraw.Draw(sheet)
    names = CLASS_NAMES + ["context strip (bg)"]
    swatches = [tuple(int(v) for v in col) for col in colors] + [(60, 60, 60)]
    for i, (name, col) in enumerate(zip(names, swatches)):
        r, c = divmod(i, 4)
        x, y = 6 + c * (cols * cell // 4), rows * 2 * cell + 4 + 18 * r
        draw.rectangle([x, y + 2, x + 12, y + 14], fill=col, outline=(0, 0, 0))
        draw.text((x + 17, y + 2), name, fill=(0, 0, 0))
    sheet.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
