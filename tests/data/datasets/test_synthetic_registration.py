"""The registered synthetic splits: explicit generation, then loads from $DETECTRON2_DATASETS."""

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog

import bmp  # noqa: F401  (registers the datasets)
from bmp.data import synthetic as gen
from bmp.data.dataset_mapper import SemSegEvalMapper, WSSSDatasetMapper


def test_loading_never_generates_and_says_how_to(datasets_root):
    with pytest.raises(FileNotFoundError, match="prepare_synthetic_wsss.py"):
        DatasetCatalog.get("synthetic_wsss_train")
    assert not (datasets_root / "synthetic_wsss").exists()


def test_splits_load_after_generation(datasets_root):
    gen.ensure_synthetic_wsss(str(datasets_root / "synthetic_wsss"), 6, 3)
    train = DatasetCatalog.get("synthetic_wsss_train")
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
