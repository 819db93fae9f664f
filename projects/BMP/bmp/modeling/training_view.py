"""What one training step showed and trained on, kept for a picture (``VIS_PERIOD``).

The step already computed every map a researcher looks at when a run goes wrong: the crop, the
CAM of the classification branch, the c2s pseudo label (PAR, then BSP) the segmentation branch
learns, the s2c label the CAMs learn, and the segmentation prediction. A :class:`TrainingView`
holds them for the first image of the batch as detached device tensors (no copy, no host sync);
the trainer's panel hook reads them every ``VIS_PERIOD`` iterations on the main process.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

__all__ = ["TrainingView"]


@dataclass
class TrainingView:
    """One image of one training step: ``image`` (3, H, W) RGB 0..255; ``cam_logits`` (K, h, w)
    of the main pass; ``cls_label`` (K,); ``valid`` (H, W); ``seg_logits`` (K+1, H, W), or None;
    ``c2s`` / ``s2c`` (H, W) labels, or None before their losses start (``c2s_kind`` is "PAR" or
    "BSP"); ``iteration`` of the step."""

    iteration: int
    image: Tensor
    cam_logits: Tensor
    cls_label: Tensor
    valid: Tensor
    seg_logits: Tensor | None = None
    c2s: Tensor | None = None
    c2s_kind: str = ""
    s2c: Tensor | None = None
