"""One split as detectron2 dicts: lazy root, label files, empty images, clear errors."""

import logging
import uuid

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image

from bmp.data.datasets import (
    SplitLayout,
    load_dataset_dicts,
    register_split,
    registered_bmp_datasets,
)
from bmp.data.label_files import read_image_labels, write_image_labels
from bmp.data.registered import training_dataset_dicts

CLASSES = ["background", "a", "b"]


def _make_tree(root, stems, labels, with_masks=True):
    (root / "toy" / "img").mkdir(parents=True)
    (root / "toy" / "mask").mkdir()
    for s in stems:
        Image.new("RGB", (5, 4)).save(root / "toy" / "img" / f"{s}.jpg")
        if with_masks:
            Image.fromarray(np.zeros((4, 5), np.uint8)).save(root / "toy" / "mask" / f"{s}.png")
    (root / "toy" / "list.txt").write_text("".join(s + "\n" for s in stems))
    write_image_labels(str(root / "toy" / "labels.txt"), labels)


COLORS = [[0, 0, 0], [255, 0, 0], [0, 255, 0]]


def _register(require_labels=False, **kw):
    name = f"toy_{uuid.uuid4().hex[:8]}"
    args = dict(image_dir="toy/img", split_file="toy/list.txt", label_file="toy/labels.txt")
    args.update(kw)
    register_split(name, SplitLayout(**args), CLASSES, COLORS, require_labels=require_labels)
    return name


def test_label_file_format(tmp_path):
    txt = tmp_path / "l.txt"
    txt.write_text("x 2 1\ny\n# comment\nz 2 2\n")
    assert read_image_labels(str(txt), 2) == {"x": [1, 2], "y": [], "z": [2]}
    write_image_labels(str(tmp_path / "w.txt"), {"b": [2], "a": [1, 2]})
    assert (tmp_path / "w.txt").read_text() == "a 1 2\nb 2\n"
    txt.write_text("x 1\ny 3\n")
    with pytest.raises(ValueError, match=r"l\.txt' line 2.*class id 3.*1\.\.2"):
        read_image_labels(str(txt), 2)
    txt.write_text("x 0\n")
    with pytest.raises(ValueError, match=r"class id 0"):
        read_image_labels(str(txt), 2)
    txt.write_text("x 1\nx 2\n")
    with pytest.raises(ValueError, match="repeated"):
        read_image_labels(str(txt), 2)


def test_root_is_read_at_load_time(tmp_path, monkeypatch):
    name = _register(mask_dir="toy/mask")  # registered before the folder exists
    root = tmp_path / "late"
    _make_tree(root, ["p", "q"], {"p": [1], "q": [1, 2]})
    monkeypatch.setenv("DETECTRON2_DATASETS", str(root))
    dicts = DatasetCatalog.get(name)
    assert [d["image_id"] for d in dicts] == ["p", "q"]
    d = dicts[1]
    assert d["file_name"] == str(root / "toy" / "img" / "q.jpg")
    assert d["sem_seg_file_name"] == str(root / "toy" / "mask" / "q.png")
    assert (d["height"], d["width"], d["cls_labels"]) == (4, 5, [1, 2])
    meta = MetadataCatalog.get(name)
    assert meta.evaluator_type == "sem_seg" and meta.ignore_label == 255
    assert meta.stuff_classes == CLASSES and meta.stuff_colors == COLORS
    assert name in registered_bmp_datasets()
    labels_only = MetadataCatalog.get(_register())
    assert not hasattr(labels_only, "evaluator_type")  # no masks: nothing to evaluate


def test_training_split_filters_unlabelled_as_detectron2_says(datasets_root, caplog):
    _make_tree(datasets_root, ["p", "q", "r"], {"p": [1], "q": [], "r": [2]})
    name = _register(require_labels=True)
    dicts = DatasetCatalog.get(name)  # the split keeps every listed image ...
    assert [(d["image_id"], d["cls_labels"]) for d in dicts] == [("p", [1]), ("q", []), ("r", [2])]
    assert all("sem_seg_file_name" not in d for d in dicts)
    with caplog.at_level(logging.WARNING):  # ... training leaves the empty one out, and says so
        train = training_dataset_dicts([name], filter_empty=True)
    assert [d["image_id"] for d in train] == ["p", "r"]
    assert f"'{name}': 1 of 3 images have no foreground class" in caplog.text
    assert "FILTER_EMPTY_ANNOTATIONS" in caplog.text
    kept = training_dataset_dicts([name], filter_empty=False)  # negatives kept
    assert [(d["image_id"], d["cls_labels"]) for d in kept] == [("p", [1]), ("q", []), ("r", [2])]
    write_image_labels(str(datasets_root / "toy" / "labels.txt"), {"p": [], "q": [], "r": []})
    with pytest.raises(ValueError, match=f"'{name}': no image has a foreground class"):
        training_dataset_dicts([name], filter_empty=True)


def test_errors(datasets_root):
    with pytest.raises(KeyError, match=r"not_a_dataset.*voc_2012_val_sem_seg"):
        load_dataset_dicts("not_a_dataset")
    name = _register()
    with pytest.raises(FileNotFoundError, match=r"list\.txt.*not found.*datasets root"):
        DatasetCatalog.get(name)
    _make_tree(datasets_root, ["p", "q"], {"p": [1]})
    with pytest.raises(ValueError, match=r"1 images.*no entry.*labels\.txt.*q"):
        DatasetCatalog.get(name)
    write_image_labels(str(datasets_root / "toy" / "labels.txt"), {"p": [1], "q": [2]})
    (datasets_root / "toy" / "img" / "q.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"1 images.*missing.*q\.jpg"):
        DatasetCatalog.get(name)
    masked = _register(mask_dir="toy/mask", label_file=None)
    (datasets_root / "toy" / "list.txt").write_text("p\n")
    (datasets_root / "toy" / "mask" / "p.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"masks.*p\.png"):
        DatasetCatalog.get(masked)
    (datasets_root / "toy" / "list.txt").write_text("\n")
    with pytest.raises(ValueError, match=r"is empty.*list\.txt"):
        DatasetCatalog.get(name)
    with pytest.raises(ValueError, match="background"):
        register_split("bad_classes", SplitLayout("x", "y"), ["a"], [[0, 0, 0]])
    with pytest.raises(ValueError, match="colours"):
        register_split("bad_colours", SplitLayout("x", "y"), CLASSES, COLORS[:2])
