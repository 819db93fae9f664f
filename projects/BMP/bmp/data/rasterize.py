"""Semantic masks from instance annotations (COCO polygons or RLE), with one overlap rule.

Scoring a dataset that has instance annotations (``register_coco_instances``, LVIS, a user's own
loader) and building COCO's semantic masks (``datasets/prepare_coco_2014_sem_seg.py``) both go
through :func:`render_instances`, so the two cannot disagree on a pixel:

* background (0) wherever no annotation lies;
* crowd regions are painted "ignore" first;
* then the objects, from the largest pixel area to the smallest (ties keep the given order), so
  a small object on a large one stays visible and an object inside a crowd keeps its class.
"""

from typing import Any, Sequence, Tuple

import numpy as np

__all__ = ["segmentation_mask", "render_instances"]


def segmentation_mask(segm: Any, height: int, width: int) -> np.ndarray:
    """``(H, W)`` bool of one COCO segmentation: polygons, uncompressed or compressed RLE.

    Polygons with fewer than three points cannot be rasterised and cover nothing.
    """
    import pycocotools.mask as mask_util

    if isinstance(segm, list):
        polygons = [p for p in segm if len(p) >= 6]
        if not polygons:
            return np.zeros((height, width), dtype=bool)
        rle = mask_util.merge(mask_util.frPyObjects(polygons, height, width))
    elif isinstance(segm, dict) and "counts" in segm:
        rle = segm
        if isinstance(segm["counts"], list):
            rle = mask_util.frPyObjects(segm, height, width)
        size = tuple(int(v) for v in rle.get("size", (height, width)))
        if size != (height, width):
            raise ValueError(f"an RLE of size {size} on an image of size {(height, width)}")
    else:
        raise ValueError(f"a segmentation of type {type(segm).__name__} (polygons or RLE expected)")
    return mask_util.decode(rle).astype(bool)


def render_instances(
    height: int,
    width: int,
    instances: Sequence[Tuple[int, Any, bool]],
    ignore_label: int = 255,
) -> np.ndarray:
    """``(H, W)`` uint8 class ids from ``(class id, segmentation, is crowd)`` triples.

    Class ids are written as given (1..K for BMP); crowd regions get ``ignore_label``. See the
    module docstring for the overlap rule.
    """
    out = np.zeros((height, width), dtype=np.uint8)
    objects = []
    for order, (cls, segm, crowd) in enumerate(instances):
        region = segmentation_mask(segm, height, width)
        if crowd:
            out[region] = ignore_label
        else:
            objects.append((-int(region.sum()), order, int(cls), region))
    for _, _, cls, region in sorted(objects, key=lambda o: (o[0], o[1])):
        out[region] = cls
    return out
