"""Multi-process training: how BMP wraps its model in DDP and keeps the processes' copies equal.

Two things detectron2 leaves to the project:

* ``detectron2.engine.create_ddp_model`` passes ``device_ids=[local_rank]`` whenever the caller
  gives none (upstream main; v0.6 as well unless patched). torch refuses device ids for a CPU
  module, so multi-process CPU training (gloo) needs ``device_ids=None`` spelled out. This
  module is the one place that does so.
* DDP keeps parameters equal through the gradient all-reduce, but not buffers: with plain
  BatchNorm every process updates its running statistics from its own batches. detectron2 builds
  DDP with ``broadcast_buffers=False`` (right for SyncBN, whose statistics already agree);
  torch's own ``broadcast_buffers=True`` copies rank 0's buffers only at the start of each
  training forward, so evaluation (run without gradients) and the last step would still see
  different statistics. :class:`BroadcastBuffers` copies rank 0's buffers to every process
  after each step instead, before checkpoints and evaluations read them.
"""

import contextlib
from typing import Any, Iterator

import detectron2.engine.defaults as d2_defaults
import torch
import torch.distributed as dist
from detectron2.engine import create_ddp_model as d2_create_ddp_model
from detectron2.engine import hooks
from detectron2.utils import comm
from torch import nn

__all__ = [
    "create_ddp_model",
    "cpu_ddp_for_default_trainer",
    "unwrap_model",
    "broadcast_buffers",
    "BroadcastBuffers",
]


def create_ddp_model(model: nn.Module, **kwargs: Any) -> nn.Module:
    """detectron2's ``create_ddp_model``, with ``device_ids=None`` for a model on CPU."""
    if comm.get_world_size() > 1 and "device_ids" not in kwargs:
        first = next(model.parameters(), None)
        if first is None or first.device.type == "cpu":
            kwargs["device_ids"] = None
    return d2_create_ddp_model(model, **kwargs)


@contextlib.contextmanager
def cpu_ddp_for_default_trainer() -> Iterator[None]:
    """While ``DefaultTrainer.__init__`` runs, let it wrap the model with :func:`create_ddp_model`.

    The one shim of this project over detectron2 internals: ``DefaultTrainer.__init__`` calls the
    ``create_ddp_model`` of its own module, which cannot build DDP for a CPU model (see the module
    docstring). Swapping that name for the duration of the constructor keeps BMP's trainer a plain
    subclass that only overrides ``build_*``, instead of a copy of detectron2's constructor.
    """
    saved = d2_defaults.create_ddp_model
    d2_defaults.create_ddp_model = create_ddp_model
    try:
        yield
    finally:
        d2_defaults.create_ddp_model = saved


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside a DDP wrapper, or ``model`` itself."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


@torch.no_grad()
def broadcast_buffers(model: nn.Module, src: int = 0) -> None:
    """Overwrite every process's buffers with those of rank ``src`` (no-op on one process)."""
    if comm.get_world_size() == 1:
        return
    for buf in unwrap_model(model).buffers():
        dist.broadcast(buf, src=src)


class BroadcastBuffers(hooks.HookBase):
    """After every step, give all processes rank 0's buffers (BatchNorm running statistics)."""

    def after_step(self) -> None:
        broadcast_buffers(self.trainer.model)
