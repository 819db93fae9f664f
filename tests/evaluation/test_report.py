"""bmp/evaluation/report.py: per-class IoU tables for segmentation and seeds."""

import json
import math

from bmp.evaluation.report import iou_table, write_eval_report

RESULTS = {
    "sem_seg": {"mIoU": 50.0, "IoU-background": 90.0, "IoU-cat": 10.0, "pACC": 80.0},
    "seed_cam": {"mIoU": 40.0, "IoU-background": 70.0, "IoU-cat": float("nan")},
    "cls": {"mAP": 70.0},
}


def _cells(line):
    return [c.strip() for c in line.strip("|").split("|")]


def test_table_rows_are_classes_and_columns_are_tasks():
    lines = iou_table(RESULTS).splitlines()
    assert _cells(lines[0]) == ["class", "sem_seg", "seed_cam"]
    assert _cells(lines[2]) == ["background", "90.00", "70.00"]
    assert _cells(lines[3]) == ["cat", "10.00", "-"]
    assert _cells(lines[4]) == ["mIoU", "50.00", "40.00"]
    assert len(lines) == 5


def test_no_per_class_results_gives_empty_table():
    assert iou_table({"cls": {"mAP": 1.0}}) == ""


def test_report_files(tmp_path):
    md = write_eval_report(RESULTS, str(tmp_path), "toy_val", "iter0000100")
    assert md == str(tmp_path / "eval_toy_val_iter0000100.md")
    text = (tmp_path / "eval_toy_val_iter0000100.md").read_text()
    assert any(_cells(line) == ["cat", "10.00", "-"] for line in text.splitlines())
    data = json.loads((tmp_path / "eval_toy_val_iter0000100.json").read_text())
    assert data["sem_seg"]["mIoU"] == 50.0 and math.isnan(data["seed_cam"]["IoU-cat"])
