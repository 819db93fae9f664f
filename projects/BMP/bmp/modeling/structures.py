"""The data that passes between BMP's parts: a preprocessed batch and one pass's branch outputs."""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor

__all__ = ["Batch", "BranchOutputs"]


def _upsample(x: Tensor, size: tuple[int, int]) -> Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


@dataclass
class Batch:
    """Images of one forward, padded to a common size.

    ``images`` are RGB floats in 0..255 (what PAR's colour affinity reads, after / 255); ``x`` is
    the normalised network input; ``valid`` is True on real pixels and False on padding;
    ``cls_label`` is the ``(B, K)`` multi-hot image label, or ``None`` when the inputs carry none.

    Known on the host, so that building labels never waits for the device: ``num_slots``, the
    largest count of present classes in an image plus one (background), from ``cls_label``; and
    ``boxes``, each image's ``(y0, y1, x0, x1)`` box of real pixels (``None`` without one).
    Either is ``None`` when it was not computed; the label functions then compute it.
    """

    images: Tensor
    x: Tensor
    valid: Tensor
    cls_label: Tensor | None
    num_slots: int | None = None
    boxes: list[tuple[int, int, int, int] | None] | None = None

    @property
    def size(self) -> tuple[int, int]:
        return int(self.x.shape[-2]), int(self.x.shape[-1])


@dataclass
class BranchOutputs:
    """Outputs of one pass of the encoder and the branches.

    ``cls_logits`` ``(B, K)``; ``cam_logits`` ``(B, K, h, w)`` at the classifier's stride (P_c);
    ``seg_logits`` ``(B, K + 1, h1, w1)`` at the decoder's finest level (P_s), or ``None`` when the
    pass skipped the decoder; ``affinity`` ``(B, N, N)`` from the affinity head, or ``None``;
    ``input_size`` is the size of the images of this pass, to which the model's logits are
    upsampled.
    """

    cls_logits: Tensor
    cam_logits: Tensor
    seg_logits: Tensor | None
    affinity: Tensor | None
    input_size: tuple[int, int]

    # Methods, not cached properties: a value cached under no_grad would carry no gradient.
    def cam_up(self) -> Tensor:
        """CAM logits upsampled (bilinear) to the input size, in float32 (losses and labels
        read them; see :mod:`bmp.modeling.precision`)."""
        return _upsample(self.cam_logits.float(), self.input_size)

    def seg_up(self) -> Tensor:
        """Segmentation logits upsampled (bilinear) to the input size, in float32."""
        if self.seg_logits is None:
            raise ValueError("BranchOutputs.seg_up: this pass computed no segmentation logits")
        return _upsample(self.seg_logits.float(), self.input_size)
