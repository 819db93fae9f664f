"""Seed the process RNGs at every step from (seed, rank, iteration).

The model draws random numbers while training (dropout, drop path). Saving the RNG states in
the checkpoint would not make a resumed run repeat an uninterrupted one: only rank 0 writes the
checkpoint, and hooks that run between the save and the next step (an evaluation starts data
loaders, which draw seeds) move the uninterrupted run's RNGs on. Seeding before each step makes
every step's draws a function of where it is, whoever runs it; the seed itself is checkpointed,
so a run with ``SEED -1`` resumes with the seed it drew.
"""

from typing import Dict

from detectron2.engine import hooks
from detectron2.utils import comm

from bmp.seeding import derive_seed, seed_all

__all__ = ["SeedEveryStep"]


class SeedEveryStep(hooks.HookBase):
    """Before each step, seed Python, NumPy and torch from ``(seed, rank, iteration)``."""

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)

    def before_step(self) -> None:
        seed_all(derive_seed(self.seed, comm.get_rank(), self.trainer.iter))

    def state_dict(self) -> Dict[str, int]:
        return {"seed": self.seed}

    def load_state_dict(self, state: Dict[str, int]) -> None:
        self.seed = int(state["seed"])
