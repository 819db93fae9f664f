"""Pictures while training (``VIS_PERIOD``): how the pseudo labels evolve, in TensorBoard.

Every ``VIS_PERIOD`` iterations the model keeps what its step computed for the first image of the
batch (:class:`bmp.modeling.training_view.TrainingView`, no extra pass); this hook draws it as one
panel and puts it into detectron2's event storage (``put_image``), which the TensorBoard writer
writes: ``tensorboard --logdir <OUTPUT_DIR>``. Only the main process draws and writes.

Tiles, left to right: the training crop; its CAM (the classification branch, its labelled
classes, min-max normalised); the c2s label the segmentation branch learns (PAR, then BSP); the
s2c label the CAMs learn (confident foreground); the segmentation prediction. Ignored pixels of a
label are grey; before a loss starts its tile says so.
"""

from __future__ import annotations

import numpy as np
import torch
from detectron2.data import Metadata
from detectron2.engine import hooks
from detectron2.utils import comm

from ..modeling.training_view import TrainingView
from ..utils.drawing import draw_tiles, heat_tile, with_colors

__all__ = ["TrainingPanels", "training_panel", "PANEL_TAG"]

PANEL_TAG = "bmp/training_labels"
IGNORE_GREY = 128


def _labels_tile(image: np.ndarray, labels: np.ndarray | None, ignore: int) -> tuple:
    """The crop with ignored pixels greyed; None labels mean the loss is not on yet."""
    if labels is None:
        return image, None
    base = image.copy()
    ignored = labels == ignore
    base[ignored] = (0.4 * base[ignored] + 0.6 * IGNORE_GREY).astype(np.uint8)
    shown = labels.copy()
    shown[shown == 0] = ignore  # background shows the image, not a colour wash
    return base, shown


def training_panel(view: TrainingView, metadata: Metadata, ignore: int = 255) -> np.ndarray:
    """The five tiles side by side as one (H', 5 W', 3) uint8 RGB image."""
    image = view.image.detach().float().clamp(0, 255).byte().permute(1, 2, 0).cpu().numpy()
    h, w = image.shape[:2]
    k = view.cam_logits.shape[0]
    meta = with_colors(metadata, k + 1)
    present = [int(c) for c in torch.nonzero(view.cls_label.cpu() > 0).flatten()] or list(range(k))
    cam = torch.nn.functional.interpolate(
        view.cam_logits.detach().float().cpu()[None], size=(h, w), mode="bilinear",
        align_corners=False,
    )[0][present].amax(dim=0)  # fmt: skip
    cam = ((cam - cam.min()) / (cam.max() - cam.min()).clamp(min=1e-6)).numpy()
    names = meta.stuff_classes

    def as_numpy(t):
        return None if t is None else t.detach().cpu().numpy().astype(np.int64)

    seg = None
    if view.seg_logits is not None:
        seg = view.seg_logits.detach().float().cpu().argmax(dim=0).numpy()
        seg[~view.valid.cpu().numpy()] = ignore
    s2c = as_numpy(view.s2c)
    if s2c is not None:  # s2c labels index the K CAM channels: class c is c + 1 on the panel
        s2c = np.where(s2c == ignore, ignore, s2c + 1)
    tiles = [
        (image, None, f"crop (iter {view.iteration})"),
        (heat_tile(image, cam), None, "CAM: " + ", ".join(names[c + 1] for c in present)),
        (*_labels_tile(image, as_numpy(view.c2s), ignore),
         f"c2s label ({view.c2s_kind})" if view.c2s is not None else "c2s: not started"),
        (*_labels_tile(image, s2c, ignore),
         "s2c label" if view.s2c is not None else "s2c: not started"),
        (*_labels_tile(image, seg, ignore), "segmentation"),
    ]  # fmt: skip
    return draw_tiles(tiles, meta, max(1.0, 256.0 / min(h, w)))


class TrainingPanels(hooks.HookBase):
    """Put the panel of every ``period``-th step into the event storage (main process only)."""

    def __init__(self, period: int, metadata: Metadata, ignore: int = 255) -> None:
        self.period, self.metadata, self.ignore = period, metadata, ignore

    def after_step(self) -> None:
        if self.trainer.iter % self.period:
            return
        model = self.trainer.model
        model = getattr(model, "module", model)  # inside DDP
        view = model.take_training_view()
        if view is None or not comm.is_main_process():
            return
        panel = training_panel(view, self.metadata, self.ignore)
        self.trainer.storage.put_image(PANEL_TAG, torch.from_numpy(panel).permute(2, 0, 1))
