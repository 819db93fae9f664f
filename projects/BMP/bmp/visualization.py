"""Explanation panels: what BMP's two branches think of one image, as five tiles side by side.

The tiles are the input, the segmentation result, the classification branch's CAM, the
segmentation branch's foreground map and the localisation seed that would become its pseudo
label; each is drawn with detectron2's ``Visualizer``. The demo, the main job and the benchmarks
all draw their panels here, so a panel means the same thing wherever it appears.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import cv2
import numpy as np
import torch
from detectron2.config import CfgNode
from detectron2.data import Metadata, MetadataCatalog
from detectron2.data.detection_utils import read_image
from detectron2.engine import DefaultPredictor
from detectron2.modeling import build_model

from .config import adapt_config_to_machine
from .data.eval_size import EvalImageSize
from .data.registered import bmp_metadata
from .engine.checkpoint import AtomicCheckpointer
from .evaluation.crf import CRFParams, require_crf
from .evaluation.crf_evaluator import crf_refine_output
from .modeling import with_test_time_augmentation
from .utils.drawing import draw_tiles, heat_tile

__all__ = ["BMPPredictor", "make_panel", "write_panels", "demo_metadata", "TILE_TITLES"]

logger = logging.getLogger(__name__)

TILE_TITLES = ("input", "segmentation", "CAM (cls branch)", "foreground (seg branch)", "seed")
# Seeds: "bsp" is the label BMP trains the segmentation branch with after BSP starts.
SEED_ORDER = ("bsp", "par", "cam")
JPEG_QUALITY = 85


def demo_metadata(cfg: CfgNode) -> Metadata:
    """The first test dataset's metadata (class names with background at 0), or numbered names."""
    if cfg.DATASETS.TEST:
        try:
            meta = bmp_metadata(cfg.DATASETS.TEST[0])  # any registered dataset's classes
        except (KeyError, ValueError, OSError):  # its files are not here: numbered names
            meta = MetadataCatalog.get(cfg.DATASETS.TEST[0])
        if meta.get("stuff_classes"):
            return meta
    meta = MetadataCatalog.get("__bmp_demo_unnamed__")
    if not meta.get("stuff_classes"):
        k = cfg.MODEL.BMP.NUM_CLASSES
        meta.set(stuff_classes=["background"] + [f"class{i}" for i in range(1, k + 1)])
    return meta


class BMPPredictor(DefaultPredictor):
    """detectron2's predictor for BMP: one BGR image in, outputs with CAMs and seeds out.

    Differences from ``DefaultPredictor``, each because a panel needs it: CAMs and seeds are on
    (a demo image has no image-level label, so seeds use the predicted classes); the image gets
    the evaluation's test size (:mod:`bmp.data.eval_size`); ``TEST.AUG`` wraps the model in
    test-time augmentation; ``TEST.CRF.ENABLED`` adds ``sem_seg_crf`` (the CRF marginals); the
    outputs come back on the CPU; ``MODEL.WEIGHTS`` is read as data (:mod:`bmp.utils.safe_load`).
    """

    def __init__(self, cfg: CfgNode) -> None:
        cfg = cfg.clone()
        cfg.defrost()
        cfg.TEST.BMP.EXTRA_OUTPUTS = True
        cfg.TEST.BMP.SEED_USE_GT_LABELS = False
        cfg.INPUT.SMALL_TEST_IMAGE = "resize"  # a demo image is always shown, never skipped
        adapt_config_to_machine(cfg)
        cfg.freeze()
        self.crf = CRFParams.from_config(cfg.TEST.CRF)
        if self.crf is not None:
            require_crf()
        # Not DefaultPredictor.__init__: its checkpointer unpickles MODEL.WEIGHTS fully, so a
        # crafted .pkl would run code; ours reads it as data. The rest is what that sets up.
        self.cfg = cfg
        model = build_model(cfg).eval()
        unsafe = cfg.MODEL.WEIGHTS_UNSAFE_UNPICKLE
        AtomicCheckpointer(model, unsafe_unpickle=unsafe).load(cfg.MODEL.WEIGHTS)
        self.input_format = cfg.INPUT.FORMAT
        self.model = with_test_time_augmentation(self.cfg, model)
        self.metadata = demo_metadata(self.cfg)
        self.test_size = EvalImageSize.from_config(self.cfg)

    @torch.no_grad()
    def __call__(self, original_image: np.ndarray, file_name: str = "<image>") -> dict:
        """``original_image`` (H, W, 3) uint8 BGR -> outputs at the original size, on the CPU.

        ``file_name`` only names the image in size warnings.
        """
        rgb = np.ascontiguousarray(original_image[:, :, ::-1])
        model_image = rgb if self.input_format == "RGB" else original_image
        height, width = model_image.shape[:2]
        image = self.test_size.apply(model_image, file_name)
        tensor = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        out = _to_cpu(self.model([{"image": tensor, "height": height, "width": width}])[0])
        if self.crf is not None:
            out["sem_seg_crf"] = crf_refine_output(rgb, out["sem_seg"], self.crf)
        return out


def _to_cpu(x):
    if isinstance(x, dict):
        return {k: _to_cpu(v) for k, v in x.items()}
    return x.cpu() if torch.is_tensor(x) else x


def _predicted_classes(seg: np.ndarray, cam: torch.Tensor) -> list[int]:
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


def _tiles(image_rgb: np.ndarray, outputs: dict, names: Sequence[str]) -> list[tuple]:
    """``(base image, labels or None, title)`` of the five tiles."""
    logits = outputs["sem_seg"].float()
    seg_title = TILE_TITLES[1]
    seg = logits.argmax(dim=0).numpy().astype(np.int64)
    if "sem_seg_crf" in outputs:
        seg = outputs["sem_seg_crf"].argmax(dim=0).numpy().astype(np.int64)
        seg_title = "segmentation + CRF"
    cam = outputs["cam"].float()
    classes = _predicted_classes(seg, cam)
    cam_map = cam[[c - 1 for c in classes]].amax(dim=0).numpy()
    fg_prob = 1.0 - torch.softmax(logits, dim=0)[0].numpy()
    seed_name = next(n for n in SEED_ORDER + tuple(outputs["seeds"]) if n in outputs["seeds"])
    seed = outputs["seeds"][seed_name].numpy().astype(np.int64)
    cam_title = "CAM: " + ", ".join(names[c] for c in classes if c < len(names))
    return [
        (image_rgb, None, TILE_TITLES[0]),
        (image_rgb, _foreground_only(seg), seg_title),
        (heat_tile(image_rgb, cam_map), None, cam_title),
        (heat_tile(image_rgb, fg_prob), None, TILE_TITLES[3]),
        (image_rgb, _foreground_only(seed), f"seed ({seed_name})"),
    ]


def make_panel(
    image_rgb: np.ndarray, outputs: dict, metadata: Metadata, scale: float | None = None
) -> np.ndarray:
    """The five tiles side by side as one (H', 5 W', 3) uint8 RGB image.

    ``outputs`` is one BMP prediction with ``sem_seg`` (K+1, H, W), ``cam`` (K, H, W) and
    ``seeds`` (label maps), and optionally ``sem_seg_crf`` (CRF marginals, then shown as the
    segmentation). Small images are drawn enlarged so the labels stay legible.
    """
    if "cam" not in outputs or "seeds" not in outputs:
        raise KeyError(
            "the panel needs 'cam' and 'seeds': run the model with TEST.BMP.EXTRA_OUTPUTS"
        )
    h, w = image_rgb.shape[:2]
    if scale is None:
        scale = max(1.0, 320.0 / min(h, w))
    return draw_tiles(_tiles(image_rgb, outputs, metadata.stuff_classes), metadata, scale)


def write_panels(
    predictor: BMPPredictor,
    image_files: Sequence[str],
    out_dir: str | os.PathLike,
    scale: float | None = None,
    suffix: str = ".png",
) -> list[str]:
    """Predict every file and write ``<out_dir>/<stem><suffix>``; returns the written paths.

    ``suffix`` ".jpg" writes JPEG (quality 85): panels of photos stay small enough to commit.
    """
    os.makedirs(out_dir, exist_ok=True)
    params = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY] if suffix.lower() in (".jpg", ".jpeg") else []
    written = []
    for path in image_files:
        image = read_image(path, format="BGR")
        panel = make_panel(image[:, :, ::-1], predictor(image, path), predictor.metadata, scale)
        dst = os.path.join(out_dir, os.path.splitext(os.path.basename(path))[0] + suffix)
        if not cv2.imwrite(dst, panel[:, :, ::-1], params):
            raise OSError(f"could not write the panel of '{path}' to '{dst}'")
        logger.info(f"panel: {path} -> {dst}")
        written.append(dst)
    return written
