"""BMP: Branches Mutual Promotion for end-to-end weakly supervised semantic segmentation.

One encoder feeds three branches: a classifier (image logits + CAMs), a SegFormer decoder
(segmentation logits) and an affinity head (on the encoder's attention logits). Each iteration
the model builds its own pseudo labels without gradient from multi-scale + flip CAMs and
segmentation maps, and the two branches supervise each other:

* c2s: the segmentation branch learns the PAR-refined CAM labels (BSP-refined after
  ``BSP.START_ITER``),
* s2c: the CAMs learn the confident part of the segmentation branch's own prediction,
* aff: the attention-derived affinity learns "same label" from the PAR labels.

The tensor maths (fusion, PAR, labels, losses) lives in ``bmp.modeling.{cam,par,pseudo_labels,
losses}``; this module wires it, shares forward passes and applies the warm-up schedule.
"""

from __future__ import annotations

import contextlib
import sys
import time
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from detectron2.config import CfgNode, configurable
from detectron2.modeling import META_ARCH_REGISTRY, Backbone, build_backbone, build_sem_seg_head
from detectron2.modeling.postprocessing import sem_seg_postprocess
from detectron2.utils.events import get_event_storage
from torch import Tensor, nn

from ..cam import (
    cam_confidence,
    fuse_multiscale_cams,
    fuse_multiscale_seg,
    merge_flip,
    minmax_normalize,
    upsample_twice,
)
from ..heads.affinity_head import AffinityHead
from ..heads.classification_head import ClassificationHead
from ..losses import affinity_loss, c2s_loss, classification_loss, s2c_loss
from ..par import PAR
from ..pseudo_labels import (
    affinity_labels,
    bsp_pseudo_labels,
    cam_seed_labels,
    par_pseudo_labels,
    s2c_labels,
)
from ..schedule import LossSchedule

__all__ = ["BMP"]

# Iteration assumed when no EventStorage is open (bare unit tests, scripts): past every warm-up,
# so the full training step runs.
NO_STORAGE_ITER = sys.maxsize

_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


@dataclass
class _BranchOutputs:
    """Raw outputs of one forward of the three branches (sizes at feature resolution)."""

    cls_logits: Tensor  # (B, K)
    cam_logits: Tensor  # (B, K, h, w) at the classifier's feature stride
    seg_logits: Optional[Tensor]  # (B, K+1, h1, w1) at the decoder's finest level
    attn_logits: Optional[Tensor]  # (B, A, N, N) or None


@contextlib.contextmanager
def _frozen_bn_stats(module: nn.Module) -> Iterator[None]:
    """Run train-mode passes without touching BatchNorm running statistics.

    The pseudo-label passes are extra looks at the same batch; letting them update the running
    stats would count every image several times. Momentum 0 keeps the batch-statistics
    behaviour of train mode and leaves the buffers as they were.
    """
    saved = []
    for m in module.modules():
        if isinstance(m, _BATCH_NORMS) and m.training and m.track_running_stats:
            tracked = None if m.num_batches_tracked is None else m.num_batches_tracked.clone()
            saved.append((m, m.momentum, tracked))
            m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum, tracked in saved:
            m.momentum = momentum
            if tracked is not None:
                m.num_batches_tracked.copy_(tracked)


def _resize(x: Tensor, size: Sequence[int]) -> Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


@META_ARCH_REGISTRY.register()
class BMP(nn.Module):
    """The BMP meta-architecture (see the module docstring for the method).

    Training ``forward`` takes the WSSS mapper's dicts (``image`` uint8 RGB, ``cls_label``
    multi-hot (K,), optional ``valid_mask``) and returns ``loss_cls``, ``loss_c2s``,
    ``loss_s2c`` and ``loss_aff``, already weighted and zero while warming up. Inactive losses are
    graph-connected zeros so every parameter is used every iteration (plain DDP works and logs
    keep their keys). The iteration comes from detectron2's EventStorage; without one (unit tests,
    scripts) every loss is active.

    Inference returns ``{"sem_seg": (K+1, H, W)}`` logits at each input's ``height`` x ``width``
    and ``"cls_score"`` (K,) image-level probabilities, plus ``"cam"`` and ``"seeds"`` when
    ``extra_outputs`` is on.
    """

    @configurable
    def __init__(
        self,
        *,
        backbone: Backbone,
        cls_head: ClassificationHead,
        sem_seg_head: nn.Module,
        affinity_head: Optional[AffinityHead],
        par: PAR,
        schedule: LossSchedule,
        cls_in_feature: str,
        seg_in_features: Sequence[str],
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        ignore_value: int = 255,
        interaction: bool = True,
        c2s_enabled: bool = True,
        s2c_enabled: bool = True,
        bsp_enabled: bool = True,
        c2s_loss_mode: str = "mlsm",
        s2c_loss_mode: str = "ce",
        lambda_c2s: float = 0.7,
        lambda_s2c: float = 0.1,
        lambda_aff: float = 0.1,
        pseudo_scales: Sequence[float] = (1.0, 0.5, 1.5),
        pseudo_flip: bool = True,
        bg_thresh_high: float = 0.55,
        bg_thresh_low: float = 0.35,
        refine_scale: float = 0.5,
        sigma_c: float = 0.5,
        sigma_s: float = 0.75,
        aff_radius: int = 8,
        test_aug: bool = False,
        test_scales: Sequence[float] = (1.0, 0.5, 0.75),
        test_flip: bool = True,
        extra_outputs: bool = False,
        seed_use_gt_labels: bool = False,
        cam_bg_thresh: float = 0.55,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.cls_head = cls_head
        self.sem_seg_head = sem_seg_head
        self.affinity_head = affinity_head
        self.par = par
        self.schedule = schedule
        self.cls_in_feature = cls_in_feature
        self.seg_in_features = list(seg_in_features)
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)
        self.ignore_value = ignore_value
        self.interaction = interaction
        self.c2s_enabled = c2s_enabled
        self.s2c_enabled = s2c_enabled
        self.bsp_enabled = bsp_enabled
        self.c2s_loss_mode = c2s_loss_mode
        self.s2c_loss_mode = s2c_loss_mode
        self.lambda_c2s = lambda_c2s
        self.lambda_s2c = lambda_s2c
        self.lambda_aff = lambda_aff
        self.pseudo_scales = [float(s) for s in pseudo_scales]
        self.pseudo_flip = pseudo_flip
        self.bg_thresh_high = bg_thresh_high
        self.bg_thresh_low = bg_thresh_low
        self.refine_scale = refine_scale
        self.sigma_c = sigma_c
        self.sigma_s = sigma_s
        self.aff_radius = aff_radius
        self.test_aug = test_aug
        self.test_scales = [float(s) for s in test_scales]
        self.test_flip = test_flip
        self.extra_outputs = extra_outputs
        self.seed_use_gt_labels = seed_use_gt_labels
        self.cam_bg_thresh = cam_bg_thresh
        # Benchmarks set this: synchronise CUDA and log forward / pseudo-label / loss times.
        self.profile = False

    @classmethod
    def from_config(cls, cfg: CfgNode) -> dict:
        bmp = cfg.MODEL.BMP
        num_classes = bmp.NUM_CLASSES
        if cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES != num_classes + 1:
            raise ValueError(
                f"MODEL.SEM_SEG_HEAD.NUM_CLASSES={cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES} must be "
                f"MODEL.BMP.NUM_CLASSES + 1 = {num_classes + 1} (background is channel 0)"
            )
        backbone = build_backbone(cfg)
        shapes = backbone.output_shape()
        if bmp.CLS_IN_FEATURE not in shapes:
            raise ValueError(
                f"MODEL.BMP.CLS_IN_FEATURE={bmp.CLS_IN_FEATURE!r} is not a backbone output "
                f"(available: {list(shapes)}); fix it or the backbone's OUT_FEATURES"
            )
        affinity_head = None
        if bmp.AFFINITY.ENABLED:
            num_maps = getattr(backbone, "num_attention_maps", 0)
            if num_maps == 0 or not hasattr(backbone, "forward_with_attention"):
                raise ValueError(
                    f"MODEL.BMP.AFFINITY.ENABLED is True but backbone "
                    f"{cfg.MODEL.BACKBONE.NAME} provides no attention maps; set "
                    "MODEL.BMP.AFFINITY.ENABLED to False for attention-free backbones like ResNet "
                    "(or MODEL.MIT.ATTN_BLOCKS > 0 for MiT)"
                )
            affinity_head = AffinityHead(num_maps)
        for key, value, allowed in (
            ("MODEL.BMP.C2S.LOSS", bmp.C2S.LOSS, ("mlsm", "ce")),
            ("MODEL.BMP.S2C.LOSS", bmp.S2C.LOSS, ("ce", "bce")),
        ):
            if value not in allowed:
                raise ValueError(f"{key}={value!r} must be one of {allowed}")
        if not bmp.PSEUDO.SCALES:
            raise ValueError("MODEL.BMP.PSEUDO.SCALES must list at least one scale (e.g. [1.0])")
        if cfg.TEST.AUG.ENABLED and not cfg.TEST.AUG.SCALES:
            raise ValueError("TEST.AUG.SCALES must list at least one scale when TEST.AUG.ENABLED")
        return {
            "backbone": backbone,
            "cls_head": ClassificationHead(
                shapes[bmp.CLS_IN_FEATURE].channels, num_classes, bmp.CLASSIFIER.POOLING
            ),
            "sem_seg_head": build_sem_seg_head(cfg, shapes),
            "affinity_head": affinity_head,
            "par": PAR(
                dilations=tuple(bmp.PAR.DILATIONS),
                num_iter=bmp.PAR.NUM_ITER,
                color_temperature=bmp.PAR.COLOR_TEMPERATURE,
                pos_weight=bmp.PAR.POS_WEIGHT,
                normalize=bmp.PAR.NORMALIZE,
            ),
            "schedule": LossSchedule(
                c2s_start=bmp.C2S.START_ITER,
                s2c_start=bmp.S2C.START_ITER,
                aff_start=bmp.AFF_START_ITER,
                bsp_start=bmp.BSP.START_ITER,
            ),
            "cls_in_feature": bmp.CLS_IN_FEATURE,
            "seg_in_features": cfg.MODEL.SEM_SEG_HEAD.IN_FEATURES,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "ignore_value": bmp.IGNORE_VALUE,
            "interaction": bmp.INTERACTION.ENABLED,
            "c2s_enabled": bmp.C2S.ENABLED,
            "s2c_enabled": bmp.S2C.ENABLED,
            "bsp_enabled": bmp.BSP.ENABLED,
            "c2s_loss_mode": bmp.C2S.LOSS,
            "s2c_loss_mode": bmp.S2C.LOSS,
            "lambda_c2s": bmp.LAMBDA_C2S,
            "lambda_s2c": bmp.LAMBDA_S2C,
            "lambda_aff": bmp.LAMBDA_AFF,
            "pseudo_scales": bmp.PSEUDO.SCALES,
            "pseudo_flip": bmp.PSEUDO.FLIP,
            "bg_thresh_high": bmp.PSEUDO.BG_THRESH_HIGH,
            "bg_thresh_low": bmp.PSEUDO.BG_THRESH_LOW,
            "refine_scale": bmp.PSEUDO.REFINE_SCALE,
            "sigma_c": bmp.BSP.SIGMA_C,
            "sigma_s": bmp.S2C.SIGMA_S,
            "aff_radius": bmp.AFFINITY.RADIUS,
            "test_aug": cfg.TEST.AUG.ENABLED,
            "test_scales": cfg.TEST.AUG.SCALES,
            "test_flip": cfg.TEST.AUG.FLIP,
            "extra_outputs": cfg.TEST.BMP.EXTRA_OUTPUTS,
            "seed_use_gt_labels": cfg.TEST.BMP.SEED_USE_GT_LABELS,
            "cam_bg_thresh": cfg.TEST.BMP.CAM_BG_THRESH,
        }

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    # ------------------------------------------------------------------ shared building blocks

    def _normalize(self, images: Tensor) -> Tensor:
        return (images - self.pixel_mean) / self.pixel_std

    def _forward_branches(
        self, x: Tensor, with_attention: bool = False, with_seg: bool = True
    ) -> _BranchOutputs:
        """One pass of the encoder and the heads on normalised images ``x``."""
        if with_attention:
            feats, attn = self.backbone.forward_with_attention(x)
        else:
            feats, attn = self.backbone(x), None
        f_cls = feats[self.cls_in_feature]
        cls_logits = self.cls_head(f_cls)
        cam_logits = self.cls_head.cam_logits(f_cls)
        seg_logits = self._decode(feats, cam_logits, tuple(x.shape[-2:])) if with_seg else None
        return _BranchOutputs(cls_logits, cam_logits, seg_logits, attn)

    def _decode(
        self, feats: Dict[str, Tensor], cam_logits: Tensor, input_size: Tuple[int, int]
    ) -> Tensor:
        """Segmentation logits; with the interaction, features are re-weighted by CAM confidence.

        The confidence is taken from the CAM logits upsampled to ``input_size`` and then resized
        to every feature level (the authors' order). ``cam_confidence`` is detached, so the
        decoder's loss never trains the classifier through these weights.
        """
        inputs = {name: feats[name] for name in self.seg_in_features}
        if self.interaction:
            conf = cam_confidence(cam_logits, input_size)
            resized: Dict[Tuple[int, ...], Tensor] = {}
            for name, f in inputs.items():
                size = tuple(f.shape[-2:])
                if size not in resized:
                    resized[size] = _resize(conf, size).to(f.dtype)
                inputs[name] = f * resized[size]
        return self.sem_seg_head(inputs)

    def _multiscale_logits(
        self,
        x: Tensor,
        main: _BranchOutputs,
        scales: Sequence[float],
        flip: bool,
        with_seg: bool,
        resize_by_factor: bool = False,
    ) -> Tuple[List[Tensor], List[Tensor], List[Tuple[int, int]]]:
        """Per-scale CAM and segmentation logits: (2B, ...) originals then flips (B without flip).

        Also returns each pass's input size, to which the fusion first upsamples that pass's
        logits. Each scale is ONE forward of the image batch and its flip, except scale 1.0 whose
        unflipped half is ``main`` (the pass already made), so only its flip is computed. The
        scaled inputs are resized to ``int(s * h)`` by size (the authors' training code), or by
        ``scale_factor=s`` with ``resize_by_factor`` (their test code; bilinear sampling then
        uses ``s`` itself, which differs slightly when ``s * h`` is not an integer).
        """
        h, w = x.shape[-2:]
        cams: List[Tensor] = []
        segs: List[Tensor] = []
        sizes: List[Tuple[int, int]] = []
        with torch.no_grad(), _frozen_bn_stats(self):
            for s in scales:
                if s == 1.0:
                    cam = main.cam_logits.detach()
                    seg = main.seg_logits.detach() if with_seg else None
                    if flip:
                        out = self._forward_branches(x.flip(-1), with_seg=with_seg)
                        cam = torch.cat([cam, out.cam_logits])
                        seg = torch.cat([seg, out.seg_logits]) if with_seg else None
                    sizes.append((h, w))
                else:
                    if resize_by_factor:
                        xs = F.interpolate(x, scale_factor=s, mode="bilinear", align_corners=False)
                    else:
                        size = (int(h * s), int(w * s))
                        xs = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
                    out = self._forward_branches(
                        torch.cat([xs, xs.flip(-1)]) if flip else xs, with_seg=with_seg
                    )
                    cam, seg = out.cam_logits, out.seg_logits
                    sizes.append(tuple(xs.shape[-2:]))
                cams.append(cam.float())
                if with_seg:
                    segs.append(seg.float())
        return cams, segs, sizes

    def _normalized_maps(
        self, x: Tensor, main: _BranchOutputs, with_seg: bool
    ) -> Tuple[Tensor, Optional[Tensor]]:
        """Min-max normalised multi-scale CAMs (B, K, H, W) and segmentation maps (B, K+1, H, W)."""
        size = tuple(x.shape[-2:])
        cams, segs, sizes = self._multiscale_logits(
            x, main, self.pseudo_scales, self.pseudo_flip, with_seg=with_seg
        )
        flip = self.pseudo_flip
        cams_n = minmax_normalize(fuse_multiscale_cams(cams, size, flip=flip, pass_sizes=sizes))
        segs_n = None
        if with_seg:
            segs_n = minmax_normalize(fuse_multiscale_seg(segs, size, flip=flip, pass_sizes=sizes))
        return cams_n, segs_n

    # ------------------------------------------------------------------------------ training

    def forward(self, batched_inputs: List[dict]):
        """Training: dict of weighted losses. Eval mode: list of per-image prediction dicts."""
        if not self.training:
            return self.inference(batched_inputs)
        images, valid_mask, cls_label = self._training_batch(batched_inputs)
        x = self._normalize(images)
        size = tuple(x.shape[-2:])
        iteration = self._iteration()
        active = {
            "c2s": self.c2s_enabled and self.schedule.c2s(iteration),
            "s2c": self.s2c_enabled and self.schedule.s2c(iteration),
            "aff": self.affinity_head is not None and self.schedule.aff(iteration),
            "bsp": self.bsp_enabled and self.schedule.bsp(iteration),
        }
        timings: Dict[str, float] = {}

        t0 = self._clock()
        main = self._forward_branches(x, with_attention=self.affinity_head is not None)
        seg_up = _resize(main.seg_logits, size)
        t1 = self._clock()
        timings["forward"] = t1 - t0

        labels: Dict[str, Tensor] = {}
        if active["c2s"] or active["s2c"] or active["aff"]:
            labels = self._pseudo_labels(x, images, valid_mask, cls_label, main, seg_up, active)
            t2 = self._clock()
            timings["pseudo_labels"] = t2 - t1
        else:
            t2 = t1

        losses = self._losses(main, seg_up, cls_label, labels, active, size)
        timings["losses"] = self._clock() - t2
        self._log(timings, labels.get("c2s"), valid_mask)
        return losses

    def _training_batch(self, batched_inputs: List[dict]) -> Tuple[Tensor, Tensor, Tensor]:
        """Stack images (padding to a common size if needed), valid masks and image labels."""
        images, masks, labels = [], [], []
        for d in batched_inputs:
            if "cls_label" not in d:
                raise KeyError(
                    f"training input {d.get('file_name', '<unknown>')} has no 'cls_label'; BMP "
                    "trains on image-level labels: use the 'wsss' dataset mapper"
                )
            img = d["image"]
            images.append(img)
            mask = d.get("valid_mask")
            if mask is None:
                mask = torch.ones(img.shape[-2:], dtype=torch.bool)
            masks.append(mask)
            labels.append(d["cls_label"])
        h = max(i.shape[-2] for i in images)
        w = max(i.shape[-1] for i in images)
        images_t = torch.zeros(len(images), 3, h, w, device=self.device)
        masks_t = torch.zeros(len(images), h, w, dtype=torch.bool, device=self.device)
        for i, (img, mask) in enumerate(zip(images, masks)):
            ih, iw = img.shape[-2:]
            images_t[i, :, :ih, :iw] = img.to(self.device, non_blocking=True)
            masks_t[i, :ih, :iw] = mask.to(self.device, non_blocking=True)
        cls_t = torch.stack([lb.to(self.device, non_blocking=True) for lb in labels]).float()
        return images_t, masks_t, cls_t

    @staticmethod
    def _iteration() -> int:
        """Current iteration from detectron2's EventStorage; ``NO_STORAGE_ITER`` without one."""
        try:
            return get_event_storage().iter
        except (AssertionError, IndexError):
            return NO_STORAGE_ITER

    def _pseudo_labels(
        self,
        x: Tensor,
        images: Tensor,
        valid_mask: Tensor,
        cls_label: Tensor,
        main: _BranchOutputs,
        seg_up: Tensor,
        active: Dict[str, bool],
    ) -> Dict[str, Tensor]:
        """Targets of the active losses; only the work they need is done, all without grad."""
        labels: Dict[str, Tensor] = {}
        need_bsp = active["c2s"] and active["bsp"]
        need_par = (active["c2s"] and not active["bsp"]) or active["aff"]
        with torch.no_grad():
            if need_par or need_bsp:
                cams_n, segs_n = self._normalized_maps(x, main, with_seg=need_bsp)
                image01 = images / 255.0
                if need_par:
                    par_labels = par_pseudo_labels(
                        cams_n,
                        cls_label,
                        image01,
                        valid_mask,
                        self.par,
                        bg_high=self.bg_thresh_high,
                        bg_low=self.bg_thresh_low,
                        refine_scale=self.refine_scale,
                        ignore_index=self.ignore_value,
                    )
                if need_bsp:
                    labels["c2s"] = bsp_pseudo_labels(
                        segs_n[:, :1],
                        cams_n,
                        cls_label,
                        image01,
                        valid_mask,
                        self.par,
                        sigma_c=self.sigma_c,
                        refine_scale=self.refine_scale,
                        ignore_index=self.ignore_value,
                    )
                elif active["c2s"]:
                    labels["c2s"] = par_labels
                if active["aff"]:
                    grid = tuple(main.cam_logits.shape[-2:])
                    n = main.attn_logits.shape[-1]
                    if grid[0] * grid[1] != n:
                        raise ValueError(
                            f"attention has {n} tokens but MODEL.BMP.CLS_IN_FEATURE="
                            f"{self.cls_in_feature!r} is {grid[0]}x{grid[1]}: the affinity head "
                            "needs the feature map of the last stage"
                        )
                    labels["aff"] = affinity_labels(
                        par_labels, grid, radius=self.aff_radius, ignore_index=self.ignore_value
                    )
            if active["s2c"]:
                labels["s2c"] = s2c_labels(
                    seg_up.detach().float(),
                    valid_mask,
                    sigma_s=self.sigma_s,
                    ignore_index=self.ignore_value,
                )
        return labels

    def _losses(
        self,
        main: _BranchOutputs,
        seg_up: Tensor,
        cls_label: Tensor,
        labels: Dict[str, Tensor],
        active: Dict[str, bool],
        size: Tuple[int, int],
    ) -> Dict[str, Tensor]:
        losses = {"loss_cls": classification_loss(main.cls_logits, cls_label)}
        if active["c2s"]:
            loss = c2s_loss(
                seg_up, labels["c2s"], mode=self.c2s_loss_mode, ignore_index=self.ignore_value
            )
            losses["loss_c2s"] = self.lambda_c2s * loss
        else:
            losses["loss_c2s"] = main.seg_logits.sum() * 0.0
        if active["s2c"]:
            cam_up = _resize(main.cam_logits, size)
            loss = s2c_loss(
                cam_up, labels["s2c"], mode=self.s2c_loss_mode, ignore_index=self.ignore_value
            )
            losses["loss_s2c"] = self.lambda_s2c * loss
        else:
            losses["loss_s2c"] = main.cam_logits.sum() * 0.0
        if self.affinity_head is None:
            losses["loss_aff"] = main.cls_logits.new_zeros(())
        else:
            affinity = self.affinity_head(main.attn_logits)
            if active["aff"]:
                loss = affinity_loss(affinity, labels["aff"], ignore_index=self.ignore_value)
                losses["loss_aff"] = self.lambda_aff * loss
            else:
                losses["loss_aff"] = affinity.sum() * 0.0
        return losses

    def _clock(self) -> float:
        if self.profile and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def _log(self, timings: Dict[str, float], c2s_labels: Optional[Tensor], valid: Tensor) -> None:
        try:
            storage = get_event_storage()
        except (AssertionError, IndexError):
            return
        if c2s_labels is not None:
            ignored = ((c2s_labels == self.ignore_value) & valid).sum()
            storage.put_scalar(
                "bmp/pseudo_ignore_ratio", (ignored / valid.sum().clamp(min=1)).item()
            )
        # Without synchronisation CUDA times would only measure kernel launches.
        if self.profile or self.device.type != "cuda":
            for name, seconds in timings.items():
                if name == "pseudo_labels" or self.profile:
                    storage.put_scalar(f"bmp/time_{name}", seconds)

    # ----------------------------------------------------------------------------- inference

    def inference(self, batched_inputs: List[dict]) -> List[dict]:
        """Per-image predictions at each input's original size.

        Images of different sizes are processed one by one: padding them to a common size
        would change every prediction, because attention is global.
        """
        sizes = {tuple(d["image"].shape[-2:]) for d in batched_inputs}
        groups = [batched_inputs] if len(sizes) == 1 else [[d] for d in batched_inputs]
        results: List[dict] = []
        with torch.no_grad():
            for group in groups:
                results.extend(self._inference_batch(group))
        return results

    def _inference_batch(self, batched_inputs: List[dict]) -> List[dict]:
        images = torch.stack([d["image"].to(self.device) for d in batched_inputs]).float()
        x = self._normalize(images)
        size = tuple(x.shape[-2:])
        with _frozen_bn_stats(self):
            main = self._forward_branches(x)
        if self.test_aug:
            _, segs, sizes = self._multiscale_logits(
                x, main, self.test_scales, self.test_flip, with_seg=True, resize_by_factor=True
            )
            # As the authors' test code: each pass's logits go to its input size, then to the
            # image size; flip halves are averaged and scales max-fused.
            if self.test_flip:
                segs = [merge_flip(s, "mean") for s in segs]
            seg = torch.stack([upsample_twice(s, p, size) for s, p in zip(segs, sizes)]).amax(dim=0)
        else:
            seg = _resize(main.seg_logits, size).float()

        extra = None
        if self.extra_outputs:
            extra = self._extra_outputs(x, images, main, batched_inputs)
        results = []
        for i, d in enumerate(batched_inputs):
            height, width = d.get("height", size[0]), d.get("width", size[1])
            r = {
                "sem_seg": sem_seg_postprocess(seg[i], size, height, width),
                # Image-level class probabilities, for ClassificationEvaluator (mAP / F1).
                "cls_score": torch.sigmoid(main.cls_logits[i].float()),
            }
            if extra is not None:
                cams_n, seeds = extra
                r["cam"] = sem_seg_postprocess(cams_n[i], size, height, width)
                r["seeds"] = {
                    name: F.interpolate(
                        s[i : i + 1, None].float(), size=(height, width), mode="nearest"
                    )[0, 0].long()
                    for name, s in seeds.items()
                }
            results.append(r)
        return results

    def _presence(self, cls_logits: Tensor, batched_inputs: List[dict]) -> Tensor:
        """(B, K) multi-hot classes assumed present when building seeds."""
        if self.seed_use_gt_labels:
            missing = [
                d.get("file_name", "<unknown>") for d in batched_inputs if "cls_label" not in d
            ]
            if missing:
                raise KeyError(
                    f"TEST.BMP.SEED_USE_GT_LABELS is True but {missing} carry no 'cls_label'; "
                    "evaluate seeds on a dataset with cls_labels or set the flag to False"
                )
            return torch.stack([d["cls_label"].to(self.device) for d in batched_inputs]).float()
        probs = torch.sigmoid(cls_logits.float())
        present = probs > 0.5
        present[torch.arange(len(probs), device=probs.device), probs.argmax(dim=1)] = True
        return present.float()

    def _extra_outputs(
        self, x: Tensor, images: Tensor, main: _BranchOutputs, batched_inputs: List[dict]
    ) -> Tuple[Tensor, Dict[str, Tensor]]:
        """Normalised multi-scale CAMs and the CAM / PAR / BSP seeds, built as in training."""
        cams_n, segs_n = self._normalized_maps(x, main, with_seg=True)
        presence = self._presence(main.cls_logits, batched_inputs)
        # An input may mark crop padding with "valid_mask", as training crops do; the seeds are
        # then exactly the training targets of that crop (padding ignored, BSP on the real box).
        valid = torch.stack(
            [
                (
                    d["valid_mask"].to(self.device, torch.bool)
                    if "valid_mask" in d
                    else torch.ones(images.shape[-2:], dtype=torch.bool, device=self.device)
                )
                for d in batched_inputs
            ]
        )
        image01 = images / 255.0
        seeds = {
            "cam": cam_seed_labels(
                cams_n,
                presence,
                valid,
                bg_thresh=self.cam_bg_thresh,
                ignore_index=self.ignore_value,
            ),
            "par": par_pseudo_labels(
                cams_n,
                presence,
                image01,
                valid,
                self.par,
                bg_high=self.bg_thresh_high,
                bg_low=self.bg_thresh_low,
                refine_scale=self.refine_scale,
                ignore_index=self.ignore_value,
            ),
            "bsp": bsp_pseudo_labels(
                segs_n[:, :1],
                cams_n,
                presence,
                image01,
                valid,
                self.par,
                sigma_c=self.sigma_c,
                refine_scale=self.refine_scale,
                ignore_index=self.ignore_value,
            ),
        }
        return cams_n, seeds
