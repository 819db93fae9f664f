"""Extra passes in train mode that leave BatchNorm's running statistics untouched."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn

__all__ = ["frozen_bn_stats"]

_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


@contextlib.contextmanager
def frozen_bn_stats(module: nn.Module) -> Iterator[None]:
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
