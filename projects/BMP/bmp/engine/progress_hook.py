"""Training hook that logs progress with a phase-aware ETA (see :mod:`bmp.engine.phase_eta`).

Every ``period`` iterations it logs one line, e.g.::

    progress [#########-----------]  47% 939/2000 | phase 'c2s+s2c+aff' from 800: 0.451 s/it
    | eta 0:07:57

and puts ``bmp/eta_seconds`` into the EventStorage. Step time is measured from this hook's
``before_step`` to its ``after_step`` (data loading, forward, backward, optimizer), so evaluation
and checkpoint writes, which have their own progress output, do not distort it.
"""

import logging
import time
from collections import deque
from statistics import median
from typing import Deque, Dict, Mapping, Optional

from detectron2.config import CfgNode
from detectron2.engine import HookBase

from .phase_eta import estimate_remaining, format_eta, name_phases, phase_boundaries, phase_of

__all__ = ["PhaseETAHook", "text_bar", "training_phases"]


def training_phases(cfg: CfgNode) -> Dict[int, str]:
    """Start iteration -> name of each loss that switches on after the warm-up."""
    bmp = cfg.MODEL.BMP
    starts = {
        "c2s": bmp.C2S.START_ITER if bmp.C2S.ENABLED else None,
        "s2c": bmp.S2C.START_ITER if bmp.S2C.ENABLED else None,
        "aff": bmp.AFFINITY.START_ITER if bmp.AFFINITY.ENABLED else None,
        "bsp": bmp.BSP.START_ITER if bmp.BSP.ENABLED and bmp.C2S.ENABLED else None,
    }
    return name_phases({k: v for k, v in starts.items() if v is not None})


def text_bar(fraction: float, width: int = 20) -> str:
    """``[#####---------------]`` for a fraction in [0, 1] (clipped)."""
    filled = int(round(min(max(fraction, 0.0), 1.0) * width))
    return "[" + "#" * filled + "-" * (width - filled) + "]"


class PhaseETAHook(HookBase):
    """Log progress and an ETA that restarts its timing whenever a new phase begins.

    Args:
        max_iter: iterations in the run.
        phases: phase start iteration -> name (e.g. ``{2000: "c2s+s2c+aff", 4000: "bsp"}``);
            iteration 0 starts the first phase, named ``warm-up`` unless given.
        period: iterations between log lines (and after the last one).
        window: recent iterations per phase whose median sets its speed.
    """

    def __init__(
        self,
        max_iter: int,
        phases: Mapping[int, str],
        period: int = 20,
        window: int = 20,
        logger: Optional[logging.Logger] = None,
    ) -> None:
        if period < 1 or window < 1:
            raise ValueError(f"period and window must be >= 1, got {period}, {window}")
        self._max_iter = int(max_iter)
        self._boundaries = phase_boundaries(phases, self._max_iter)
        self._names: Dict[int, str] = {0: "warm-up"}
        self._names.update({int(k): v for k, v in phases.items()})
        self._period = period
        self._window = window
        self._times: Dict[int, Deque[float]] = {}
        self._start: Optional[float] = None
        self._logger = logger or logging.getLogger(__name__)

    def before_step(self) -> None:
        self._start = time.perf_counter()

    def after_step(self) -> None:
        if self._start is None:
            return
        self.record(self.trainer.iter, time.perf_counter() - self._start)
        done = self.trainer.iter + 1
        if done % self._period == 0 or done == self._max_iter:
            estimate = estimate_remaining(self._times, done, self._max_iter, self._boundaries)
            self.trainer.storage.put_scalar(
                "bmp/eta_seconds", estimate.seconds, smoothing_hint=False
            )
            self._logger.info(self.status_line(done))

    def record(self, iteration: int, seconds: float) -> None:
        """Add one iteration's duration to its phase's window; log when a phase starts."""
        phase = phase_of(iteration, self._boundaries)
        if phase not in self._times:
            self._times[phase] = deque(maxlen=self._window)
            if phase > 0:
                self._logger.info(
                    f"phase '{self._names.get(phase, phase)}' starts at iteration {phase}: "
                    "the ETA is re-timed from its iterations"
                )
        self._times[phase].append(seconds)

    def status_line(self, done: int) -> str:
        """The progress line after ``done`` finished iterations."""
        estimate = estimate_remaining(self._times, done, self._max_iter, self._boundaries)
        phase = phase_of(max(done - 1, 0), self._boundaries)
        times = self._times.get(phase)
        speed = f"{median(times):.3f} s/it" if times else "not timed"
        name = self._names.get(phase, str(phase))
        return (
            f"progress {text_bar(done / self._max_iter)} {100 * done / self._max_iter:3.0f}% "
            f"{done}/{self._max_iter} | phase '{name}' from {phase}: {speed} "
            f"| eta {format_eta(estimate)}"
        )
