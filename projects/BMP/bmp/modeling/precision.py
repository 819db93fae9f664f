"""Where BMP computes in float32 whatever the autocast state, and why.

Mixed precision (``SOLVER.AMP``) runs the network passes in float16 or bfloat16. Everything that
turns their outputs into labels, counts or losses runs in float32:

* fusion and min-max normalisation of the multi-scale maps: the background thresholds (0.35,
  0.55) and BSP's sigma_c are compared with these values, and bfloat16 keeps 8 bits of mantissa
  (a step of 0.002-0.004 near 0.5), enough to move labels at a threshold;
* PAR and BSP: a per-pixel standard deviation of nearby colours and ten rounds of weighted sums;
* s2c labels: sigma_s is compared with the segmentation logits;
* every loss and its reduction: float16 cannot hold a count above 65504 (a crop-512 batch has
  over 200,000 affinity pairs), and sums over a quarter-million pixels lose digits in either
  half type.

The passes' outputs are cast to float32 where these steps read them; :func:`full_precision`
turns autocast off around the steps themselves, so no op inside is lowered again.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

__all__ = ["full_precision"]


@contextlib.contextmanager
def full_precision(device: torch.device) -> Iterator[None]:
    """Autocast off for ``device``'s type (a no-op when it was off, or where autocast does not
    exist, as on the ``meta`` device)."""
    device_type = torch.device(device).type
    available = getattr(torch.amp, "is_autocast_available", lambda t: t in ("cpu", "cuda"))
    if not available(device_type):
        yield
        return
    with torch.autocast(device_type=device_type, enabled=False):
        yield
