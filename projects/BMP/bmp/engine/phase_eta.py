"""Remaining-time estimate for a training run whose iterations get slower in phases.

BMP's iterations cost little during the classification warm-up and several times more once the
pseudo-label losses start (``MODEL.BMP.*.START_ITER``). A running median over the whole run, as
detectron2's printer uses, then under-estimates for a long time after each phase starts. Here each
phase is timed on its own recent iterations, and a phase not reached yet is costed at the latest
timed one, which makes the estimate a lower bound and is reported as such.
"""

from dataclasses import dataclass, field
from statistics import median
from typing import Dict, Iterable, List, Mapping, Sequence

__all__ = [
    "PhaseEstimate",
    "phase_boundaries",
    "phase_of",
    "estimate_remaining",
    "format_eta",
    "name_phases",
]


def phase_boundaries(starts: Iterable[int], max_iter: int) -> List[int]:
    """Sorted phase starts inside the run, always beginning with 0."""
    return sorted({0} | {int(s) for s in starts if 0 < int(s) < max_iter})


def phase_of(iteration: int, boundaries: Sequence[int]) -> int:
    """The start of the phase that ``iteration`` (0-based) belongs to."""
    return max(b for b in boundaries if b <= iteration)


@dataclass
class PhaseEstimate:
    """Seconds left and how they were obtained."""

    seconds: float
    lower_bound: bool  # some remaining phase has no timing yet
    untimed: List[int] = field(default_factory=list)  # starts of those phases


def estimate_remaining(
    times: Mapping[int, Sequence[float]], done: int, max_iter: int, boundaries: Sequence[int]
) -> PhaseEstimate:
    """Seconds for iterations ``done .. max_iter - 1``.

    Args:
        times: per phase start, the durations of its most recent iterations (seconds).
        done: iterations finished so far.
        max_iter: iterations in the run.
        boundaries: from :func:`phase_boundaries`.

    A phase with timings is costed at their median; one without, at the latest timed phase
    before it (nothing before it timed: no estimate, 0 s and ``lower_bound``).
    """
    ends = list(boundaries[1:]) + [max_iter]
    seconds, untimed, rate = 0.0, [], None
    for start, end in zip(boundaries, ends):
        if times.get(start):
            rate = median(times[start])
        left = max(0, end - max(start, done))
        if left == 0:
            continue
        if not times.get(start):
            untimed.append(start)
        if rate is not None:
            seconds += left * rate
    return PhaseEstimate(seconds, bool(untimed), untimed)


def format_eta(estimate: PhaseEstimate) -> str:
    """``0:07:57``, or ``>= 0:02:12 (iters from 800, 1200 not timed yet)`` for a lower bound."""
    total = int(round(estimate.seconds))
    text = f"{total // 3600}:{total % 3600 // 60:02d}:{total % 60:02d}"
    if not estimate.lower_bound:
        return text
    starts = ", ".join(str(s) for s in estimate.untimed)
    return f">= {text} (iters from {starts} not timed yet)"


def name_phases(starts: Mapping[str, int]) -> Dict[int, str]:
    """``{"c2s": 800, "s2c": 800, "bsp": 1200}`` -> ``{800: "c2s+s2c", 1200: "bsp"}``."""
    names: Dict[int, List[str]] = {}
    for name, start in starts.items():
        names.setdefault(int(start), []).append(name)
    return {start: "+".join(parts) for start, parts in sorted(names.items())}
