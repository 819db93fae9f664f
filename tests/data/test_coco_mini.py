"""coco_mini (VOC-21) registration: lazy, VOC metadata, drops unlabelled training images."""

import logging
import os

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image

import bmp.data.datasets.register_coco_mini as coco_mini
from bmp.data.datasets.register_voc import VOC_CLASSES
from bmp.data.registered import training_dataset_dicts

NAMES = ("coco_mini_voc_train_wsss", "coco_mini_voc_train_sem_seg", "coco_mini_voc_val_sem_seg")


def _make_coco_mini(root, train, val):
    """A tiny coco_mini: ``train`` / ``val`` map stems to the VOC ids painted in their masks."""
    (root / "images").mkdir(parents=True)
    (root / "masks_voc21").mkdir()
    (root / "classes_voc21.txt").write_text("\n".join(VOC_CLASSES) + "\n")
    lines = []
    for i, (stem, ids) in enumerate({**train, **val}.items()):
        h, w = 20 + i, 30
        Image.fromarray(np.full((h, w, 3), 40 * i, np.uint8)).save(root / "images" / f"{stem}.jpg")
        mask = np.zeros((h, w), np.uint8)
        for j, c in enumerate(ids):
            mask[j * 2 : j * 2 + 2] = c
        Image.fromarray(mask).save(root / "masks_voc21" / f"{stem}.png")
        lines.append(" ".join([stem] + [str(c) for c in ids]))
    (root / "image_labels_voc21.txt").write_text("\n".join(lines) + "\n")
    (root / "split_train.txt").write_text("\n".join(train) + "\n")
    (root / "split_val.txt").write_text("\n".join(val) + "\n")


def test_registered_lazily_with_voc_metadata(monkeypatch, tmp_path):
    # Registration happened at import although this root does not exist: no I/O at import.
    monkeypatch.setenv(coco_mini.COCO_MINI_ENV, str(tmp_path / "missing"))
    for name in NAMES:
        assert name in DatasetCatalog.list()
        meta = MetadataCatalog.get(name)
        assert meta.stuff_classes == list(VOC_CLASSES) and meta.stuff_classes[0] == "background"
        assert meta.ignore_label == 255
        assert meta.get("evaluator_type") == ("sem_seg" if name.endswith("_sem_seg") else None)
        assert meta.stuff_colors[:3] == [[0, 0, 0], [128, 0, 0], [0, 128, 0]]
        assert meta.stuff_colors[15] == [192, 128, 128]  # person
    coco_mini.register_all_coco_mini()  # idempotent: no "already registered" error
    with pytest.raises(FileNotFoundError) as e:
        DatasetCatalog.get("coco_mini_voc_val_sem_seg")
    assert str(tmp_path / "missing") in str(e.value) and coco_mini.COCO_MINI_ENV in str(e.value)


def test_loads_small_copy_and_drops_unlabelled(monkeypatch, tmp_path, caplog):
    root = tmp_path / "coco_mini"
    _make_coco_mini(root, train={"a": [15], "b": [], "c": [8, 12]}, val={"d": [], "e": [20]})
    monkeypatch.setenv(coco_mini.COCO_MINI_ENV, str(root))
    with caplog.at_level(logging.WARNING):
        wsss = training_dataset_dicts(["coco_mini_voc_train_wsss"])
    assert "1 of 3 images have no foreground class" in caplog.text
    assert wsss == [
        {
            "file_name": str(root / "images" / "a.jpg"),
            "image_id": "a",
            "height": 20,
            "width": 30,
            "cls_labels": [15],
        },
        {
            "file_name": str(root / "images" / "c.jpg"),
            "image_id": "c",
            "height": 22,
            "width": 30,
            "cls_labels": [8, 12],
        },
    ]
    train_seg = DatasetCatalog.get("coco_mini_voc_train_sem_seg")
    assert [d["image_id"] for d in train_seg] == ["a", "c"]
    assert train_seg[1]["sem_seg_file_name"] == str(root / "masks_voc21" / "c.png")
    val = DatasetCatalog.get("coco_mini_voc_val_sem_seg")  # background-only images are kept
    assert [(d["image_id"], d["cls_labels"]) for d in val] == [("d", []), ("e", [20])]


def test_wrong_label_set_is_rejected(monkeypatch, tmp_path):
    root = tmp_path / "coco_mini"
    _make_coco_mini(root, train={"a": [1]}, val={"b": [1]})
    (root / "classes_voc21.txt").write_text("background\nperson\n")  # the COCO-80 file, say
    monkeypatch.setenv(coco_mini.COCO_MINI_ENV, str(root))
    with pytest.raises(ValueError, match="classes_voc21.txt"):
        DatasetCatalog.get("coco_mini_voc_train_wsss")


def _real_root():
    try:
        return coco_mini.coco_mini_root()
    except FileNotFoundError:
        return None


@pytest.mark.coco_mini
@pytest.mark.skipif(
    _real_root() is None, reason="coco_mini absent (../shared/data/coco_mini or $BMP_COCO_MINI)"
)
def test_real_coco_mini_counts_and_labels_match_masks(caplog):
    with caplog.at_level(logging.WARNING):
        wsss = training_dataset_dicts(["coco_mini_voc_train_wsss"])
        train_seg = DatasetCatalog.get("coco_mini_voc_train_sem_seg")
    val = DatasetCatalog.get("coco_mini_voc_val_sem_seg")
    assert "67 of 314 images have no foreground class" in caplog.text
    assert "excluding 67 of 314" in caplog.text  # the masked twin holds the same images
    assert len(wsss) == len(train_seg) == 314 - 67 and len(val) == 82
    assert all("sem_seg_file_name" not in d and d["cls_labels"] for d in wsss)
    assert [d["image_id"] for d in wsss] == [d["image_id"] for d in train_seg]
    assert sum(not d["cls_labels"] for d in val) == 12
    for d in train_seg[:4] + val[:4]:
        with Image.open(d["file_name"]) as im:
            assert im.size == (d["width"], d["height"])
        mask = np.asarray(Image.open(d["sem_seg_file_name"]))
        assert mask.shape == (d["height"], d["width"])
        present = sorted(set(np.unique(mask).tolist()) - {0, 255})
        assert present == d["cls_labels"], d["image_id"]
        assert os.path.basename(d["file_name"]) == d["image_id"] + ".jpg"
