"""Seeds derived from a base seed and a position, so randomness never depends on history.

A resumed run can only repeat an uninterrupted one if every random draw is a function of where
it happens (iteration, sample position, rank) rather than of how many draws came before: the
RNG state of a killed process is gone, and that of every rank but the first never reaches the
checkpoint. These helpers turn integer keys into seeds and apply them.
"""

import contextlib
import random
from typing import Iterator

import numpy as np
import torch

__all__ = ["derive_seed", "seed_all", "forked_cpu_rng"]


def derive_seed(*keys: int) -> int:
    """A 32-bit seed mixed from non-negative integer keys; equal keys give equal seeds."""
    if any(int(k) < 0 for k in keys):
        raise ValueError(f"seed keys must be non-negative, got {keys}")
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1)[0])


def seed_all(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global RNGs (torch: CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@contextlib.contextmanager
def forked_cpu_rng(seed: int) -> Iterator[None]:
    """Run the block with Python, NumPy and torch-CPU RNGs seeded; restore their states after.

    CUDA generators are left alone: data mapping runs on CPU, and the model's draws on the
    main process must not depend on how the batch was loaded.
    """
    py_state, np_state, torch_state = (
        random.getstate(),
        np.random.get_state(),
        torch.get_rng_state(),
    )
    random.seed(seed)
    np.random.seed(seed)
    torch.default_generator.manual_seed(seed)
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
        torch.set_rng_state(torch_state)
