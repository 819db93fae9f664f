"""datasets/prepare_voc_aug.py on a tiny fake VOC2012 + SBD tree, then the registered splits."""

import importlib.util
import os
import pathlib

import numpy as np
import pytest
from detectron2.data import DatasetCatalog
from PIL import Image

import bmp  # noqa: F401  (registers the datasets)
from bmp.data.registered import training_dataset_dicts

savemat = pytest.importorskip(
    "scipy.io", reason="the `voc` extra (SciPy, for SBD's .mat files) is not installed"
).savemat

SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "datasets" / "prepare_voc_aug.py"
H, W = 4, 6


def _load_script():
    spec = importlib.util.spec_from_file_location("prepare_voc_aug", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _mask(value, boundary=False):
    m = np.zeros((H, W), np.uint8)
    if value:
        m[1:3, 2:5] = value
    if boundary:
        m[0, :] = 255
    return m


@pytest.fixture
def fake_tree(datasets_root):
    voc = datasets_root / "VOC2012"
    sbd = datasets_root / "benchmark_RELEASE" / "dataset"
    for d in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / d).mkdir(parents=True)
    (sbd / "cls").mkdir(parents=True)
    for s in ("a", "b", "c", "d", "e"):
        Image.new("RGB", (W, H), (90, 90, 90)).save(voc / "JPEGImages" / f"{s}.jpg")
    # VOC: train a, b; val c (VOC's palette PNGs, with a 255 boundary on a).
    pal = [v for i in range(256) for v in (i, 255 - i, i // 2)]
    for s, v, bnd in (("a", 15, True), ("b", 3, False), ("c", 7, False)):
        im = Image.fromarray(_mask(v, bnd))
        im.putpalette(pal)
        im.save(voc / "SegmentationClass" / f"{s}.png")
    (voc / "ImageSets/Segmentation/train.txt").write_text("a\nb\n")
    (voc / "ImageSets/Segmentation/val.txt").write_text("c\n")
    # SBD: train a, d; val c (must be excluded: VOC val), e (only background).
    (sbd / "train.txt").write_text("a\nd\n")
    (sbd / "val.txt").write_text("c\ne\n")
    for s, v in (("a", 1), ("c", 2), ("d", 12), ("e", 0)):
        gt = {"Boundaries": [np.zeros((H, W))], "Segmentation": _mask(v), "CategoriesPresent":
              np.array([v], np.uint8)}  # fmt: skip
        savemat(str(sbd / "cls" / f"{s}.mat"), {"GTcls": gt}, do_compression=(s == "d"))
    return datasets_root


def _snapshot(voc):
    files = sorted((voc / "SegmentationClassAug").iterdir())
    return {f.name: f.read_bytes() for f in files}, (voc / "cls_labels.txt").read_text()


def test_build_and_register(fake_tree, caplog):
    mod = _load_script()
    voc = fake_tree / "VOC2012"
    counts = mod.build(str(voc), str(fake_tree / "benchmark_RELEASE"), progress=False)
    assert counts == {"train_aug": 4, "train": 2, "val": 1}
    assert (voc / "ImageSets/Segmentation/train_aug.txt").read_text().split() == list("abde")
    out = {s: np.asarray(Image.open(voc / "SegmentationClassAug" / f"{s}.png")) for s in "abcde"}
    np.testing.assert_array_equal(out["a"], _mask(15, True))  # VOC's mask wins over SBD's
    np.testing.assert_array_equal(out["d"], _mask(12))  # SBD (compressed .mat)
    np.testing.assert_array_equal(out["c"], _mask(7))
    assert (voc / "cls_labels.txt").read_text() == "a 15\nb 3\nc 7\nd 12\ne\n"

    before = _snapshot(voc)
    assert (
        mod.main(["--voc-root", str(voc), "--sbd-root", str(fake_tree / "benchmark_RELEASE")]) == 0
    )
    assert _snapshot(voc) == before  # idempotent

    train = training_dataset_dicts(["voc_2012_train_aug_wsss"])
    assert [d["image_id"] for d in train] == list("abd")  # e has no foreground: left out, logged
    assert all("sem_seg_file_name" not in d for d in train)
    assert train[2]["cls_labels"] == [12] and (train[2]["height"], train[2]["width"]) == (H, W)
    val = DatasetCatalog.get("voc_2012_val_sem_seg")
    assert [(d["image_id"], d["cls_labels"]) for d in val] == [("c", [7])]
    assert os.path.isfile(val[0]["sem_seg_file_name"])
    assert [d["image_id"] for d in DatasetCatalog.get("voc_2012_train_sem_seg")] == ["a", "b"]


def test_missing_inputs_are_named(fake_tree):
    mod = _load_script()
    voc, sbd = fake_tree / "VOC2012", fake_tree / "benchmark_RELEASE"
    (sbd / "dataset" / "cls" / "d.mat").unlink()
    with pytest.raises(FileNotFoundError, match=r"d\.mat"):
        mod.build(str(voc), str(sbd), progress=False)
    (sbd / "dataset" / "val.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"val\.txt.*SBD"):
        mod.build(str(voc), str(sbd), progress=False)
    assert mod.main(["--voc-root", str(fake_tree / "nowhere"), "--sbd-root", str(sbd)]) == 1


def test_bad_mask_values_are_named(fake_tree):
    mod = _load_script()
    Image.fromarray(_mask(42)).save(fake_tree / "VOC2012" / "SegmentationClass" / "b.png")
    with pytest.raises(ValueError, match=r"b\.png.*42"):
        mod.build(str(fake_tree / "VOC2012"), str(fake_tree / "benchmark_RELEASE"), progress=False)
