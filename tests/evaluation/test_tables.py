"""Per-class tables: one column per result group, NaN shown as '-'."""

import pytest

from bmp.evaluation import format_per_class_table


def test_table_layout():
    res = {
        "sem_seg": {"mIoU": 50.0, "IoU-background": 80.0, "IoU-cat": float("nan"), "pACC": 9.0},
        "seed_cam": {"mIoU": 40.0, "IoU-background": 70.26, "IoU-cat": 10.0},
        "classification": {"mAP": 1.0},
    }
    lines = format_per_class_table(res).splitlines()
    assert lines[0].split("|")[1:4] == [" class      ", " sem_seg   ", " seed_cam   "]
    rows = {
        line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:4]] for line in lines[2:]
    }
    assert rows == {"background": ["80.0", "70.3"], "cat": ["-", "10.0"], "mIoU": ["50.0", "40.0"]}
    with pytest.raises(ValueError, match="per-class"):
        format_per_class_table({"classification": {"mAP": 1.0}})
