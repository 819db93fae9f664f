"""The one channel through which all processes agree on a step's shared decisions.

Some decisions must be the same on every process at the same iteration, or the processes part
ways and the next collective hangs: a non-finite loss stops every process, and a stop request
(a preemption signal that reached one process) stops every process at the same step. Each step,
every process writes its values into its own row of a small ``(world, n)`` table, the table is
summed over processes with one ``all_reduce`` (a device collective, no pickling), and read back
on the host once. Every process then holds every process's values and decides alike.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from detectron2.utils import comm
from torch import Tensor

__all__ = ["exchange", "add_voter", "remove_voter", "latest"]

# Values every exchange carries besides its own: name -> a function giving this process's value
# as a Python number (read on the host already, so it adds no sync), e.g. a stop request.
_voters: dict[str, Callable[[], float]] = {}
_latest: dict[str, list[float]] = {}


def add_voter(name: str, value: Callable[[], float]) -> None:
    """Carry ``value()`` of every process in each following exchange, under ``name``."""
    _voters[name] = value


def remove_voter(name: str) -> None:
    _voters.pop(name, None)
    _latest.pop(name, None)


def latest(name: str) -> list[float] | None:
    """Every process's value of ``name`` at the last exchange, or None if none carried it."""
    return _latest.get(name)


def exchange(values: Mapping[str, Tensor | float | bool], device=None) -> dict[str, list[float]]:
    """Each name's value on every process, in rank order: ``{name: [value of rank 0, ...]}``.

    Values are 0-d tensors (on the step's device; they are not read before the exchange) or
    Python numbers; the registered voters' values travel with them. Collective when distributed:
    every process must call it with the same names in the same order (voters included). One host
    read in all.
    """
    values = {**values, **{name: fn() for name, fn in _voters.items()}}
    names = list(values)
    tensors = [v for v in values.values() if isinstance(v, Tensor)]
    device = device or (tensors[0].device if tensors else torch.device("cpu"))
    if comm.get_world_size() > 1 and torch.distributed.get_backend() == "nccl":
        device = torch.device("cuda", torch.cuda.current_device())
    world, rank = comm.get_world_size(), comm.get_rank()
    row = torch.stack(
        [
            (v.detach() if isinstance(v, Tensor) else torch.tensor(float(v)))
            .to(device, torch.float64)
            .reshape(())
            for v in values.values()
        ]
    )
    table = torch.zeros(world, len(names), dtype=torch.float64, device=device)
    table[rank] = row
    if world > 1:
        torch.distributed.all_reduce(table)
    rows = table.tolist()
    result = {name: [rows[r][i] for r in range(world)] for i, name in enumerate(names)}
    _latest.update({name: result[name] for name in _voters})
    return result
