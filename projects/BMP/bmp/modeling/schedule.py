"""Warm-up schedule of BMP's losses and of the switch to BSP labels (issue items 6e and 7).

The iteration comes from the caller (detectron2's event storage), never from a private counter.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["is_active", "LossSchedule"]


def is_active(iteration: int, start_iter: int) -> bool:
    """A term starting at ``start_iter`` is on from that iteration (0-based) onwards."""
    return iteration >= start_iter


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
