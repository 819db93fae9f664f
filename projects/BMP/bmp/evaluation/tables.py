"""Per-class tables for logs and READMEs, for segmentation and seed results alike."""

import math
from typing import Mapping, Optional, Sequence

from tabulate import tabulate

__all__ = ["format_per_class_table"]


def format_per_class_table(
    results: Mapping[str, Mapping[str, float]],
    class_names: Optional[Sequence[str]] = None,
    prefix: str = "IoU-",
    mean_key: str = "mIoU",
    tablefmt: str = "github",
    digits: int = 1,
) -> str:
    """One row per class, one column per result group that has per-class entries.

    ``results`` is an evaluator's output, e.g. ``{"sem_seg": {...}, "seed_cam": {...}}``; groups
    without ``<prefix><class>`` keys (e.g. ``"classification"`` for ``prefix="IoU-"``) are left
    out. ``class_names`` defaults to the classes found in the first such group. A last row holds
    ``mean_key``. Missing or NaN values (a class absent from the ground truth) print as ``-``.
    """
    groups = [g for g, r in results.items() if any(str(k).startswith(prefix) for k in r)]
    if not groups:
        raise ValueError(f"No result group has per-class '{prefix}<class>' entries: "
                         f"{list(results)}.")  # fmt: skip
    if class_names is None:
        class_names = [k[len(prefix) :] for k in results[groups[0]] if k.startswith(prefix)]

    def fmt(v: Optional[float]) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "-"
        return f"{v:.{digits}f}"

    rows = [[name] + [fmt(results[g].get(prefix + name)) for g in groups] for name in class_names]
    rows.append([mean_key] + [fmt(results[g].get(mean_key)) for g in groups])
    return tabulate(rows, headers=["class"] + groups, tablefmt=tablefmt, disable_numparse=True)
