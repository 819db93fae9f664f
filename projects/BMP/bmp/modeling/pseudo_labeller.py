"""BMP's pseudo-labeller: multi-scale maps, and every label built from them, in one place.

It owns the scales and flip of the no-grad passes, PAR and every threshold. Training targets
(c2s, s2c, affinity) and evaluation seeds (CAM, PAR, BSP) are built by the same
:meth:`PseudoLabeller.seed`, so a seed scored at evaluation is exactly a label the model trains on.
The model's forward is passed in as a callable; the labeller never sees the meta-architecture.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from detectron2.config import CfgNode, configurable
from torch import Tensor, nn
from torch.profiler import record_function

from .multiscale import multiscale_logits
from .par import PAR
from .precision import full_precision
from .pseudo_labels import (
    AFF_RADIUS,
    BG_SCORES,
    CAM_BG,
    IGNORE_INDEX,
    REFINE_SCALE,
    SIGMA_C,
    SIGMA_S,
    Refinement,
    affinity_labels,
    bsp_pseudo_labels,
    cam_seed_labels,
    par_pseudo_labels,
    s2c_labels,
)
from .schedule import Phase
from .structures import Batch, BranchOutputs

__all__ = ["PseudoLabeller", "LabelThresholds", "FusedMaps", "SEED_KINDS"]

SEED_KINDS = ("cam", "par", "bsp")

Forward = Callable[[Tensor, bool], BranchOutputs]


@dataclass
class FusedMaps:
    """Min-max normalised multi-scale CAMs ``(B, K, H, W)`` and segmentation maps
    ``(B, K + 1, H, W)``."""

    cams: Tensor
    segs: Tensor | None


@dataclass(frozen=True)
class LabelThresholds:
    """Where the labels are cut; the defaults are the authors' values.

    ``bg_high`` / ``bg_low``: constant background scores of the two PAR runs; ``refine_scale``:
    PAR's resolution as a fraction of the input; ``sigma_c``: BSP's confidence threshold on the
    refined maps; ``sigma_s``: s2c's threshold on the segmentation logits; ``aff_radius``: how far
    apart affinity pairs may be (attention grid cells); ``cam_bg``: background score of the raw
    CAM seed; ``ignore_value``: the label of unsupervised pixels.
    """

    bg_high: float = BG_SCORES[0]
    bg_low: float = BG_SCORES[1]
    refine_scale: float = REFINE_SCALE
    sigma_c: float = SIGMA_C
    sigma_s: float = SIGMA_S
    aff_radius: int = AFF_RADIUS
    cam_bg: float = CAM_BG
    ignore_value: int = IGNORE_INDEX


class PseudoLabeller(nn.Module):
    """Builds the maps, targets and seeds of BMP without gradient (see the module docstring)."""

    @configurable
    def __init__(
        self,
        *,
        par: PAR,
        scales: tuple[float, ...] = (1.0, 0.5, 1.5),
        flip: bool = True,
        thresholds: LabelThresholds = LabelThresholds(),
        reuse_main_pass: bool = False,
    ) -> None:
        super().__init__()
        if not scales:
            raise ValueError("MODEL.BMP.PSEUDO.SCALES must list at least one scale (e.g. [1.0])")
        self.par = par
        self.scales = tuple(float(s) for s in scales)
        self.flip = flip
        self.thresholds = thresholds
        self.reuse_main_pass = reuse_main_pass

    @classmethod
    def from_config(cls, cfg: CfgNode) -> dict:
        bmp = cfg.MODEL.BMP
        thresholds = LabelThresholds(
            bg_high=bmp.PSEUDO.BG_THRESH_HIGH,
            bg_low=bmp.PSEUDO.BG_THRESH_LOW,
            refine_scale=bmp.PSEUDO.REFINE_SCALE,
            sigma_c=bmp.BSP.SIGMA_C,
            sigma_s=bmp.S2C.SIGMA_S,
            aff_radius=bmp.AFFINITY.RADIUS,
            cam_bg=cfg.TEST.BMP.CAM_BG_THRESH,
            ignore_value=cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
        )
        par = PAR(
            bmp.PAR.DILATIONS, bmp.PAR.NUM_ITER, bmp.PAR.COLOR_TEMPERATURE, bmp.PAR.POS_WEIGHT,
            bmp.PAR.NORMALIZE,
        )  # fmt: skip
        scales, flip = tuple(bmp.PSEUDO.SCALES), bmp.PSEUDO.FLIP
        return {
            "par": par,
            "scales": scales,
            "flip": flip,
            "thresholds": thresholds,
            "reuse_main_pass": bmp.PSEUDO.REUSE_MAIN_PASS,
        }

    @property
    def _reuse_main(self) -> bool:
        """Reuse the main pass at scale 1.0: always in eval mode (BatchNorm then uses running
        statistics, so the maps are the same), in train mode only as the configured deviation."""
        return self.reuse_main_pass or not self.training

    def maps(
        self,
        forward: Forward,
        batch: Batch,
        main: BranchOutputs,
        with_seg: bool,
        reuse_main: bool = True,
    ) -> FusedMaps:
        """Fused multi-scale + flip maps of ``batch``; ``main`` is the pass already made on it.

        ``reuse_main`` lets scale 1.0 take ``main`` instead of a pass on ``[x, flip(x)]``: exact
        in eval mode, a deviation in train mode (:func:`multiscale_logits`)."""
        passes = multiscale_logits(
            forward, batch.x, main, self.scales, self.flip, with_seg, reuse_main=reuse_main
        )
        with full_precision(batch.x.device):  # the logits are float32 already (multiscale)
            segs = passes.fused_segs(batch.size, self.flip) if with_seg else None
            return FusedMaps(passes.fused_cams(batch.size, self.flip), segs)

    def seed(
        self,
        kind: str,
        maps: FusedMaps,
        cls_label: Tensor,
        batch: Batch,
        affinity_cache: dict | None = None,
    ) -> Tensor:
        """One kind of seed ``(B, H, W)``: ``"cam"`` (thresholded CAM), ``"par"`` (PAR-refined,
        two background thresholds) or ``"bsp"`` (background from the segmentation branch).

        Seeds of one batch that share ``affinity_cache`` (a dict) compute PAR's colour affinity
        of each image once."""
        t = self.thresholds
        # The batch's slot count holds for its own labels only (seeds may use predicted ones).
        slots = batch.num_slots if cls_label is batch.cls_label else None
        along = Refinement(
            batch.images / 255.0, batch.valid, self.par, t.refine_scale, t.ignore_value,
            affinity_cache, slots, batch.boxes,
        )  # fmt: skip
        with record_function(f"bmp.pseudo_labels.{kind}"), full_precision(batch.x.device):
            if kind == "cam":
                return cam_seed_labels(maps.cams, cls_label, batch.valid, t.cam_bg, t.ignore_value)
            if kind == "par":
                return par_pseudo_labels(maps.cams, cls_label, along, (t.bg_high, t.bg_low))
            if kind == "bsp":
                if maps.segs is None:
                    raise ValueError("PseudoLabeller.seed('bsp') needs maps built with_seg=True")
                return bsp_pseudo_labels(maps.segs[:, :1], maps.cams, cls_label, along, t.sigma_c)
        raise ValueError(f"PseudoLabeller.seed: kind must be one of {SEED_KINDS}, got {kind!r}")

    @torch.no_grad()
    def training_targets(
        self,
        forward: Forward,
        batch: Batch,
        main: BranchOutputs,
        phase: Phase,
        all_passes: bool = False,
    ) -> dict[str, Tensor]:
        """Targets of the losses active in ``phase``: ``"c2s"``, ``"s2c"``, ``"aff"``.

        With ``all_passes`` every multi-scale pass runs in full (decoder included) at every
        iteration, as the authors' loop runs them, even where no label needs it: in train mode
        the passes' BatchNorm updates are then theirs. Without, only the work the labels need is
        done: no multi-scale pass before the warm-ups, no segmentation maps before BSP, and s2c
        alone reads the main pass only.
        """
        targets: dict[str, Tensor] = {}
        if all_passes and not phase.needs_maps:  # for the BatchNorm updates alone
            multiscale_logits(
                forward, batch.x, main, self.scales, self.flip, True, reuse_main=self._reuse_main
            )
        if phase.needs_maps:
            with_seg = phase.needs_bsp or all_passes
            maps, cache, labels = (
                self.maps(forward, batch, main, with_seg, self._reuse_main),
                {},
                batch.cls_label,
            )
            par = self.seed("par", maps, labels, batch, cache) if phase.needs_par else None
            if phase.c2s:
                targets["c2s"] = self.seed("bsp", maps, labels, batch, cache) if phase.bsp else par
            if phase.aff:
                targets["aff"] = self._affinity_targets(par, main)
        if phase.s2c:
            with full_precision(batch.x.device):
                seg = main.seg_up().detach().float()
                t = self.thresholds
                targets["s2c"] = s2c_labels(seg, batch.valid, t.sigma_s, t.ignore_value)
        return targets

    def _affinity_targets(self, par_labels: Tensor, main: BranchOutputs) -> Tensor:
        grid = tuple(main.cam_logits.shape[-2:])
        n = main.affinity.shape[-1]
        if grid[0] * grid[1] != n:
            raise ValueError(
                f"attention has {n} tokens but the classifier's feature map is {grid[0]}x{grid[1]}:"
                " the affinity head needs MODEL.BMP.CLS_IN_FEATURE to be the last stage"
            )
        with record_function("bmp.pseudo_labels.aff"):
            t = self.thresholds
            return affinity_labels(par_labels, grid, t.aff_radius, t.ignore_value)

    @torch.no_grad()
    def seeds(
        self, forward: Forward, batch: Batch, main: BranchOutputs, presence: Tensor
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Normalised multi-scale CAMs and every kind of seed, for classes ``presence`` (B, K)."""
        maps, cache = self.maps(forward, batch, main, True, self._reuse_main), {}
        return maps.cams, {k: self.seed(k, maps, presence, batch, cache) for k in SEED_KINDS}
