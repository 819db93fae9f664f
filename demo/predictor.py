"""Single-image BMP inference and the five-tile explanation panel written by demo.py.

The panel shows what BMP's two branches think of one image: the input, the segmentation result,
the classification branch's CAM, the segmentation branch's foreground map and the localisation
seed that would become its pseudo label. Every tile is drawn with detectron2's ``Visualizer``.
"""

from typing import Dict, List, Optional, Tuple

import cv2
import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import CfgNode
from detectron2.data import Metadata, MetadataCatalog
from detectron2.data import transforms as T
from detectron2.modeling import build_model
from detectron2.utils.visualizer import Visualizer

from bmp.engine.defaults import adapt_config_to_machine

__all__ = ["BMPPredictor", "make_panel", "demo_metadata", "TILE_TITLES"]

TILE_TITLES = ("input", "segmentation", "CAM (cls branch)", "foreground (seg branch)", "seed")
# Seeds: "bsp" is the label BMP trains the segmentation branch with after BSP starts.
SEED_ORDER = ("bsp", "par", "cam")


def demo_metadata(cfg: CfgNode) -> Metadata:
    """The first test dataset's metadata (class names with background at 0), or numbered names."""
    if cfg.DATASETS.TEST:
        meta = MetadataCatalog.get(cfg.DATASETS.TEST[0])
        if meta.get("stuff_classes"):
            return meta
    name = "__bmp_demo_unnamed__"
    meta = MetadataCatalog.get(name)
    if not meta.get("stuff_classes"):
        k = cfg.MODEL.BMP.NUM_CLASSES
        meta.set(stuff_classes=["background"] + [f"class{i}" for i in range(1, k + 1)])
    return meta


class BMPPredictor:
    """Load a BMP checkpoint once and predict RGB images with CAMs and seeds enabled."""

    def __init__(self, cfg: CfgNode) -> None:
        cfg = cfg.clone()
        cfg.defrost()
        cfg.TEST.BMP.EXTRA_OUTPUTS = True  # the panel needs CAMs and seeds
        # A demo image has no image-level label: seeds use the classes the model predicts.
        cfg.TEST.BMP.SEED_USE_GT_LABELS = False
        adapt_config_to_machine(cfg)
        cfg.freeze()
        self.cfg = cfg
        self.model = build_model(cfg)
        self.model.eval()
        DetectionCheckpointer(self.model).load(cfg.MODEL.WEIGHTS)
        self.resize = (
            T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)
            if cfg.INPUT.MIN_SIZE_TEST > 0
            else None
        )

    @torch.no_grad()
    def __call__(self, image_rgb: np.ndarray) -> Dict[str, torch.Tensor]:
        """``image_rgb`` (H, W, 3) uint8 -> the model's outputs at the original size, on CPU."""
        h, w = image_rgb.shape[:2]
        img = (
            image_rgb
            if self.resize is None
            else self.resize.get_transform(image_rgb).apply_image(image_rgb)
        )
        tensor = torch.as_tensor(np.ascontiguousarray(img.transpose(2, 0, 1)))
        out = self.model([{"image": tensor, "height": h, "width": w}])[0]
        return _to_cpu(out)


def _to_cpu(x):
    if isinstance(x, dict):
        return {k: _to_cpu(v) for k, v in x.items()}
    return x.cpu() if torch.is_tensor(x) else x


def _heat_tile(image_rgb: np.ndarray, heat: np.ndarray) -> np.ndarray:
    """Blend a [0, 1] map over the image with the JET colour map."""
    heat8 = (np.clip(heat, 0.0, 1.0) * 255).astype(np.uint8)
    colored = cv2.applyColorMap(heat8, cv2.COLORMAP_JET)[:, :, ::-1]
    return (0.5 * image_rgb + 0.5 * colored).astype(np.uint8)


def _predicted_classes(seg: np.ndarray, cam: torch.Tensor) -> List[int]:
    """Foreground classes (1..K) in the segmentation; else the class with the strongest CAM."""
    present = [int(c) for c in np.unique(seg) if 0 < c <= cam.shape[0]]
    if not present:
        present = [int(cam.flatten(1).mean(dim=1).argmax()) + 1]
    return present


def _foreground_only(labels: np.ndarray, ignore: int = 255) -> np.ndarray:
    """Hide background (0) so it shows the image, not a colour wash."""
    out = labels.copy()
    out[out == 0] = ignore
    return out


def make_panel(
    image_rgb: np.ndarray, outputs: Dict, metadata: Metadata, scale: Optional[float] = None
) -> np.ndarray:
    """The five tiles side by side as one (H', 5 W', 3) uint8 RGB image.

    ``outputs`` is one BMP prediction with ``sem_seg`` (K+1, H, W), ``cam`` (K, H, W) and
    ``seeds`` (label maps). Small images are drawn enlarged so the labels stay legible.
    """
    if "cam" not in outputs or "seeds" not in outputs:
        raise KeyError(
            "the panel needs 'cam' and 'seeds': run the model with TEST.BMP.EXTRA_OUTPUTS"
        )
    h, w = image_rgb.shape[:2]
    if scale is None:
        scale = max(1.0, 320.0 / min(h, w))
    names = metadata.stuff_classes
    logits = outputs["sem_seg"].float()
    seg = logits.argmax(dim=0).numpy().astype(np.int64)
    cam = outputs["cam"].float()
    classes = _predicted_classes(seg, cam)
    cam_map = cam[[c - 1 for c in classes]].amax(dim=0).numpy()
    fg_prob = 1.0 - torch.softmax(logits, dim=0)[0].numpy()
    seed_name = next(n for n in SEED_ORDER + tuple(outputs["seeds"]) if n in outputs["seeds"])
    seed = outputs["seeds"][seed_name].numpy().astype(np.int64)

    cam_title = "CAM: " + ", ".join(names[c] for c in classes if c < len(names))
    tiles: List[Tuple[np.ndarray, Optional[np.ndarray], str]] = [
        (image_rgb, None, TILE_TITLES[0]),
        (image_rgb, _foreground_only(seg), TILE_TITLES[1]),
        (_heat_tile(image_rgb, cam_map), None, cam_title),
        (_heat_tile(image_rgb, fg_prob), None, TILE_TITLES[3]),
        (image_rgb, _foreground_only(seed), f"seed ({seed_name})"),
    ]
    drawn = []
    for base, labels, title in tiles:
        vis = Visualizer(base, metadata, scale=scale)
        if labels is not None:
            vis.draw_sem_seg(labels, alpha=0.6)
        vis.draw_text(title, (w / 2, 2), horizontal_alignment="center", color="w")
        drawn.append(vis.output.get_image())
    height = min(t.shape[0] for t in drawn)
    return np.concatenate([t[:height] for t in drawn], axis=1)
