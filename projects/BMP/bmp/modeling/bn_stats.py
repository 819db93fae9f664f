"""Which train-mode passes update BatchNorm's running statistics."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn

__all__ = ["frozen_bn_stats", "tracks_bn_stats"]

_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def tracks_bn_stats(module: nn.Module) -> bool:
    """Whether a train-mode pass of ``module`` updates any BatchNorm running statistics."""
    return any(
        isinstance(m, _BATCH_NORMS) and m.training and m.track_running_stats
        for m in module.modules()
    )


@contextlib.contextmanager
def frozen_bn_stats(module: nn.Module) -> Iterator[None]:
    """Run train-mode passes without touching BatchNorm running statistics.

    The authors' pseudo-label passes update the running statistics (BMP does too by default);
    ``MODEL.BMP.PSEUDO.FREEZE_BN_STATS`` (a deviation) runs them in here instead. Momentum 0
    keeps the batch-statistics behaviour of train mode and leaves the buffers as they were.
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
