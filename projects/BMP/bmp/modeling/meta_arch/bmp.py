"""BMP: Branches Mutual Promotion for end-to-end weakly supervised semantic segmentation.

One encoder feeds a classification branch (image logits and, from the same weights, the CAMs
P_c), a segmentation branch (SegFormer decoder, P_s) and an affinity head on the encoder's
attention. Each training iteration:

1. one pass of the encoder and the branches; with the interaction on, the decoder sees features
   re-weighted by the CAM confidence (:mod:`bmp.modeling.interaction`);
2. the pseudo-labeller builds, without gradient, the targets of the active losses from
   multi-scale + flip passes: c2s labels (PAR, then BSP), s2c labels (P_s's confident
   foreground) and affinity labels (:mod:`bmp.modeling.pseudo_labeller`);
3. the criterion weighs the losses by the warm-up schedule (:mod:`bmp.modeling.criterion`).

This module only wires those parts; test-time augmentation wraps it (:mod:`.tta`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from detectron2.config import CfgNode, configurable
from detectron2.modeling import META_ARCH_REGISTRY, Backbone, build_backbone, build_sem_seg_head
from detectron2.modeling.postprocessing import sem_seg_postprocess
from detectron2.structures import ImageList
from torch import Tensor, nn
from torch.profiler import record_function

from ...config import derive_keys
from ...utils import deferred_scalars
from ..bn_stats import frozen_bn_stats, tracks_bn_stats
from ..criterion import BMPCriterion
from ..heads.affinity_head import AffinityHead
from ..heads.classification_head import ClassificationHead
from ..interaction import cam_confidence, reweight_features
from ..precision import full_precision
from ..pseudo_labeller import PseudoLabeller
from ..pseudo_labels import valid_boxes
from ..schedule import NO_STORAGE_ITER, current_iteration
from ..structures import Batch, BranchOutputs
from ..training_view import TrainingView

__all__ = ["BMP", "group_by_size"]


def group_by_size(batched_inputs: list[dict]) -> list[list[dict]]:
    """The inputs as one group if their images share a size, else one group per image.

    Padding images of different sizes to one size would change every prediction (attention is
    global), so inference runs such inputs one by one.
    """
    sizes = {tuple(d["image"].shape[-2:]) for d in batched_inputs}
    return [batched_inputs] if len(sizes) == 1 else [[d] for d in batched_inputs]


@META_ARCH_REGISTRY.register()
class BMP(nn.Module):
    """The BMP meta-architecture (see the module docstring for the method).

    Training ``forward`` takes the WSSS mapper's dicts (``image`` uint8 RGB, ``cls_label``
    multi-hot (K,), optional ``valid_mask``) and returns the criterion's weighted losses. The
    iteration comes from detectron2's EventStorage; without one every loss is active.

    Eval-mode ``forward`` returns per image ``"sem_seg"`` (K+1, height, width) logits and
    ``"cls_score"`` (K,) probabilities; with ``extra_outputs`` also ``"cam"`` (the normalised
    multi-scale CAMs) and ``"seeds"`` (CAM, PAR and BSP labels built as in training; an input's
    ``valid_mask`` marks padding they ignore).
    """

    @configurable
    def __init__(
        self,
        *,
        backbone: Backbone,
        cls_head: ClassificationHead,
        sem_seg_head: nn.Module,
        affinity_head: AffinityHead | None,
        pseudo_labeller: PseudoLabeller,
        criterion: BMPCriterion,
        cls_in_feature: str,
        seg_in_features: Sequence[str],
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        interaction: bool = True,
        extra_outputs: bool = False,
        seed_use_gt_labels: bool = False,
        freeze_bn_stats: bool = False,
        vis_period: int = 0,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.cls_head = cls_head
        self.sem_seg_head = sem_seg_head
        self.affinity_head = affinity_head
        self.pseudo_labeller = pseudo_labeller
        self.criterion = criterion
        self.cls_in_feature = cls_in_feature
        self.seg_in_features = list(seg_in_features)
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)
        self.interaction = interaction
        self.extra_outputs = extra_outputs
        self.seed_use_gt_labels = seed_use_gt_labels
        self.freeze_bn_stats = freeze_bn_stats
        self.vis_period = vis_period
        self._view: TrainingView | None = None

    @classmethod
    def from_config(cls, cfg: CfgNode) -> dict:
        cfg = cfg.clone()
        cfg.defrost()
        derive_keys(cfg)
        bmp = cfg.MODEL.BMP
        backbone = build_backbone(cfg)
        shapes = backbone.output_shape()
        if bmp.CLS_IN_FEATURE not in shapes:
            raise ValueError(
                f"MODEL.BMP.CLS_IN_FEATURE={bmp.CLS_IN_FEATURE!r} is not a backbone output "
                f"(available: {list(shapes)}); fix it or the backbone's OUT_FEATURES"
            )
        return {
            "backbone": backbone,
            "cls_head": ClassificationHead(
                shapes[bmp.CLS_IN_FEATURE].channels, bmp.NUM_CLASSES, bmp.CLASSIFIER.POOLING
            ),
            "sem_seg_head": build_sem_seg_head(cfg, shapes),
            "affinity_head": _build_affinity_head(cfg, backbone),
            "pseudo_labeller": PseudoLabeller(cfg),
            "criterion": BMPCriterion(cfg),
            "cls_in_feature": bmp.CLS_IN_FEATURE,
            "seg_in_features": cfg.MODEL.SEM_SEG_HEAD.IN_FEATURES,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "interaction": bmp.INTERACTION.ENABLED,
            "extra_outputs": cfg.TEST.BMP.EXTRA_OUTPUTS,
            "seed_use_gt_labels": cfg.TEST.BMP.SEED_USE_GT_LABELS,
            "freeze_bn_stats": bmp.PSEUDO.FREEZE_BN_STATS,
            "vis_period": cfg.VIS_PERIOD,
        }

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    # ------------------------------------------------------------------------- public parts

    def preprocess(self, batched_inputs: list[dict], require_labels: bool = False) -> Batch:
        """Pad the inputs' images (black) and valid masks to one size, normalise, stack labels."""
        images = [d["image"].to(self.device).float() for d in batched_inputs]
        valid = [
            (
                d["valid_mask"].to(self.device, torch.bool)
                if "valid_mask" in d
                else torch.ones(d["image"].shape[-2:], dtype=torch.bool, device=self.device)
            )
            for d in batched_inputs
        ]
        missing = [d.get("file_name", "<unknown>") for d in batched_inputs if "cls_label" not in d]
        if require_labels and missing:
            raise KeyError(
                f"training inputs {missing} have no 'cls_label'; BMP trains on image-level labels: "
                "use the 'wsss' dataset mapper"
            )
        images_t = ImageList.from_tensors(images, pad_value=0.0).tensor
        cls_label, num_slots = None, None
        if not missing:
            cls_label = torch.stack([d["cls_label"].to(self.device) for d in batched_inputs])
            # From the inputs as the loader gives them (host memory): no wait for the device.
            num_slots = 1 + max(int((d["cls_label"] > 0).sum()) for d in batched_inputs)
        return Batch(
            images=images_t,
            x=(images_t - self.pixel_mean) / self.pixel_std,
            valid=ImageList.from_tensors(valid, pad_value=0).tensor.bool(),
            cls_label=None if cls_label is None else cls_label.float(),
            num_slots=num_slots,
            boxes=[_real_pixel_box(d) for d in batched_inputs],
        )

    def forward_branches(
        self, x: Tensor, with_attention: bool = False, with_seg: bool = True
    ) -> BranchOutputs:
        """One pass of the encoder and the branches on normalised images ``x``."""
        if with_attention and self.affinity_head is not None:
            feats, attn = self.backbone.forward_with_attention(x)
        else:
            feats, attn = self.backbone(x), None
        f_cls = feats[self.cls_in_feature]
        cam_logits = self.cls_head.cam_logits(f_cls)
        seg_logits = None
        if with_seg:
            seg_feats = {name: feats[name] for name in self.seg_in_features}
            if self.interaction:
                conf = cam_confidence(cam_logits, tuple(x.shape[-2:]))
                seg_feats = reweight_features(seg_feats, conf)
            seg_logits = self.sem_seg_head(seg_feats)
        return BranchOutputs(
            cls_logits=self.cls_head(f_cls),
            cam_logits=cam_logits,
            seg_logits=seg_logits,
            affinity=None if attn is None else self.affinity_head(attn),
            input_size=(int(x.shape[-2]), int(x.shape[-1])),
        )

    def extra_pass(self, x: Tensor, with_seg: bool) -> BranchOutputs:
        """A no-grad pass for the multi-scale maps.

        In train mode it updates BatchNorm's running statistics, as the authors' passes do, unless
        ``freeze_bn_stats`` (``MODEL.BMP.PSEUDO.FREEZE_BN_STATS``, a deviation) leaves them alone.
        """
        with torch.no_grad():
            if not self.freeze_bn_stats:
                return self.forward_branches(x, with_seg=with_seg)
            with frozen_bn_stats(self):
                return self.forward_branches(x, with_seg=with_seg)

    # ------------------------------------------------------------------------------ forward

    def forward(self, batched_inputs: list[dict]):
        """Training: dict of weighted losses. Eval mode: list of per-image prediction dicts."""
        if not self.training:
            return self.inference(batched_inputs)
        batch = self.preprocess(batched_inputs, require_labels=True)
        phase = self.criterion.phase(current_iteration())
        with record_function("bmp.forward"):
            main = self.forward_branches(batch.x, with_attention=True)
        # The authors run every multi-scale pass in full at every iteration; what outlasts the
        # passes no label needs is their BatchNorm updates, so they run where those happen.
        all_passes = not self.freeze_bn_stats and tracks_bn_stats(self)
        with record_function("bmp.pseudo_labels"):
            targets = self.pseudo_labeller.training_targets(
                self.extra_pass, batch, main, phase, all_passes
            )
        with record_function("bmp.losses"), full_precision(self.device):
            losses = self.criterion(main, targets, batch.cls_label, phase)
        self._log_ignore_ratio(targets.get("c2s"), batch.valid)
        self._keep_view(batch, main, targets, phase)
        return losses

    def take_training_view(self) -> TrainingView | None:
        """The first image of the latest ``VIS_PERIOD`` step, once (then None until the next)."""
        view, self._view = self._view, None
        return view

    def _keep_view(self, batch: Batch, main: BranchOutputs, targets: dict, phase) -> None:
        it = current_iteration()
        if self.vis_period <= 0 or it == NO_STORAGE_ITER or it % self.vis_period:
            return
        self._view = TrainingView(
            iteration=it,
            image=batch.images[0].detach(),
            cam_logits=main.cam_logits[0].detach(),
            cls_label=batch.cls_label[0],
            valid=batch.valid[0],
            seg_logits=main.seg_up()[0].detach(),
            c2s=targets["c2s"][0] if "c2s" in targets else None,
            c2s_kind="BSP" if phase.bsp else "PAR",
            s2c=targets["s2c"][0] if "s2c" in targets else None,
        )

    def _log_ignore_ratio(self, c2s_labels: Tensor | None, valid: Tensor) -> None:
        """Share of real pixels that the c2s labels leave unsupervised, over the steps between
        two metric writes; kept on the device until then (:mod:`bmp.utils.deferred_scalars`)."""
        if c2s_labels is None:
            return
        ignored = ((c2s_labels == self.criterion.ignore_value) & valid).sum()
        deferred_scalars.add_ratio("bmp/pseudo_ignore_ratio", ignored, valid.sum())

    # ---------------------------------------------------------------------------- inference

    def inference(self, batched_inputs: list[dict]) -> list[dict]:
        """Per-image predictions at each input's ``height`` x ``width``."""
        results: list[dict] = []
        with torch.no_grad():
            for group in group_by_size(batched_inputs):
                batch = self.preprocess(group)
                with frozen_bn_stats(self):
                    main = self.forward_branches(batch.x)
                results.extend(self.predict(group, batch, main))
        return results

    def predict(
        self,
        batched_inputs: list[dict],
        batch: Batch,
        main: BranchOutputs,
        seg_logits: Tensor | None = None,
    ) -> list[dict]:
        """Per-image outputs from the pass ``main``; ``seg_logits`` (B, K+1, H, W at the batch
        size) replace its segmentation, e.g. with a test-time-augmented one."""
        seg = (main.seg_up() if seg_logits is None else seg_logits).float()
        cams, seeds = None, None
        if self.extra_outputs:
            presence = self._presence(main.cls_logits, batched_inputs)
            cams, seeds = self.pseudo_labeller.seeds(self.extra_pass, batch, main, presence)
        results = []
        for i, d in enumerate(batched_inputs):
            height, width = d.get("height", batch.size[0]), d.get("width", batch.size[1])
            r = {
                "sem_seg": sem_seg_postprocess(seg[i], batch.size, height, width),
                "cls_score": torch.sigmoid(main.cls_logits[i].float()),
            }
            if cams is not None:
                r["cam"] = sem_seg_postprocess(cams[i], batch.size, height, width)
                r["seeds"] = {
                    name: nn.functional.interpolate(
                        s[i : i + 1, None].float(), size=(height, width), mode="nearest"
                    )[0, 0].long()
                    for name, s in seeds.items()
                }
            results.append(r)
        return results

    def _presence(self, cls_logits: Tensor, batched_inputs: list[dict]) -> Tensor:
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


def _real_pixel_box(d: dict) -> tuple[int, int, int, int] | None:
    """The box of an input's real pixels, from its valid mask as the loader gives it."""
    if "valid_mask" not in d:
        return (0, int(d["image"].shape[-2]), 0, int(d["image"].shape[-1]))
    return valid_boxes(d["valid_mask"][None].bool())[0]


def _build_affinity_head(cfg: CfgNode, backbone: Backbone) -> AffinityHead | None:
    if not cfg.MODEL.BMP.AFFINITY.ENABLED:
        return None
    num_maps = getattr(backbone, "num_attention_maps", 0)
    if num_maps == 0 or not hasattr(backbone, "forward_with_attention"):
        raise ValueError(
            f"MODEL.BMP.AFFINITY.ENABLED is True but backbone {cfg.MODEL.BACKBONE.NAME} provides "
            "no attention maps; set MODEL.BMP.AFFINITY.ENABLED to False for attention-free "
            "backbones like ResNet (or MODEL.MIT.ATTN_BLOCKS > 0 for MiT)"
        )
    return AffinityHead(num_maps)
