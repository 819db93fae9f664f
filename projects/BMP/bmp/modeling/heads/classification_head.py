"""Classification branch: image logits for the multi-label loss, and CAMs from the same weights."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ClassificationHead"]


class ClassificationHead(nn.Module):
    """Global pooling + bias-free 1x1 classifier to K foreground classes.

    The classifier has no bias so the per-pixel map ``classifier(x)`` is a proper class
    activation map: with average pooling, the image logits are exactly the CAM's spatial mean.
    With max pooling (the authors' choice) the features are max-pooled per channel before the
    classifier, as in the authors' model, so the image logits are not the CAM logits' maximum.
    """

    def __init__(self, in_channels: int, num_classes: int, pooling: str = "max") -> None:
        super().__init__()
        if pooling not in ("max", "avg"):
            raise ValueError(
                f"MODEL.BMP.CLASSIFIER.POOLING must be 'max' or 'avg', got {pooling!r}"
            )
        self.pooling = pooling
        self.num_classes = num_classes
        self.classifier = nn.Conv2d(in_channels, num_classes, kernel_size=1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, h, w) features -> (B, K) image logits."""
        if self.pooling == "max":
            pooled = F.adaptive_max_pool2d(x, 1)
        else:
            pooled = F.adaptive_avg_pool2d(x, 1)
        return self.classifier(pooled).flatten(1)

    def cam_logits(self, x: Tensor) -> Tensor:
        """(B, C, h, w) features -> (B, K, h, w) per-pixel class logits (P_c before resizing)."""
        return self.classifier(x)
