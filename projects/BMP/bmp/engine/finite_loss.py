"""Training that stops on the first non-finite loss and says which loss it was.

detectron2's :class:`SimpleTrainer` only notices a NaN in the summed loss, on the main process,
with a generic message. BMP has four losses whose warm-ups start at different iterations, so the
name of the culprit matters; checking every rank's values on every rank also makes all processes
stop together instead of leaving the others waiting in the next all-reduce. The values travel
through the step's one agreement exchange (:mod:`.agreement`): one small all-reduce and one host
read per step.
"""

import math
from typing import Any, Mapping

import torch
from detectron2.utils import comm
from detectron2.utils.events import get_event_storage
from torch import nn

from .agreement import exchange

__all__ = ["check_losses_finite", "add_finite_loss_check"]


def check_losses_finite(loss_dict: Mapping[str, torch.Tensor], iteration: int) -> None:
    """Raise ``FloatingPointError`` naming the loss, rank and iteration if any loss is NaN/inf.

    Collective when distributed: every rank must call it at the same step.
    """
    shared = exchange(loss_dict)
    per_rank = [{k: shared[k][r] for k in loss_dict} for r in range(comm.get_world_size())]
    for rank, values in enumerate(per_rank):
        bad = [f"{k}={v}" for k, v in values.items() if not math.isfinite(v)]
        if bad:
            where = f" on rank {rank}" if len(per_rank) > 1 else ""
            raise FloatingPointError(
                f"Non-finite loss {', '.join(bad)} at iteration {iteration}{where}; training "
                "stopped before the optimizer step. Lower SOLVER.BASE_LR, or delay that loss "
                "(MODEL.BMP.*.START_ITER), and resume from the last checkpoint."
            )


def _check_training_losses(module: nn.Module, inputs: Any, outputs: Any) -> None:
    """Forward hook: in training mode the model returns its loss dict; check it."""
    if module.training and isinstance(outputs, Mapping):
        try:
            iteration = get_event_storage().iter
        except (AssertionError, IndexError):  # a bare forward outside a training loop
            iteration = -1
        check_losses_finite(outputs, iteration)


def add_finite_loss_check(model: nn.Module) -> nn.Module:
    """Check every training forward's losses right after the forward, before ``backward``.

    A forward hook (a public torch API) rather than a custom train loop or an override of the
    trainer's private metric writer, whose signature differs between detectron2 versions.
    """
    model.register_forward_hook(_check_training_losses)
    return model
