"""The registered synthetic splits load from $DETECTRON2_DATASETS and generate on first use."""

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog

import bmp  # noqa: F401  (registers the datasets)
from bmp.data import synthetic_wsss as gen
from bmp.data.dataset_mapper import SemSegEvalMapper, WSSSDatasetMapper


def test_splits_generate_on_first_load(datasets_root, monkeypatch):
    monkeypatch.setattr(gen, "DEFAULT_NUM_TRAIN", 6)
    monkeypatch.setattr(gen, "DEFAULT_NUM_VAL", 3)
    train = DatasetCatalog.get("synthetic_wsss_train")  # generates the tiny set
    assert (datasets_root / "synthetic_wsss" / "info.json").is_file()
    assert len(train) == 6 and all("sem_seg_file_name" not in d for d in train)
    assert all(d["cls_labels"] for d in train)
    train_masks = DatasetCatalog.get("synthetic_wsss_train_sem_seg")
    assert [d["file_name"] for d in train_masks] == [d["file_name"] for d in train]
    val = DatasetCatalog.get("synthetic_wsss_val_sem_seg")
    assert len(val) == 3 and all("sem_seg_file_name" in d for d in val)

    meta = MetadataCatalog.get("synthetic_wsss_val_sem_seg")
    assert meta.stuff_classes == gen.CLASS_NAMES and len(meta.stuff_classes) == 11
    assert meta.evaluator_type == "sem_seg" and len(meta.stuff_colors) == 11

    out = WSSSDatasetMapper(is_train=True, augmentations=[], image_format="RGB", num_classes=10)(
        train[0]
    )
    assert "sem_seg" not in out and out["cls_label"].sum() == len(train[0]["cls_labels"])
    ev = SemSegEvalMapper(image_format="RGB", num_classes=10)(val[0])
    ids = set(np.unique(ev["sem_seg"].numpy()).tolist()) - {0}
    assert ids == set(val[0]["cls_labels"])
    assert ev["sem_seg"].shape == (val[0]["height"], val[0]["width"])


def test_refuses_repo_folder_during_tests(monkeypatch):
    monkeypatch.delenv("DETECTRON2_DATASETS", raising=False)
    monkeypatch.setenv("BMP_TESTING", "1")
    with pytest.raises(RuntimeError, match="DETECTRON2_DATASETS"):
        DatasetCatalog.get("synthetic_wsss_train")
