"""The all-background baseline, checked on hand-made masks."""

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image

from bmp.evaluation import all_background_miou


def _register(name, masks, tmp_path):
    dicts = []
    for i, m in enumerate(masks):
        path = tmp_path / f"{name}_{i}.png"
        Image.fromarray(np.asarray(m, dtype=np.uint8)).save(path)
        dicts.append({"file_name": f"{i}.jpg", "sem_seg_file_name": str(path)})
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
    DatasetCatalog.register(name, lambda: dicts)
    MetadataCatalog.get(name).set(stuff_classes=["background", "a", "b"], ignore_label=255)
    return name


def test_background_share_over_present_classes(tmp_path):
    # 6 background, 2 class-1 pixels, 1 ignored; class 2 never appears.
    name = _register("__bmp_bg_a", [[[0, 0, 0, 1], [0, 0, 0, 1], [255, 0, 0, 0]]], tmp_path)
    # Every labelled pixel is predicted bg: IoU(bg) = 9 / 11, IoU(a) = 0, b is not counted.
    assert all_background_miou(name) == pytest.approx(100 * (9 / 11) / 2)


def test_only_background_scores_100(tmp_path):
    assert all_background_miou(_register("__bmp_bg_b", [[[0, 0], [255, 0]]], tmp_path)) == 100.0


def test_split_without_masks_is_an_error(tmp_path):
    name = f"__bmp_bg_c_{tmp_path.name}"
    image = tmp_path / "x.jpg"
    image.write_bytes(b"")
    DatasetCatalog.register(name, lambda: [{"file_name": str(image), "cls_labels": [1]}])
    MetadataCatalog.get(name).set(stuff_classes=["background", "a"])
    with pytest.raises(KeyError, match="x.jpg.*no ground truth"):
        all_background_miou(name)
