"""Seed metrics on a hand-computed example; ground truth from inputs or from mask files."""

import uuid

import numpy as np
import pytest
import torch
from PIL import Image

from bmp.data.datasets import SplitLayout, register_split
from bmp.evaluation import SeedEvaluator, format_per_class_table, seed_metrics

CLASSES = ["background", "a", "b"]
GT = torch.tensor([[0, 1, 1], [2, 2, 255]])
CAM = torch.tensor([[0, 1, 0], [2, 1, 1]])
PAR = torch.tensor([[255, 1, 1], [2, 2, 0]])


def _dataset(tmp_path, with_files=False):
    name = f"seed_toy_{uuid.uuid4().hex[:8]}"
    (tmp_path / "img").mkdir()
    (tmp_path / "mask").mkdir()
    Image.new("RGB", (3, 2)).save(tmp_path / "img" / "x.jpg")
    Image.fromarray(GT.numpy().astype(np.uint8)).save(tmp_path / "mask" / "x.png")
    (tmp_path / "list.txt").write_text("x\n")
    layout = SplitLayout(
        image_dir=str(tmp_path / "img"),
        split_file=str(tmp_path / "list.txt"),
        mask_dir=str(tmp_path / "mask"),
    )
    register_split(name, layout, CLASSES, [[0, 0, 0], [255, 0, 0], [0, 255, 0]])
    return name, str(tmp_path / "img" / "x.jpg")


def _check(res):
    cam, par = res["seed_cam"], res["seed_par"]
    # CAM: (pred, gt) pairs (0,0) (1,1) (0,1) (2,2) (1,2); the gt-255 pixel is left out.
    assert cam["IoU-background"] == pytest.approx(50.0)  # 1 / (1 + 2 - 1)
    assert cam["IoU-a"] == pytest.approx(100 / 3)  # 1 / (2 + 2 - 1)
    assert cam["IoU-b"] == pytest.approx(50.0)  # 1 / (2 + 1 - 1)
    assert cam["mIoU"] == pytest.approx((50 + 100 / 3 + 50) / 3)
    assert cam["fg_precision"] == pytest.approx(100.0)  # 3 fg predictions, all on fg
    assert cam["fg_recall"] == pytest.approx(75.0)  # 3 of 4 fg pixels
    assert cam["ignore_ratio"] == 0.0 and cam["pACC"] == pytest.approx(60.0)
    # PAR: the uncertain (255) pixel on background counts as a miss, not a prediction.
    assert par["IoU-background"] == 0.0
    assert par["IoU-a"] == pytest.approx(100.0) and par["IoU-b"] == pytest.approx(100.0)
    assert par["mIoU"] == pytest.approx(200 / 3)
    assert par["ignore_ratio"] == pytest.approx(20.0)
    assert par["fg_precision"] == pytest.approx(100.0) and par["fg_recall"] == pytest.approx(100.0)


@pytest.mark.parametrize("distributed", [False, True])
def test_hand_computed_example(tmp_path, distributed):
    name, fname = _dataset(tmp_path)
    ev = SeedEvaluator(name, seed_types=("cam", "par"), distributed=distributed)
    ev.reset()
    ev.process([{"file_name": fname, "sem_seg": GT}], [{"seeds": {"cam": CAM, "par": PAR}}])
    res = ev.evaluate()
    assert list(res) == ["seed_cam", "seed_par"]
    _check(res)
    assert res["seed_cam"]["num_images"] == 1


def test_gt_from_mask_file_and_accumulation(tmp_path):
    name, fname = _dataset(tmp_path)
    ev = SeedEvaluator(name, seed_types=None, distributed=False)
    ev.reset()
    for _ in range(2):  # same image twice: every count doubles, the ratios stay
        ev.process([{"file_name": fname}], [{"seeds": {"cam": CAM, "par": PAR}}])
    res = ev.evaluate()
    _check(res)
    assert res["seed_par"]["num_images"] == 2
    table = format_per_class_table(res)
    assert "| seed_cam" in table and "33.3" in table and "66.7" in table


def test_errors(tmp_path):
    name, fname = _dataset(tmp_path)
    ev = SeedEvaluator(name, distributed=False)
    with pytest.raises(KeyError, match="EXTRA_OUTPUTS"):
        ev.process([{"file_name": fname, "sem_seg": GT}], [{"sem_seg": torch.zeros(3, 2, 3)}])
    with pytest.raises(KeyError, match="'bsp' missing"):
        ev.process([{"file_name": fname, "sem_seg": GT}], [{"seeds": {"cam": CAM, "par": PAR}}])
    ev = SeedEvaluator(name, seed_types=("cam",), distributed=False)
    with pytest.raises(ValueError, match="original image size"):
        ev.process([{"file_name": fname, "sem_seg": GT}], [{"seeds": {"cam": CAM[:, :2]}}])
    with pytest.raises(ValueError, match="ids \\[7\\]"):
        ev.process([{"file_name": fname, "sem_seg": GT}], [{"seeds": {"cam": CAM * 0 + 7}}])
    with pytest.raises(KeyError, match="No ground-truth"):
        ev.process([{"file_name": "other.jpg"}], [{"seeds": {"cam": CAM}}])


def test_seed_metrics_nan_for_absent_class():
    conf = np.zeros((4, 3), dtype=np.int64)
    conf[0, 0] = 5
    conf[1, 1] = 5  # class "b" (2) never appears in the ground truth nor the seeds
    res = seed_metrics(conf, CLASSES)
    assert np.isnan(res["IoU-b"]) and res["mIoU"] == pytest.approx(100.0)
