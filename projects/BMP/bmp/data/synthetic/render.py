"""Drawing one synthetic image, its mask and the bookkeeping masks, from one RNG."""

from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np

from .spec import (
    CLASSES,
    CONTEXT_CLASSES,
    FAMILIES,
    MAX_SIDE,
    MIN_SIDE,
    MIN_VISIBLE_BODY,
    MIN_VISIBLE_PART,
    NUM_CLASSES,
    NUM_OBJECTS_P,
    P_CONTEXT,
    P_CONTEXT_DISTRACTOR,
    PART_COLORS,
)

__all__ = ["Sample", "render_sample"]


@dataclass
class Sample:
    """One rendered image with everything the tests need to check the failure modes."""

    image: np.ndarray  # (H, W, 3) uint8 RGB
    mask: np.ndarray  # (H, W) uint8, 0 = background, 1..K
    part_mask: np.ndarray  # (H, W) bool, visible discriminative parts
    context_mask: np.ndarray  # (H, W) bool, visible context strips (background in ``mask``)
    labels: List[int]  # sorted foreground ids present in ``mask``
    contexts: List[str] = field(default_factory=list)  # strip kinds drawn in this image


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
