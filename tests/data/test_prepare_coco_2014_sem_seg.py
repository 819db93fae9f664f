"""datasets/prepare_coco_2014_sem_seg.py on a tiny fake COCO tree."""

import importlib.util
import json
import pathlib
import sys

import numpy as np
import pytest
from PIL import Image

SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "datasets" / "prepare_coco_2014_sem_seg.py"
H, W = 10, 12


def _load_script():
    spec = importlib.util.spec_from_file_location("prepare_coco_2014_sem_seg", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # worker processes look the job function up by module name
    spec.loader.exec_module(mod)
    return mod


def _box(x0, y0, x1, y1):
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def _rle_rows(rows):
    """Uncompressed RLE (column-major counts) of a mask covering the given full rows."""
    m = np.zeros((H, W), np.uint8)
    m[rows] = 1
    flat = m.flatten(order="F")
    counts, cur, n = [], 0, 0
    for v in flat:
        if v != cur:
            counts.append(n)
            cur, n = v, 0
        n += 1
    counts.append(n)
    return {"size": [H, W], "counts": counts}


@pytest.fixture
def coco(tmp_path):
    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    (root / "val2014").mkdir()
    images = []
    for i, name in enumerate(["COCO_val2014_1.jpg", "COCO_val2014_2.jpg", "COCO_val2014_3.jpg"]):
        Image.new("RGB", (W, H)).save(root / "val2014" / name)
        images.append({"id": i + 1, "file_name": name, "height": H, "width": W})
    anns = [
        # Image 1: a big "cat 5" box, a small "cat 90" box inside it (small stays on top), a
        # crowd band (rows 8-9) and a "cat 1" object partly inside the crowd.
        {"id": 10, "image_id": 1, "category_id": 5, "segmentation": _box(0, 0, 8, 6),
         "area": 48.0, "iscrowd": 0},
        {"id": 11, "image_id": 1, "category_id": 90, "segmentation": _box(2, 2, 4, 4),
         "area": 4.0, "iscrowd": 0},
        {"id": 12, "image_id": 1, "category_id": 1, "segmentation": _rle_rows([8, 9]),
         "area": 24.0, "iscrowd": 1},
        {"id": 13, "image_id": 1, "category_id": 1, "segmentation": _box(10, 7, 12, 10),
         "area": 6.0, "iscrowd": 0},
        # Image 3: only a crowd region -> no label -> skipped, and said so.
        {"id": 14, "image_id": 3, "category_id": 5, "segmentation": _rle_rows([0]),
         "area": 12.0, "iscrowd": 1},
    ]  # fmt: skip
    cats = [{"id": 90, "name": "toothbrush"}, {"id": 1, "name": "person"}, {"id": 5, "name": "x"}]
    data = {"images": images, "annotations": anns, "categories": cats}
    (root / "annotations" / "instances_val2014.json").write_text(json.dumps(data))
    return root


@pytest.mark.parametrize("workers", [1, 2])
def test_masks_labels_lists(coco, workers):
    mod = _load_script()
    counts = mod.build_split(str(coco), "val2014", workers=workers, progress=False)
    assert counts == {"kept": 1, "skipped": 2}
    out = coco / "sem_seg_2014"
    mask = np.asarray(Image.open(out / "val2014" / "COCO_val2014_1.png"))
    # Contiguous ids by category id: 1 -> 1, 5 -> 2, 90 -> 3.
    assert mask[1, 1] == 2 and mask[3, 3] == 3  # small object on top of the large one
    assert mask[8, 0] == 255 and mask[9, 11] == 1  # crowd ignored, object inside it kept
    assert mask[0, 11] == 0
    assert (out / "val2014.txt").read_text() == "COCO_val2014_1\n"
    assert (out / "val2014_skipped.txt").read_text() == (
        "COCO_val2014_2 no_annotations\nCOCO_val2014_3 only_crowd_or_hidden_objects\n"
    )
    assert (out / "cls_labels_val2014.txt").read_text() == "COCO_val2014_1 1 2 3\n"
    cats = json.loads((out / "categories.json").read_text())
    assert [(c["id"], c["contiguous_id"]) for c in cats] == [(1, 1), (5, 2), (90, 3)]

    before = (out / "val2014" / "COCO_val2014_1.png").read_bytes()
    mod.build_split(str(coco), "val2014", workers=1, progress=False)  # idempotent
    assert (out / "val2014" / "COCO_val2014_1.png").read_bytes() == before


def test_missing_inputs_are_named(coco):
    mod = _load_script()
    with pytest.raises(FileNotFoundError, match=r"instances_train2014\.json"):
        mod.check_inputs(str(coco), ["train2014"])
    (coco / "val2014" / "COCO_val2014_2.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"COCO_val2014_2\.jpg"):
        mod.build_split(str(coco), "val2014", progress=False)
    assert mod.main(["--coco-root", str(coco), "--splits", "train2014"]) == 1
