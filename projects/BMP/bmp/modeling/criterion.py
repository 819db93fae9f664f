"""BMP's criterion: which losses are on at an iteration, and their weighted sum's terms.

It owns the warm-up schedule, the switches, the loss weights (lambda) and the loss forms, so the
meta-architecture only asks it for the phase and hands it the branch outputs and the targets.
"""

from __future__ import annotations

import torch
from detectron2.config import CfgNode, configurable
from detectron2.utils import comm
from torch import Tensor, nn

from ..utils import deferred_scalars
from .losses import affinity_loss, c2s_loss, classification_loss, s2c_loss
from .schedule import LossSchedule, Phase
from .structures import BranchOutputs

__all__ = ["BMPCriterion", "agreement_counts", "balanced_agreement", "label_agreement"]


class BMPCriterion(nn.Module):
    """cls + lambda_c2s * c2s + lambda_s2c * s2c + lambda_aff * aff, with warm-ups.

    ``forward`` returns the four weighted terms ``loss_cls``, ``loss_c2s``, ``loss_s2c`` and
    ``loss_aff``. ``s2c_gate`` > 0 is our extension, not the paper's: s2c then also waits for the
    segmentation branch to agree with its c2s labels on that share of each labelled class's
    pixels, on average over the classes and smoothed over batches (see
    ``MODEL.BMP.S2C.GATE_AGREEMENT`` and ``GATE_MOMENTUM``). Inactive terms
    are graph-connected zeros so every parameter is used every iteration (plain DDP works) and
    the logs keep their keys.
    """

    @configurable
    def __init__(
        self,
        *,
        schedule: LossSchedule,
        c2s_enabled: bool = True,
        s2c_enabled: bool = True,
        aff_enabled: bool = True,
        bsp_enabled: bool = True,
        lambda_c2s: float = 0.7,
        lambda_s2c: float = 0.1,
        lambda_aff: float = 0.1,
        c2s_loss_mode: str = "mlsm",
        s2c_loss_mode: str = "ce",
        ignore_value: int = 255,
        s2c_gate: float = 0.0,
        s2c_gate_momentum: float = 0.95,
    ) -> None:
        super().__init__()
        self.schedule = schedule
        self.enabled = {"c2s": c2s_enabled, "s2c": s2c_enabled, "aff": aff_enabled}
        self.bsp_enabled = bsp_enabled
        self.weights = {"c2s": lambda_c2s, "s2c": lambda_s2c, "aff": lambda_aff}
        self.c2s_loss_mode = c2s_loss_mode
        self.s2c_loss_mode = s2c_loss_mode
        self.ignore_value = ignore_value
        self.s2c_gate = float(s2c_gate)
        self.s2c_gate_momentum = float(s2c_gate_momentum)
        # Buffers, so checkpoints and resumes keep them: the smoothed agreement (from 0) and the
        # gate, latched once open.
        self.register_buffer("s2c_agreement", torch.tensor(0.0))
        self.register_buffer("s2c_open", torch.tensor(False))

    @classmethod
    def from_config(cls, cfg: CfgNode) -> dict:
        bmp = cfg.MODEL.BMP
        for key, value in (
            ("MODEL.BMP.C2S.LOSS", bmp.C2S.LOSS),
            ("MODEL.BMP.S2C.LOSS", bmp.S2C.LOSS),
        ):
            if value not in ("mlsm", "ce"):
                raise ValueError(
                    f"{key}={value!r} must be 'mlsm' (per-pixel multi-label soft margin, the "
                    "authors' --loss_type BCE) or 'ce' (cross-entropy)"
                )
        gate, momentum = bmp.S2C.GATE_AGREEMENT, bmp.S2C.GATE_MOMENTUM
        if not 0.0 <= momentum < 1.0:
            raise ValueError(
                f"MODEL.BMP.S2C.GATE_MOMENTUM={momentum} must be in [0, 1): the weight of the "
                "past in the gate's smoothed agreement (0 = the current batch alone)"
            )
        if not 0.0 <= gate <= 1.0 or (gate > 0 and not bmp.C2S.ENABLED):
            raise ValueError(
                f"MODEL.BMP.S2C.GATE_AGREEMENT={gate} must be in [0, 1] (0 = off), and it needs "
                "MODEL.BMP.C2S.ENABLED: the gate compares the segmentation with its c2s labels"
            )
        return {
            "schedule": LossSchedule(
                c2s_start=bmp.C2S.START_ITER,
                s2c_start=bmp.S2C.START_ITER,
                aff_start=bmp.AFFINITY.START_ITER,
                bsp_start=bmp.BSP.START_ITER,
            ),
            "c2s_enabled": bmp.C2S.ENABLED,
            "s2c_enabled": bmp.S2C.ENABLED,
            "aff_enabled": bmp.AFFINITY.ENABLED,
            "bsp_enabled": bmp.BSP.ENABLED,
            "lambda_c2s": bmp.LAMBDA_C2S,
            "lambda_s2c": bmp.LAMBDA_S2C,
            "lambda_aff": bmp.LAMBDA_AFF,
            "c2s_loss_mode": bmp.C2S.LOSS,
            "s2c_loss_mode": bmp.S2C.LOSS,
            "ignore_value": cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
            "s2c_gate": gate,
            "s2c_gate_momentum": momentum,
        }

    def phase(self, iteration: int) -> Phase:
        s = self.schedule
        return Phase(
            c2s=self.enabled["c2s"] and s.c2s(iteration),
            s2c=self.enabled["s2c"] and s.s2c(iteration),
            aff=self.enabled["aff"] and s.aff(iteration),
            bsp=self.bsp_enabled and s.bsp(iteration),
        )

    def forward(
        self, main: BranchOutputs, targets: dict[str, Tensor], cls_label: Tensor, phase: Phase
    ) -> dict[str, Tensor]:
        """Weighted loss terms; ``targets`` holds the labels of the active terms."""
        ignore = self.ignore_value
        losses = {"loss_cls": classification_loss(main.cls_logits, cls_label)}
        if phase.c2s:
            loss = c2s_loss(main.seg_up(), targets["c2s"], self.c2s_loss_mode, ignore)
            losses["loss_c2s"] = self.weights["c2s"] * loss
        else:
            losses["loss_c2s"] = main.seg_logits.sum() * 0.0
        if phase.s2c:
            loss = s2c_loss(main.cam_up(), targets["s2c"], self.s2c_loss_mode, ignore)
            gate = self._s2c_gate(main, targets.get("c2s"))
            losses["loss_s2c"] = self.weights["s2c"] * (loss if gate is None else loss * gate)
        else:
            losses["loss_s2c"] = main.cam_logits.sum() * 0.0
        if main.affinity is None:
            losses["loss_aff"] = main.cls_logits.new_zeros(())
        elif phase.aff:
            loss = affinity_loss(main.affinity, targets["aff"], ignore)
            losses["loss_aff"] = self.weights["aff"] * loss
        else:
            losses["loss_aff"] = main.affinity.sum() * 0.0
        return losses

    def _s2c_gate(self, main: BranchOutputs, c2s_labels: Tensor | None) -> Tensor | None:
        """With ``s2c_gate`` > 0, s2c waits until the segmentation branch's class-balanced
        agreement with its own c2s labels, averaged over batches, reaches ``s2c_gate``; then it
        stays on. Returns None without a gate, else 1.0 (open) or 0.0 as a device tensor.

        Balanced, because background fills most of a label map: a branch that predicts only
        background already agrees with most labelled pixels, and must not open the gate.
        Averaged (an exponential moving average from 0), because one batch is noisy: an
        untrained branch that happens to paint a batch's one object class everywhere agrees
        with half of its classes. Every step of the decision stays on the device (no host sync):
        the loss is multiplied by the gate, and the logged values are read when written.
        """
        if self.s2c_gate <= 0:
            return None
        if c2s_labels is None:
            return self.s2c_open.float()
        counts = agreement_counts(main.seg_up().detach(), c2s_labels, self.ignore_value, False)
        if comm.get_world_size() > 1:  # one decision for all processes: the global agreement
            torch.distributed.all_reduce(counts)
        present = counts[:, 1] > 0
        any_present = present.any()
        shares = counts[:, 0].double() / counts[:, 1].clamp(min=1).double()
        agreement = torch.where(present, shares, 0.0).sum() / present.sum().clamp(min=1)
        m = self.s2c_gate_momentum
        smoothed = self.s2c_agreement * m + ((1.0 - m) * agreement).float()
        # The average stops once the gate is open (it is latched; nothing reads it after).
        update = any_present & ~self.s2c_open
        self.s2c_agreement.copy_(torch.where(update, smoothed, self.s2c_agreement))
        self.s2c_open.logical_or_(self.s2c_agreement.double() >= self.s2c_gate)
        deferred_scalars.put_latest(
            "bmp/s2c_gate_agreement", torch.where(any_present, agreement, torch.nan)
        )
        deferred_scalars.put_latest("bmp/s2c_gate_agreement_smoothed", self.s2c_agreement)
        # The plain pixel share, logged beside it for comparison.
        deferred_scalars.add_ratio(
            "bmp/s2c_gate_pixel_agreement", counts[:, 0].sum(), counts[:, 1].sum()
        )
        return self.s2c_open.float()


def agreement_counts(
    logits: Tensor, labels: Tensor, ignore_value: int, check: bool = True
) -> Tensor:
    """Per class c, ``[pixels labelled c where argmax(logits) is c, pixels labelled c]``.

    An int64 tensor of shape (C, 2) for the C channels of ``logits``: exact at any batch size
    and precision, and sums over processes add up. Counted with ``scatter_add`` into a bucket per
    class plus one for ignored pixels, so nothing waits for the device; ``check`` first refuses a
    label outside the classes (that check reads the labels on the host).
    """
    num_classes = logits.shape[1]
    labels = labels.long()
    keep = labels != ignore_value
    if check:
        bad = labels[keep & ((labels < 0) | (labels >= num_classes))]
        if bad.numel():
            raise ValueError(
                f"label {int(bad[0])} is outside the {num_classes} classes of the logits "
                f"(and is not the ignore value {ignore_value})"
            )
    truth = labels.masked_fill(~keep, num_classes).flatten()
    hit = ((logits.argmax(dim=1) == labels) & keep).flatten().long()
    zeros = torch.zeros(num_classes + 1, dtype=torch.long, device=labels.device)
    labelled = zeros.scatter_add(0, truth, torch.ones_like(truth))
    matched = zeros.scatter_add(0, truth, hit)
    return torch.stack([matched[:num_classes], labelled[:num_classes]], dim=1)


def balanced_agreement(counts: Tensor) -> float | None:
    """Mean over the labelled classes of each one's share of pixels matched; None if none."""
    present = counts[:, 1] > 0
    if not bool(present.any()):
        return None
    return float((counts[present, 0].double() / counts[present, 1].double()).mean())


def label_agreement(logits: Tensor, labels: Tensor, ignore_value: int) -> float | None:
    """Class-balanced share of labelled pixels where ``argmax(logits)`` equals ``labels``
    (see ``balanced_agreement``); None if no pixel is labelled."""
    return balanced_agreement(agreement_counts(logits, labels, ignore_value))
