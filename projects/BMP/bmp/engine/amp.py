"""Mixed-precision training: ``SOLVER.AMP.ENABLED`` with ``SOLVER.AMP.PRECISION``.

detectron2 v0.6's ``AMPTrainer`` runs float16 on CUDA only (it asserts CUDA at every step) and
cannot resume a checkpoint written without AMP (``KeyError: 'grad_scaler'``). This trainer runs
the same step as detectron2's trainers (data, forward under autocast, backward, metrics,
optimizer step) with the device and precision the config names:

* ``float16``: CUDA only, with a gradient scaler (float16 gradients underflow without one);
* ``bfloat16``: CUDA or CPU, without a scaler (bfloat16 has float32's exponent range).

The config check (:func:`bmp.config.amp_dtype`) refuses float16 without CUDA in one line.

Its state holds the scaler's only when it has one, and it loads a checkpoint with or without one,
so a run resumes across AMP on and off in both directions. What runs in float32 inside the
autocast region is listed in :mod:`bmp.modeling.precision`.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import torch
from detectron2.engine import SimpleTrainer

__all__ = ["MixedPrecisionTrainer"]

logger = logging.getLogger(__name__)


class MixedPrecisionTrainer(SimpleTrainer):
    """detectron2's training step under autocast of ``dtype`` on ``device_type``."""

    def __init__(self, model, data_loader, optimizer, device_type: str, dtype: torch.dtype):
        super().__init__(model, data_loader, optimizer)
        self.device_type, self.dtype = device_type, dtype
        scaled = dtype == torch.float16
        self.grad_scaler = _grad_scaler(device_type) if scaled else None

    def run_step(self) -> None:
        assert self.model.training, "[MixedPrecisionTrainer] model was changed to eval mode!"
        start = time.perf_counter()
        data = next(self._data_loader_iter)
        data_time = time.perf_counter() - start
        with torch.autocast(device_type=self.device_type, dtype=self.dtype):
            loss_dict = self.model(data)
        if isinstance(loss_dict, torch.Tensor):
            loss_dict = {"total_loss": loss_dict}
        losses = sum(loss_dict.values())  # float32: the losses are (bmp.modeling.precision)
        self.optimizer.zero_grad()
        if self.grad_scaler is None:
            losses.backward()
        else:
            self.grad_scaler.scale(losses).backward()
        self._write_metrics(loss_dict, data_time)
        if self.grad_scaler is None:
            self.optimizer.step()
        else:
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()

    def state_dict(self) -> dict[str, Any]:
        ret = super().state_dict()
        if self.grad_scaler is not None:
            ret["grad_scaler"] = self.grad_scaler.state_dict()
        return ret

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        if self.grad_scaler is None:
            return
        if "grad_scaler" in state_dict:
            self.grad_scaler.load_state_dict(state_dict["grad_scaler"])
        else:
            logger.info("The checkpoint has no gradient-scaler state (written without float16 "
                        "AMP): the scaler starts afresh.")  # fmt: skip


def _grad_scaler(device_type: str):
    if hasattr(torch, "amp") and hasattr(torch.amp, "GradScaler"):
        return torch.amp.GradScaler(device_type)
    return torch.cuda.amp.GradScaler()  # torch < 2.3
