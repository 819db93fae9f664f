"""Scalars a training step computes on the device, read on the host only when they are written.

``EventStorage.put_scalar`` converts its value to a Python float at once, which waits for the
device (a host sync) at every step. The model's own diagnostics (the share of ignored pseudo-label
pixels, the s2c gate's agreement) do not need that: they are kept here as device tensors and read
together, in one transfer, when the trainer's metric writers are about to write
(:class:`bmp.engine.trainer.FlushDeferredScalars`).

Two kinds of entries:

* :func:`put_latest`: the value of the latest step;
* :func:`add_ratio`: a numerator and a denominator summed over the steps since the last flush,
  written as their ratio (the share over those steps, not of one step).

Values that are not finite at flush time (a ratio over 0 pixels, an agreement over no labelled
class) are left out of the storage rather than written as NaN.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["put_latest", "add_ratio", "pending", "flush", "clear"]

_latest: dict[str, Tensor] = {}
_ratios: dict[str, tuple[Tensor, Tensor]] = {}


def put_latest(name: str, value: Tensor) -> None:
    """Keep ``value`` (a 0-d tensor, any device) as ``name``'s value; no host sync."""
    _latest[name] = value.detach().float()


def add_ratio(name: str, numerator: Tensor, denominator: Tensor) -> None:
    """Add to ``name``'s running numerator and denominator; no host sync."""
    num, den = numerator.detach().double(), denominator.detach().double()
    if name in _ratios:
        old_num, old_den = _ratios[name]
        num, den = old_num + num, old_den + den
    _ratios[name] = (num, den)


def pending() -> list[str]:
    return sorted(set(_latest) | set(_ratios))


def clear() -> None:
    _latest.clear()
    _ratios.clear()


def flush(storage) -> dict[str, float]:
    """Read every pending value in one transfer, put the finite ones into ``storage``
    (detectron2's ``EventStorage``, or anything with ``put_scalar``) and clear them."""
    names = pending()
    if not names:
        return {}
    values = [
        _latest[n] if n in _latest else _ratios[n][0] / _ratios[n][1].clamp(min=1e-300)
        for n in names
    ]
    # Entries of a ratio whose denominator is 0 are NaN, so they are left out below.
    for i, n in enumerate(names):
        if n in _ratios:
            values[i] = torch.where(_ratios[n][1] > 0, values[i], torch.nan)
    read = dict(zip(names, torch.stack([v.double() for v in values]).tolist()))
    clear()
    written = {n: v for n, v in read.items() if v == v and abs(v) != float("inf")}
    for name, value in written.items():
        storage.put_scalar(name, value)
    return written
