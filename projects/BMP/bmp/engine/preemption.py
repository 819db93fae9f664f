"""Preemption: a signal stops training after the step in progress, with a checkpoint there.

Clusters end jobs with a signal (SLURM: SIGTERM at preemption or at the time limit, or SIGUSR1
ahead of it with ``--signal``) and kill them ``KillWait`` seconds later (30 s by default). With
``SOLVER.PREEMPTION.SIGNALS`` set, such a signal only raises a flag. Every process's flag travels
in the step's agreement exchange (:mod:`.agreement`: no host sync of its own), so all processes
see the request at the same step, also when it reached one process only, or reached them one
step apart. After that step every process stops: the main process writes a checkpoint of that
iteration through the trainer's atomic checkpointer, one line says
``preempted at iteration N: resume with --resume``, and the process exits with
``SOLVER.PREEMPTION.EXIT_CODE``, so a requeued job continues with ``--resume``.

A second signal while the checkpoint is written only raises the flag again. The data loader's
workers ignore the signals (the main process decides), and so does ``train_net.py``'s launching
parent with ``--num-gpus`` (its children exit, then it does, with their code).
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Sequence

from detectron2.engine import hooks
from detectron2.utils import comm

from ..utils.signals import ignore_signals, resolve_signals
from . import agreement

__all__ = [
    "Preempted",
    "PreemptionHook",
    "ignore_signals",
    "resolve_signals",
    "STOP_VOTE",
]

logger = logging.getLogger(__name__)

STOP_VOTE = "stop_requested"


class Preempted(BaseException):
    """Training stopped at ``iteration`` on a signal, after writing its checkpoint.

    A ``BaseException`` (like ``KeyboardInterrupt``): it is no error, so detectron2's train loop,
    which logs every ``Exception`` with its traceback, lets it pass."""

    def __init__(self, iteration: int, exit_code: int) -> None:
        super().__init__(f"preempted at iteration {iteration}: resume with --resume")
        self.iteration, self.exit_code = iteration, exit_code


class PreemptionHook(hooks.HookBase):
    """Raise a stop flag on ``signals``; after a step where any process had it raised, write a
    checkpoint of that iteration and stop every process (see the module docstring)."""

    def __init__(self, signals: Sequence[signal.Signals], exit_code: int) -> None:
        self.signals, self.exit_code = list(signals), exit_code
        self.requested = False
        self._previous: dict[int, object] = {}

    def _on_signal(self, signum: int, _frame: object) -> None:
        if not self.requested:
            logger.warning(
                f"{signal.Signals(signum).name} received: stopping after the step in progress"
            )
        self.requested = True

    def before_train(self) -> None:
        for sig in self.signals:
            self._previous[sig] = signal.signal(sig, self._on_signal)
        agreement.add_voter(STOP_VOTE, lambda: 1.0 if self.requested else 0.0)

    def after_train(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
        agreement.remove_voter(STOP_VOTE)

    def after_step(self) -> None:
        votes = agreement.latest(STOP_VOTE)
        if not votes or max(votes) <= 0:
            return
        it = self.trainer.iter
        # The main process writes (checkpointers save there only); the others wait for it.
        self.trainer.checkpointer.save(f"model_{it:07d}", iteration=it)
        comm.synchronize()
        logger.warning(f"preempted at iteration {it}: resume with --resume")
        raise Preempted(it, self.exit_code)
