"""A progress bar with ETA for evaluation, as a pass-through ``DatasetEvaluator``.

detectron2's ``inference_on_dataset`` logs its own ETA every few seconds; a person at a terminal
also gets a bar that moves with each image. Being an evaluator, it needs no change to detectron2's
loop: ``process`` advances the bar by the batch size and ``evaluate`` closes it.
"""

from typing import Optional, Sequence

from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm

__all__ = ["EvalProgressBar", "local_shard_size"]


def local_shard_size(total: int, world_size: int, rank: int) -> int:
    """Images a rank evaluates under detectron2's ``InferenceSampler`` (contiguous shards, the
    first ``total % world_size`` ranks one more)."""
    return total // world_size + int(rank < total % world_size)


class EvalProgressBar(DatasetEvaluator):
    """A ``tqdm`` bar over this process's share of ``num_images``; reports no metrics.

    Only the main process draws, and only on a terminal (``tqdm``'s ``disable=None``), so log
    files stay free of carriage-return noise.
    """

    def __init__(self, dataset_name: str, num_images: int, force: Optional[bool] = None) -> None:
        self._desc = f"eval {dataset_name}"
        self._total = local_shard_size(num_images, comm.get_world_size(), comm.get_rank())
        # None: draw on terminals only; True/False: always/never (tests, scripts).
        self._disable = None if force is None else not force
        self._bar = None
        self._count = 0

    def reset(self) -> None:
        self._close()
        self._count = 0
        from tqdm import tqdm

        disable = True if not comm.is_main_process() else self._disable
        self._bar = tqdm(total=self._total, desc=self._desc, unit="img", disable=disable)

    def process(self, inputs: Sequence, outputs: Sequence) -> None:
        self._count += len(inputs)
        if self._bar is not None:
            self._bar.update(len(inputs))

    def evaluate(self):
        self._close()
        return {}

    @property
    def count(self) -> int:
        """Images seen since the last reset (for tests)."""
        return self._count

    def _close(self) -> None:
        if self._bar is not None:
            self._bar.close()
