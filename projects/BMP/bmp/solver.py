"""The authors' optimisation recipe with detectron2's solver machinery.

BMP trains four parameter groups with one AdamW: backbone weights at the base LR, backbone norm
layers frozen (the authors keep them in the optimizer with LR 0 and no decay), the classifier plus
the affinity projection at ``HEAD_LR_MULTIPLIER`` x LR, and the decoder at the same multiplier.
The LR follows a linear warm-up to the full LR and then a poly decay over the whole run, which
starts below 1 (the authors' ``PolyWarmupAdamW``; ``SOLVER.WARMUP_SHAPE``). The schedule is an
fvcore param scheduler driven by detectron2's :class:`LRMultiplier`, which scales each group's own
initial LR, so the per-group multipliers survive every step (and a group at LR 0 stays at 0).
"""

import logging
from typing import Any, Dict, List

import torch
from detectron2.config import CfgNode
from detectron2.solver import LRMultiplier, WarmupParamScheduler
from detectron2.solver import build_lr_scheduler as d2_build_lr_scheduler
from detectron2.solver.build import maybe_add_gradient_clipping
from fvcore.common.param_scheduler import ParamScheduler, PolynomialDecayParamScheduler
from torch import nn

__all__ = [
    "GROUP_NAMES",
    "get_bmp_param_groups",
    "build_bmp_optimizer",
    "build_warmup_poly_multiplier",
    "WarmupThenPolyScheduler",
    "WARMUP_SHAPES",
    "build_bmp_lr_scheduler",
]

logger = logging.getLogger(__name__)

# SOLVER.WARMUP_SHAPE: the authors' warm-up to 1.0 then poly, or detectron2's continuous one.
WARMUP_SHAPES = ("authors", "continuous")

# Order of the optimizer's param groups; the names are stored in each group under "name".
GROUP_NAMES = ("backbone", "backbone_norm", "cls_aff_heads", "decoder")

# Top-level children of the BMP meta-arch and the group their parameters belong to.
_HEAD_PREFIXES = ("cls_head.", "affinity_head.")
_DECODER_PREFIXES = ("sem_seg_head.",)
_BACKBONE_PREFIXES = ("backbone.",)

_NORM_TYPES = (
    nn.modules.batchnorm._BatchNorm,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.modules.instancenorm._InstanceNorm,
    nn.LocalResponseNorm,
)


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") else model


def get_bmp_param_groups(
    model: nn.Module,
    base_lr: float,
    weight_decay: float,
    head_lr_multiplier: float = 10.0,
    freeze_backbone_norm: bool = True,
    weight_decay_norm: float = 0.0,
) -> List[Dict[str, Any]]:
    """Split a BMP model's trainable parameters into the recipe's four groups.

    Backbone norm parameters are found by module type (LayerNorm in MiT, BatchNorm/GroupNorm in
    CNNs), not by name, so any backbone works. Parameters outside the known sub-modules are kept
    at the base LR and reported, so nothing is silently left out of the optimizer.
    """
    model = _unwrap(model)
    buckets: Dict[str, List[nn.Parameter]] = {name: [] for name in GROUP_NAMES}
    other: List[str] = []
    seen = set()
    for module_name, module in model.named_modules():
        prefix = module_name + "." if module_name else ""
        is_norm = isinstance(module, _NORM_TYPES)
        for param_name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            full_name = prefix + param_name
            if full_name.startswith(_BACKBONE_PREFIXES):
                buckets["backbone_norm" if is_norm else "backbone"].append(param)
            elif full_name.startswith(_HEAD_PREFIXES):
                buckets["cls_aff_heads"].append(param)
            elif full_name.startswith(_DECODER_PREFIXES):
                buckets["decoder"].append(param)
            else:
                buckets["backbone"].append(param)
                other.append(full_name)
    if other:
        logger.warning(
            "Parameters outside backbone/cls_head/affinity_head/sem_seg_head train at the base "
            f"LR: {', '.join(other)}"
        )

    head_lr = base_lr * head_lr_multiplier
    settings = {
        "backbone": (base_lr, weight_decay),
        "backbone_norm": (0.0, 0.0) if freeze_backbone_norm else (base_lr, weight_decay_norm),
        "cls_aff_heads": (head_lr, weight_decay),
        "decoder": (head_lr, weight_decay),
    }
    groups = []
    for name in GROUP_NAMES:
        if not buckets[name]:
            continue
        lr, wd = settings[name]
        groups.append({"name": name, "params": buckets[name], "lr": lr, "weight_decay": wd})
    return groups


def build_bmp_optimizer(cfg: CfgNode, model: nn.Module) -> torch.optim.Optimizer:
    """AdamW over :func:`get_bmp_param_groups` as configured by ``cfg.SOLVER``, with
    detectron2's ``SOLVER.CLIP_GRADIENTS`` (clipping inside ``step``, per parameter)."""
    name = cfg.SOLVER.OPTIMIZER
    if name != "AdamW":
        raise ValueError(f"SOLVER.OPTIMIZER={name!r} is not supported by BMP; use 'AdamW'.")
    groups = get_bmp_param_groups(
        model,
        base_lr=cfg.SOLVER.BASE_LR,
        weight_decay=cfg.SOLVER.WEIGHT_DECAY,
        head_lr_multiplier=cfg.SOLVER.HEAD_LR_MULTIPLIER,
        freeze_backbone_norm=cfg.SOLVER.FREEZE_BACKBONE_NORM,
        weight_decay_norm=cfg.SOLVER.WEIGHT_DECAY_NORM,
    )
    for g in groups:
        n = sum(p.numel() for p in g["params"])
        logger.info(
            f"param group {g['name']}: {n} params, lr {g['lr']:.3g}, wd {g['weight_decay']}"
        )
    return _with_gradient_clipping(cfg, torch.optim.AdamW)(
        groups,
        lr=cfg.SOLVER.BASE_LR,
        betas=tuple(cfg.SOLVER.BETAS),
        eps=cfg.SOLVER.EPS,
        weight_decay=cfg.SOLVER.WEIGHT_DECAY,
    )


class WarmupThenPolyScheduler(ParamScheduler):
    """The authors' multiplier at iteration ``it`` (0-based): during the warm-up
    ``1 - (1 - it / warmup_iters) * (1 - warmup_factor)`` (linear; ``warmup_factor`` with the
    constant method), which reaches 1.0; from ``warmup_iters`` on, ``(1 - it / max_iter) ** power``.

    fvcore hands it ``where = it / max_iter``; the iteration is recovered by rounding, and each
    value is computed with the authors' own expression, so the LR equals theirs to the last bit.
    """

    def __init__(
        self, max_iter: int, warmup_iters: int, warmup_factor: float, power: float, method: str
    ) -> None:
        if method not in ("linear", "constant"):
            raise ValueError(f"SOLVER.WARMUP_METHOD must be 'linear' or 'constant', got {method!r}")
        self.max_iter, self.warmup_iters = max_iter, warmup_iters
        self.warmup_factor, self.power, self.method = warmup_factor, power, method

    def __call__(self, where: float) -> float:
        it = round(where * self.max_iter)
        if it < self.warmup_iters:
            if self.method == "constant":
                return self.warmup_factor
            return 1 - (1 - it / self.warmup_iters) * (1 - self.warmup_factor)
        return max(0.0, 1 - it / self.max_iter) ** self.power


_CLIP_TYPES = ("value", "norm", "full_model")


def _with_gradient_clipping(cfg: CfgNode, optimizer: type) -> type:
    """``optimizer`` clipping gradients in ``step`` as ``SOLVER.CLIP_GRADIENTS`` says.

    "value" and "norm" (per parameter) are detectron2's; "full_model" clips the norm of all
    gradients together (as Mask2Former does), which detectron2 v0.6 lacks. Clipping inside
    ``step`` also works under AMP: the grad scaler unscales the gradients before it steps.
    """
    clip = cfg.SOLVER.CLIP_GRADIENTS
    if not clip.ENABLED:
        return optimizer
    if clip.CLIP_TYPE not in _CLIP_TYPES:
        raise ValueError(
            f"SOLVER.CLIP_GRADIENTS.CLIP_TYPE={clip.CLIP_TYPE!r} must be one of {_CLIP_TYPES}"
        )
    if clip.CLIP_TYPE != "full_model":
        return maybe_add_gradient_clipping(cfg, optimizer)
    max_norm, norm_type = float(clip.CLIP_VALUE), float(clip.NORM_TYPE)

    def step(self, closure=None):
        params = [p for g in self.param_groups for p in g["params"] if p.grad is not None]
        torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type)
        return super(full_model_cls, self).step(closure)

    full_model_cls = type(optimizer.__name__ + "WithFullModelGradientClip", (optimizer,), {})
    full_model_cls.step = step
    return full_model_cls


def build_warmup_poly_multiplier(
    max_iter: int,
    warmup_iters: int,
    warmup_factor: float,
    power: float = 1.0,
    warmup_method: str = "linear",
    shape: str = "authors",
) -> ParamScheduler:
    """LR multiplier: warm-up from ``warmup_factor`` then ``(1 - it / max_iter) ** power``.

    The poly part is evaluated on the whole run (not restarted after warm-up), as the authors do.
    ``shape="authors"``: the warm-up ends at 1.0 and the poly part then starts below it
    (:class:`WarmupThenPolyScheduler`); ``"continuous"``: detectron2's warm-up, which ends on the
    poly curve.
    """
    if max_iter <= 0:
        raise ValueError(f"SOLVER.MAX_ITER must be positive, got {max_iter}.")
    if warmup_iters < 0:
        raise ValueError(f"SOLVER.WARMUP_ITERS must be >= 0, got {warmup_iters}.")
    if shape not in WARMUP_SHAPES:
        raise ValueError(f"SOLVER.WARMUP_SHAPE must be one of {WARMUP_SHAPES}, got {shape!r}")
    if shape == "authors":
        return WarmupThenPolyScheduler(max_iter, warmup_iters, warmup_factor, power, warmup_method)
    poly = PolynomialDecayParamScheduler(1.0, power)
    if warmup_iters == 0:
        return poly
    return WarmupParamScheduler(
        poly, warmup_factor, min(warmup_iters / max_iter, 1.0), warmup_method
    )


def build_bmp_lr_scheduler(
    cfg: CfgNode, optimizer: torch.optim.Optimizer
) -> torch.optim.lr_scheduler.LRScheduler:
    """``WarmupPolyLR`` by name; any other name goes to detectron2's builder."""
    if cfg.SOLVER.LR_SCHEDULER_NAME != "WarmupPolyLR":
        return d2_build_lr_scheduler(cfg, optimizer)
    sched = build_warmup_poly_multiplier(
        cfg.SOLVER.MAX_ITER,
        cfg.SOLVER.WARMUP_ITERS,
        cfg.SOLVER.WARMUP_FACTOR,
        cfg.SOLVER.POLY_LR_POWER,
        cfg.SOLVER.WARMUP_METHOD,
        cfg.SOLVER.WARMUP_SHAPE,
    )
    return LRMultiplier(optimizer, multiplier=sched, max_iter=cfg.SOLVER.MAX_ITER)
