"""Small drawing pieces shared by the explanation panels and the training panels."""

from __future__ import annotations

import cv2
import numpy as np
from detectron2.data import Metadata
from detectron2.utils.colormap import colormap

__all__ = ["heat_tile", "with_colors"]


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
