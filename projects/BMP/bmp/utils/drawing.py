"""Small drawing pieces shared by the explanation panels and the training panels."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
from detectron2.data import Metadata
from detectron2.utils.colormap import colormap
from detectron2.utils.visualizer import Visualizer

__all__ = ["heat_tile", "with_colors", "draw_tiles"]


def heat_tile(image_rgb: np.ndarray, heat: np.ndarray) -> np.ndarray:
    """Blend a [0, 1] map over the image with the JET colour map."""
    heat8 = (np.clip(heat, 0.0, 1.0) * 255).astype(np.uint8)
    colored = cv2.applyColorMap(heat8, cv2.COLORMAP_JET)[:, :, ::-1]
    return (0.5 * image_rgb + 0.5 * colored).astype(np.uint8)


def with_colors(metadata: Metadata, num_classes: int) -> Metadata:
    """``metadata`` if it names ``num_classes`` classes with colours; else a copy with numbered
    names and detectron2's fixed colour map, so a class keeps its colour from panel to panel
    (the Visualizer draws random colours without ``stuff_colors``)."""
    names = list(metadata.get("stuff_classes", []) or [])
    colors = list(metadata.get("stuff_colors", []) or [])
    if len(names) >= num_classes and len(colors) >= num_classes:
        return metadata
    if len(names) < num_classes:
        names = ["background"] + [f"class{i}" for i in range(1, num_classes)]
    palette = colormap(rgb=True, maximum=255).astype(int).tolist()
    colors = [palette[i % len(palette)] for i in range(num_classes)]
    return Metadata(name=f"{metadata.name}__colored", stuff_classes=names, stuff_colors=colors)


def draw_tiles(tiles: Sequence[tuple], metadata: Metadata, scale: float) -> np.ndarray:
    """``(base image, labels or None, title)`` tiles drawn with detectron2's ``Visualizer``
    (labels as a semantic map, the title on top) and put side by side: (H', n W', 3) uint8."""
    drawn = []
    for base, labels, title in tiles:
        vis = Visualizer(base, metadata, scale=scale)
        if labels is not None:
            vis.draw_sem_seg(labels, alpha=0.6)
        vis.draw_text(title, (base.shape[1] / 2, 2), horizontal_alignment="center", color="w")
        drawn.append(vis.output.get_image())
    height = min(t.shape[0] for t in drawn)
    return np.concatenate([t[:height] for t in drawn], axis=1)
