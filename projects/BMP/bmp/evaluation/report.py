"""Per-class IoU tables for the log and ``OUTPUT_DIR``.

detectron2's ``print_csv_format`` only prints summary numbers. WSSS results are usually read per
class (the seeds of thin or co-occurring classes fail first), so every evaluation also writes a
markdown table with one row per class and one column per evaluated output (the segmentation
prediction and each seed), plus the raw results as JSON.
"""

import json
import logging
import os
from typing import Mapping, Optional

from .tables import format_per_class_table

__all__ = ["iou_table", "write_eval_report"]

logger = logging.getLogger(__name__)


def iou_table(results: Mapping[str, Mapping[str, float]]) -> str:
    """Markdown per-class IoU table (rows = classes + mIoU, columns = segmentation and seeds).

    Empty when no result group reports ``IoU-<class>`` (e.g. classification only).
    """
    groups = {k: v for k, v in results.items() if isinstance(v, Mapping)}
    if not any(str(m).startswith("IoU-") for v in groups.values() for m in v):
        return ""
    return format_per_class_table(groups, digits=2)


def write_eval_report(
    results: Mapping[str, Mapping[str, float]], output_dir: str, dataset_name: str, tag: str
) -> Optional[str]:
    """Log the per-class table and write ``eval_<dataset>_<tag>.{md,json}``; return the md path."""
    table = iou_table(results)
    if table:
        logger.info(f"Per-class IoU on {dataset_name} ({tag}):\n{table}")
    if not output_dir:
        return None
    os.makedirs(output_dir, exist_ok=True)
    stem = os.path.join(output_dir, f"eval_{dataset_name}_{tag}")
    with open(stem + ".json", "w") as f:
        json.dump(results, f, indent=2, default=float)
    with open(stem + ".md", "w") as f:
        f.write(f"# {dataset_name} ({tag})\n\n{table or 'no per-class results'}\n")
    return stem + ".md"
