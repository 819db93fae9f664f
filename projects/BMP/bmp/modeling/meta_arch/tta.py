"""Test-time augmentation for BMP as a wrapper, the way detectron2 projects do it.

Each image is segmented at several scales and with its horizontal flip; the wrapped model's
public parts do the passes (:meth:`BMP.forward_branches`) and the outputs (:meth:`BMP.predict`).
The fusion is the authors' test-time one: each pass's logits are upsampled to that pass's input
size and then to the image size, the flips averaged and the scales max-fused.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from detectron2.config import CfgNode
from torch import Tensor, nn

from ..multiscale import merge_flip, multiscale_logits, upsample_twice
from ..structures import Batch, BranchOutputs
from .bmp import BMP, group_by_size

__all__ = ["BMPWithTTA", "with_test_time_augmentation"]


class BMPWithTTA(nn.Module):
    """Wraps a :class:`BMP` so that eval-mode forward returns test-time-augmented ``sem_seg``.

    Everything else (``cls_score`` and, when the model has them on, ``cam`` and ``seeds``) comes
    from the plain pass at scale 1. Scaled inputs use ``scale_factor`` resizing, as the authors'
    test code does.
    """

    def __init__(self, cfg: CfgNode, model: BMP, scales: Sequence[float] | None = None) -> None:
        super().__init__()
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        if not isinstance(model, BMP):
            raise TypeError(f"BMPWithTTA wraps a BMP model, got {type(model).__name__}")
        self.model = model
        self.scales = [float(s) for s in (scales if scales is not None else cfg.TEST.AUG.SCALES)]
        if not self.scales:
            raise ValueError("TEST.AUG.SCALES must list at least one scale")
        self.flip = bool(cfg.TEST.AUG.FLIP)
        self.train(model.training)  # evaluation restores this mode on the wrapper and the model

    def forward(self, batched_inputs: list[dict]) -> list[dict]:
        results: list[dict] = []
        with torch.no_grad():
            for group in group_by_size(batched_inputs):
                batch = self.model.preprocess(group)
                main = self.model.forward_branches(batch.x)
                seg = self.fused_logits(batch, main)
                results.extend(self.model.predict(group, batch, main, seg_logits=seg))
        return results

    def fused_logits(self, batch: Batch, main: BranchOutputs) -> Tensor:
        """Max over scales of the flip-averaged logits, at the batch size: ``(B, K+1, H, W)``."""
        passes = multiscale_logits(
            self.model.extra_pass, batch.x, main, self.scales, self.flip, True, True
        )
        fused = []
        for seg, pass_size in zip(passes.segs, passes.pass_sizes):
            if self.flip:
                seg = merge_flip(seg, "mean")
            fused.append(upsample_twice(seg, pass_size, batch.size))
        return torch.stack(fused).amax(dim=0)


def with_test_time_augmentation(cfg: CfgNode, model: nn.Module) -> nn.Module:
    """``model`` wrapped in :class:`BMPWithTTA` when ``TEST.AUG.ENABLED``, else ``model``."""
    return BMPWithTTA(cfg, model) if cfg.TEST.AUG.ENABLED else model
