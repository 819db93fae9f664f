"""A training loader that a resumed run continues exactly where the stopped one left off.

detectron2's ``TrainingSampler`` is an infinite stream that starts again from its first index
whenever the loader is rebuilt, and augmentations draw from the data workers' RNG streams, which
die with the process. Here both depend only on a seed and a sample's position in the stream:

* the global stream visits the dataset in epochs; epoch ``e`` is a permutation drawn from
  ``(seed, e)``, so any position can be reached without replaying the ones before it;
* each sample is mapped with the RNGs seeded from ``(seed, position)``, so its crop, scale and
  flip do not depend on which worker, process or run maps it (or on ``NUM_WORKERS``).

The loader counts the batches it hands out; its ``state_dict`` (seed and samples consumed over
all processes) travels in the trainer's checkpoint and puts a resumed loader back in place.
"""

import logging
import weakref
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from detectron2.config import CfgNode
from detectron2.data import DatasetFromList
from detectron2.utils import comm
from torch.utils.data import BatchSampler, DataLoader, Dataset, Sampler

from bmp.data.registered import training_dataset_dicts
from bmp.seeding import derive_seed, forked_cpu_rng
from bmp.utils.signals import ignore_signals, resolve_signals

__all__ = [
    "PositionSampler",
    "SeededMapDataset",
    "ResumableTrainLoader",
    "resolve_seed",
    "build_resumable_train_loader",
]

logger = logging.getLogger(__name__)

# Separate the seed streams of the epoch permutations and of the per-sample augmentations.
_ORDER_STREAM, _SAMPLE_STREAM, _WORKER_STREAM = 0, 1, 2


class PositionSampler(Sampler):
    """Infinite ``(position, index)`` pairs of this process's share of the global stream.

    Position ``p`` of the global stream holds dataset index ``perm(seed, p // size)[p % size]``;
    process ``rank`` of ``world_size`` takes positions ``start + rank``, ``start + rank + world``,
    and so on, as detectron2's ``TrainingSampler`` shards its stream.
    """

    def __init__(
        self,
        size: int,
        seed: int,
        start: int = 0,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
    ) -> None:
        if size <= 0:
            raise ValueError("The training dataset is empty.")
        self.size, self.seed, self.start = size, seed, start
        self.rank, self.world_size, self.shuffle = rank, world_size, shuffle

    def order(self, epoch: int) -> torch.Tensor:
        """The dataset indices of ``epoch`` in visiting order."""
        if not self.shuffle:
            return torch.arange(self.size)
        g = torch.Generator()
        g.manual_seed(derive_seed(self.seed, _ORDER_STREAM, epoch))
        return torch.randperm(self.size, generator=g)

    def __iter__(self) -> Iterator[Tuple[int, int]]:
        position = self.start + self.rank
        epoch, order = -1, torch.empty(0, dtype=torch.long)
        while True:
            e, offset = divmod(position, self.size)
            if e != epoch:
                epoch, order = e, self.order(e)
            yield position, int(order[offset])
            position += self.world_size


class SeededMapDataset(Dataset):
    """``dataset[(position, index)]`` maps dict ``index`` with RNGs seeded from the position."""

    def __init__(self, dicts: Sequence[Dict[str, Any]], mapper: Callable, seed: int) -> None:
        self.dicts, self.mapper, self.seed = dicts, mapper, seed

    def __len__(self) -> int:
        return len(self.dicts)

    def __getitem__(self, key: Tuple[int, int]) -> Any:
        position, index = key
        with forked_cpu_rng(derive_seed(self.seed, _SAMPLE_STREAM, position)):
            return self.mapper(self.dicts[index])


def _as_list(batch: List[Any]) -> List[Any]:
    return batch


class ResumableTrainLoader:
    """Iterable of per-process batches (lists of mapped dicts) that can resume mid-stream.

    The underlying ``DataLoader`` is created when iteration starts, not when ``iter`` is called,
    so a ``load_state_dict`` between the trainer's construction and its first step still takes
    effect (detectron2 v0.6's trainer calls ``iter`` in its constructor).
    """

    def __init__(
        self,
        dicts: Sequence[Dict[str, Any]],
        mapper: Callable,
        total_batch_size: int,
        *,
        seed: int,
        num_workers: int = 0,
        shuffle: bool = True,
        worker_init_fn: Optional[Callable[[int], None]] = None,
    ) -> None:
        world = comm.get_world_size()
        if total_batch_size <= 0 or total_batch_size % world:
            raise ValueError(
                f"SOLVER.IMS_PER_BATCH = {total_batch_size} must be a positive multiple of the "
                f"number of processes ({world})."
            )
        self.dataset = dicts if isinstance(dicts, Dataset) else DatasetFromList(dicts, copy=False)
        self.mapper = mapper
        self.total_batch_size = total_batch_size
        self.batch_size = total_batch_size // world
        self.seed = seed
        self.num_workers = num_workers
        self.shuffle = shuffle
        self.worker_init_fn = worker_init_fn
        self.samples = 0  # consumed by all processes together
        self._open: "weakref.WeakSet[Iterator[List[Any]]]" = weakref.WeakSet()

    def _loader(self, start: int) -> DataLoader:
        sampler = PositionSampler(
            len(self.dataset),
            self.seed,
            start,
            comm.get_rank(),
            comm.get_world_size(),
            shuffle=self.shuffle,
        )
        # The workers' base seed is drawn from this generator, not from the global torch RNG,
        # whose draws would otherwise shift the model's randomness in the step that starts them.
        generator = torch.Generator()
        generator.manual_seed(derive_seed(self.seed, _WORKER_STREAM, start))
        return DataLoader(
            SeededMapDataset(self.dataset, self.mapper, self.seed),
            batch_sampler=BatchSampler(sampler, self.batch_size, drop_last=True),
            num_workers=self.num_workers,
            collate_fn=_as_list,
            generator=generator,
            worker_init_fn=self.worker_init_fn,
        )

    def __iter__(self) -> Iterator[List[Any]]:
        batches = self._batches()
        self._open.add(batches)
        return batches

    def _batches(self) -> Iterator[List[Any]]:
        start = self.samples  # read at the first batch: a load_state_dict before it counts
        if start:
            logger.info(f"Training data resumes at sample {start} (seed {self.seed}).")
        batches = iter(self._loader(start))
        try:
            for batch in batches:
                self.samples += self.total_batch_size
                yield batch
        finally:
            # Now, not when the iterator is collected: an error's traceback keeps it alive, and
            # workers that ignore SIGTERM would then block the interpreter's exit.
            shutdown = getattr(batches, "_shutdown_workers", None)
            if shutdown is not None:
                shutdown()

    def close(self) -> None:
        """Stop the workers of every open iteration now, through the loader's own shutdown.

        The workers ignore the preemption signals, so they must not be left to the
        interpreter's exit, which ends child processes with SIGTERM; the trainer calls this
        when training ends, however it ends."""
        for batches in list(self._open):
            batches.close()
        self._open.clear()

    def state_dict(self) -> Dict[str, int]:
        return {"seed": self.seed, "samples": self.samples}

    def load_state_dict(self, state: Dict[str, int]) -> None:
        self.seed = int(state["seed"])
        self.samples = int(state["samples"])


def resolve_seed(seed: Optional[int]) -> int:
    """``cfg.SEED`` if set (>= 0); otherwise one random seed shared by all processes."""
    if seed is not None and seed >= 0:
        return int(seed)
    return int(comm.shared_random_seed())


def build_resumable_train_loader(cfg: CfgNode, mapper: Callable) -> ResumableTrainLoader:
    """The loader of ``DATASETS.TRAIN`` (any registered dataset, see :mod:`bmp.data.registered`)
    with ``SOLVER.IMS_PER_BATCH`` and ``SEED``.

    Batches are not grouped by aspect ratio: grouping makes a batch depend on the samples left
    waiting in the groups, which a resumed loader cannot know (and BMP's crops share one size).
    """
    dicts = training_dataset_dicts(
        list(cfg.DATASETS.TRAIN), filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS
    )
    # Workers ignore the preemption signals: the main process decides when to stop, and a
    # worker killed by one would end the run before its checkpoint.
    signals = resolve_signals(cfg.SOLVER.PREEMPTION.SIGNALS)
    return ResumableTrainLoader(
        DatasetFromList(dicts, copy=False),
        mapper,
        cfg.SOLVER.IMS_PER_BATCH,
        seed=resolve_seed(cfg.SEED),
        num_workers=cfg.DATALOADER.NUM_WORKERS,
        worker_init_fn=ignore_signals(signals) if signals else None,
    )
