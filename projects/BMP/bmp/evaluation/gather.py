"""Collecting an evaluator's per-process state on the main process."""

from __future__ import annotations

from typing import Any

from detectron2.utils.comm import all_gather, is_main_process, synchronize

__all__ = ["gather_on_main"]


def gather_on_main(local: Any, distributed: bool) -> list[Any] | None:
    """Every process's ``local`` on the main process, in rank order, and None on the others;
    ``[local]`` when not distributed. Evaluators merge the list, so one code path serves both."""
    if not distributed:
        return [local]
    synchronize()
    gathered = all_gather(local)
    return gathered if is_main_process() else None
