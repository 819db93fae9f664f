"""Warm-up schedule of BMP's losses and of the switch from PAR to BSP labels.

The iteration comes from the caller (detectron2's event storage), never from a private counter,
so a resumed run is in the same phase as the run it continues.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from detectron2.utils.events import get_event_storage

__all__ = ["is_active", "LossSchedule", "Phase", "current_iteration", "NO_STORAGE_ITER"]

# Iteration assumed when no EventStorage is open (bare unit tests, scripts): past every warm-up,
# so the full training step runs.
NO_STORAGE_ITER = sys.maxsize


def is_active(iteration: int, start_iter: int) -> bool:
    """A term starting at ``start_iter`` is on from that iteration (0-based) onwards."""
    return iteration >= start_iter


def current_iteration() -> int:
    """Current iteration from detectron2's EventStorage; ``NO_STORAGE_ITER`` without one."""
    try:
        return get_event_storage().iter
    except (AssertionError, IndexError):
        return NO_STORAGE_ITER


@dataclass(frozen=True)
class Phase:
    """Which losses are on at one iteration, and whether c2s learns BSP or PAR labels."""

    c2s: bool
    s2c: bool
    aff: bool
    bsp: bool

    @property
    def needs_bsp(self) -> bool:
        return self.c2s and self.bsp

    @property
    def needs_par(self) -> bool:
        return (self.c2s and not self.bsp) or self.aff

    @property
    def needs_maps(self) -> bool:
        """Whether the multi-scale passes are needed at all."""
        return self.needs_par or self.needs_bsp


@dataclass(frozen=True)
class LossSchedule:
    """First iteration of the c2s, s2c and affinity losses and of BSP labels for c2s."""

    c2s_start: int
    s2c_start: int
    aff_start: int
    bsp_start: int

    def c2s(self, iteration: int) -> bool:
        return is_active(iteration, self.c2s_start)

    def s2c(self, iteration: int) -> bool:
        return is_active(iteration, self.s2c_start)

    def aff(self, iteration: int) -> bool:
        return is_active(iteration, self.aff_start)

    def bsp(self, iteration: int) -> bool:
        return is_active(iteration, self.bsp_start)
