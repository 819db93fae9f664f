"""The fully supervised ceiling: BMP's backbone, branches and recipe, trained on true masks.

WSSS papers report what the same network reaches with pixel labels, so a reader can tell how
much of the gap is the weak supervision. This meta-architecture is that row: the segmentation
branch learns the ground-truth masks with cross-entropy, the classification branch its image
labels; no pseudo label is built. It needs ``INPUT.DATASET_MAPPER_NAME: "supervised"``, the only
mapper that reads masks for training. Inference is BMP's own.
"""

from __future__ import annotations

import torch.nn.functional as F
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.structures import ImageList
from torch.profiler import record_function

from ..losses import classification_loss
from .bmp import BMP

__all__ = ["BMPSupervised"]


@META_ARCH_REGISTRY.register()
class BMPSupervised(BMP):
    """BMP trained on ground-truth masks: ``loss_cls`` + ``loss_sem_seg`` (cross-entropy)."""

    def forward(self, batched_inputs: list[dict]):
        if not self.training:
            return self.inference(batched_inputs)
        missing = [d.get("file_name", "<unknown>") for d in batched_inputs if "sem_seg" not in d]
        if missing:
            raise KeyError(
                f"training inputs {missing} have no 'sem_seg': BMPSupervised trains on masks; set "
                'INPUT.DATASET_MAPPER_NAME "supervised"'
            )
        batch = self.preprocess(batched_inputs, require_labels=True)
        ignore = self.criterion.ignore_value
        masks = [d["sem_seg"].to(self.device) for d in batched_inputs]
        target = ImageList.from_tensors(masks, pad_value=ignore).tensor.long()
        with record_function("bmp.forward"):
            main = self.forward_branches(batch.x)
        with record_function("bmp.losses"):
            return {
                "loss_cls": classification_loss(main.cls_logits, batch.cls_label),
                "loss_sem_seg": F.cross_entropy(main.seg_up(), target, ignore_index=ignore),
            }
