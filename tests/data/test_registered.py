"""Any registered dataset: instance JSON, semantic masks, tags; labels, ground truth, errors."""

import json
import logging
import uuid

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_sem_seg, register_coco_instances
from detectron2.evaluation import SemSegEvaluator
from PIL import Image

from bmp.config import ConfigError, check_config, load_config
from bmp.data import SemSegEvalMapper, WSSSDatasetMapper
from bmp.data.datasets import register_image_labels
from bmp.data.registered import (
    bmp_dataset_dicts,
    bmp_metadata,
    semantic_view,
    training_dataset_dicts,
)
from bmp.engine.trainer import BMPTrainer
from bmp.evaluation import SemSegSubmissionWriter
from bmp.evaluation.classification_evaluation import ClassificationEvaluator
from bmp.evaluation.sem_seg_evaluation import GroundTruthSemSegEvaluator

TINY = "configs/synthetic/bmp_mit_tiny.yaml"
TRAIN_KEYS = {"image", "cls_label", "valid_mask", "height", "width", "file_name", "image_id"}
EXPECTED_TRAIN_LABELS = {"t0": [1], "t1": [2], "t2": [1, 2], "t3": [], "t4": [1], "t5": [2]}


def _name(kind: str) -> str:
    return f"own_{kind}_{uuid.uuid4().hex[:8]}"


def _coco(root, split="train"):
    name = _name(f"coco_{split}")
    register_coco_instances(name, {}, str(root / f"{split}.json"), str(root / "images"))
    return name


def _masks(root, split="train", classes=("background", "cat", "dog"), **meta):
    name = _name(f"masks_{split}")
    m, i = str(root / "masks" / split), str(root / "images" / split)
    DatasetCatalog.register(name, lambda: load_sem_seg(m, i))
    MetadataCatalog.get(name).set(stuff_classes=list(classes), ignore_label=255, **meta)
    return name


def _stem(d):
    return d["file_name"].rsplit("/", 1)[-1].split(".")[0]


def _cfg(*opts):
    return load_config(TINY, ["MODEL.BMP.NUM_CLASSES", "2", *opts], freeze=False)


def test_coco_instances_labels_exclude_crowd_and_ground_truth_follows_the_rule(
    own_data, own_data_masks
):
    name = _coco(own_data)
    dicts = bmp_dataset_dicts(name)
    assert {_stem(d): d["cls_labels"] for d in dicts} == EXPECTED_TRAIN_LABELS
    view = semantic_view(name)
    assert view.class_names == ("background", "cat", "dog")  # COCO ids 17, 18 -> 1, 2
    assert view.source == "instances" and view.evaluation == "sem_seg"
    mapper = SemSegEvalMapper(_cfg(), False, dataset_name=name)
    for d in dicts:  # polygons, RLE, crowd (255) and overlap (the smaller dog on the cat)
        out = mapper(d)
        expected = own_data_masks[d["file_name"].split("images/")[1]]
        np.testing.assert_array_equal(out["sem_seg"].numpy(), expected)
        assert out["cls_label"].tolist() == [float(c in d["cls_labels"]) for c in (1, 2)]
    meta = bmp_metadata(name)
    assert meta.stuff_classes == ["background", "cat", "dog"] and meta.ignore_label == 255
    assert meta.evaluator_type == "sem_seg" and len(meta.stuff_colors) == 3


def test_dicts_holding_dataset_ids_are_read_through_the_metadata_map(own_data):
    raw = json.loads((own_data / "train.json").read_text())
    files = {im["id"]: str(own_data / "images" / im["file_name"]) for im in raw["images"]}
    dicts = [{"file_name": files[i], "image_id": i, "height": 40, "width": 48,
              "annotations": [{"category_id": a["category_id"], "iscrowd": a["iscrowd"],
                               "segmentation": a["segmentation"]}
                              for a in raw["annotations"] if a["image_id"] == i]}
             for i in files]  # fmt: skip
    name = _name("raw_ids")
    DatasetCatalog.register(name, lambda: dicts)
    MetadataCatalog.get(name).set(
        thing_classes=["cat", "dog"], thing_dataset_id_to_contiguous_id={17: 0, 18: 1}
    )
    assert {_stem(d): d["cls_labels"] for d in bmp_dataset_dicts(name)} == EXPECTED_TRAIN_LABELS
    bad = _name("bad_ids")
    dicts_bad = [dict(dicts[0], annotations=[{"category_id": 99, "iscrowd": 0}])]
    DatasetCatalog.register(bad, lambda: dicts_bad)
    MetadataCatalog.get(bad).set(thing_classes=["cat", "dog"])
    with pytest.raises(ValueError, match=r"category_id 99 \(e\.g\. in '.*t0\.jpg'\)"):
        bmp_dataset_dicts(bad)


def test_empty_images_follow_filter_empty_annotations(own_data, caplog):
    name = _coco(own_data)
    with caplog.at_level(logging.WARNING):
        kept = training_dataset_dicts([name], filter_empty=True)
    assert sorted(_stem(d) for d in kept) == ["t0", "t1", "t2", "t4", "t5"]
    assert "1 of 6 images have no foreground class" in caplog.text
    negatives = training_dataset_dicts([name], filter_empty=False)
    assert len(negatives) == 6
    out = WSSSDatasetMapper(_cfg(), is_train=True)(
        next(d for d in negatives if not d["cls_labels"])
    )
    assert out["cls_label"].tolist() == [0.0, 0.0]
    # The loader honours detectron2's key.
    from bmp.data.train_loader import build_resumable_train_loader

    cfg = _cfg("DATASETS.TRAIN", f"('{name}',)", "DATALOADER.FILTER_EMPTY_ANNOTATIONS", "False")
    assert len(build_resumable_train_loader(cfg, lambda d: d).dataset) == 6
    cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS = True
    assert len(build_resumable_train_loader(cfg, lambda d: d).dataset) == 5


@pytest.mark.parametrize("source", ["coco", "masks", "tags"])
def test_the_training_mapper_never_emits_a_mask_or_polygon(own_data, source):
    if source == "coco":
        name = _coco(own_data)
    elif source == "masks":
        name = _masks(own_data)
    else:
        name = _name("tags")
        register_image_labels(name, str(own_data / "images/train"),
                              str(own_data / "tags_train.txt"), ["cat", "dog"])  # fmt: skip
    dicts = training_dataset_dicts([name])
    assert {_stem(d): d["cls_labels"] for d in dicts} == {
        k: v for k, v in EXPECTED_TRAIN_LABELS.items() if v
    }
    mapper = WSSSDatasetMapper(_cfg(), is_train=True)
    for d in dicts:
        assert set(mapper(d)) == TRAIN_KEYS  # no "sem_seg", no "instances", no annotations


def test_masks_background_is_moved_to_zero_and_labels_are_read_once(
    own_data, own_data_masks, monkeypatch
):
    # The same masks, with the class list written cat, background, dog: ids 0 <-> 1 swap.
    for png in (own_data / "masks" / "train").glob("*.png"):
        m = np.array(Image.open(png))
        swapped = np.where(m == 0, 1, np.where(m == 1, 0, m)).astype(np.uint8)
        Image.fromarray(swapped).save(png)
    name = _masks(own_data, classes=("cat", "background", "dog"))
    import bmp.data.registered as registered

    reads = []
    real = registered.read_sem_seg
    monkeypatch.setattr(
        registered, "read_sem_seg", lambda *a, **k: reads.append(a[0]) or real(*a, **k)
    )
    dicts = bmp_dataset_dicts(name)
    assert {_stem(d): d["cls_labels"] for d in dicts} == EXPECTED_TRAIN_LABELS
    assert bmp_dataset_dicts(name)[0]["cls_labels"] == dicts[0]["cls_labels"]
    assert len(reads) == 6  # once per mask, not per call (or epoch)
    assert semantic_view(name).class_names == ("background", "cat", "dog")
    mapper = SemSegEvalMapper(_cfg(), False, dataset_name=name)
    for d in dicts:
        expected = own_data_masks["train/" + _stem(d) + ".jpg"]
        np.testing.assert_array_equal(mapper(d)["sem_seg"].numpy(), expected)
    # The same files under another class list are read again, not taken from the cache: with
    # no move, the swapped background (id 1) reads as "cat", so the empty t3 is all "cat".
    unmoved = _masks(own_data, classes=("background", "cat", "dog"))
    assert {_stem(d): d["cls_labels"] for d in bmp_dataset_dicts(unmoved)}["t3"] == [1]
    keyed = _masks(own_data, classes=("cat", "void", "dog"), background_id=1)
    assert semantic_view(keyed).class_names == ("background", "cat", "dog")
    refused = _masks(own_data, classes=("cat", "void", "dog"))
    with pytest.raises(ValueError, match=r"has no background class.*'background'.*background_id"):
        bmp_dataset_dicts(refused)


def test_image_labels_format_and_its_errors(own_data):
    name = _name("tags")
    images, tags = own_data / "images/train", own_data / "tags_train.txt"
    register_image_labels(name, str(images), str(tags), ["background", "cat", "dog"])
    assert MetadataCatalog.get(name).stuff_classes == ["background", "cat", "dog"]
    dicts = DatasetCatalog.get(name)
    assert {_stem(d): d["cls_labels"] for d in dicts} == EXPECTED_TRAIN_LABELS
    assert semantic_view(name).evaluation == "classification"

    def load(text, classes=("cat", "dog", "potted plant")):
        tags.write_text(text)
        n = _name("tags_bad")
        register_image_labels(n, str(images), str(tags), list(classes))
        return DatasetCatalog.get(n)

    assert load("t0.jpg,potted plant, cat\n")[0]["cls_labels"] == [1, 3]
    with pytest.raises(FileNotFoundError, match=r"tags_train\.txt' line 2: image 'nope\.jpg'"):
        load("t0.jpg cat\nnope.jpg dog\n")
    with pytest.raises(ValueError, match=r"line 3: class 'dgo' is not in the class list"):
        load("t0.jpg cat\n\nt1.jpg dgo\n")
    with pytest.raises(ValueError, match=r"line 2: image 't0\.jpg' is listed again.*line 1"):
        load("t0.jpg cat\nt0.jpg dog\n")
    with pytest.raises(ValueError, match=r"tags_train\.txt' lists no images"):
        load("# nothing\n")
    with pytest.raises(ValueError, match="given twice"):
        register_image_labels(_name("x"), str(images), str(tags), ["cat", "cat"])


def test_bad_instance_input_is_one_line_naming_the_file(own_data):
    def broken(tag, edit):
        data = json.loads((own_data / "train.json").read_text())
        edit(data)
        (own_data / f"{tag}.json").write_text(json.dumps(data))
        name = _name(tag)
        register_coco_instances(name, {}, str(own_data / f"{tag}.json"), str(own_data / "images"))
        return name

    name = broken("bad_cat", lambda data: data["annotations"][0].update(category_id=99))
    with pytest.raises(ValueError, match=r"bad_cat\.json'.*category_id=99.*'categories'"):
        bmp_dataset_dicts(name)
    name = broken("bad_image", lambda data: data["images"][1].update(file_name="train/no.jpg"))
    with pytest.raises(FileNotFoundError, match=r"1 of its images do not exist.*no\.jpg"):
        bmp_dataset_dicts(name)
    name = broken("bad_size", lambda data: data["images"][0].update(height=41))
    d = bmp_dataset_dicts(name)[0]
    with pytest.raises(ValueError, match=r"t0\.jpg' is 40x48 .*says 41x48.*Fix"):
        SemSegEvalMapper(_cfg(), False, dataset_name=name)(d)


def test_scoring_matches_detectron2s_evaluator_and_each_split_gets_its_evaluators(own_data):
    # On masks in BMP ids, the evaluator reads what the stock one reads from the files.
    name = _masks(own_data, split="val", evaluator_type="sem_seg")
    dicts = bmp_dataset_dicts(name)
    for d, (h, w) in zip(dicts, [(40, 48)] * len(dicts)):
        d.update(height=h, width=w)
    mapper = SemSegEvalMapper(_cfg(), False, dataset_name=name)
    ours, stock = GroundTruthSemSegEvaluator(name, distributed=False), SemSegEvaluator(
        name, distributed=False
    )
    torch.manual_seed(0)
    for ev in (ours, stock):
        ev.reset()
    for d in dicts:
        inp = mapper(d)
        out = {"sem_seg": torch.randn(3, 40, 48)}
        ours.process([inp], [out])
        stock.process([{"file_name": d["file_name"]}], [out])
    assert ours.evaluate() == stock.evaluate()

    cfg = _cfg()
    kinds = {
        "coco": _coco(own_data, "val"),
        "tags": _name("tags"),
        "none": _name("none"),
        "server": _name("server"),
    }
    register_image_labels(kinds["tags"], str(own_data / "images/val"),
                          str(own_data / "tags_val.txt"), ["cat", "dog"])  # fmt: skip
    for key in ("none", "server"):
        img = str(own_data / "images/val/v0.jpg")
        DatasetCatalog.register(kinds[key], lambda f=img: [{"file_name": f}])
        MetadataCatalog.get(kinds[key]).set(
            stuff_classes=["background", "cat", "dog"], stuff_colors=[[0, 0, 0]] * 3
        )
    MetadataCatalog.get(kinds["server"]).set(evaluator_type="voc_submission")
    types = {
        k: [type(e).__name__ for e in BMPTrainer.build_evaluator(cfg, n)._evaluators]
        for k, n in kinds.items()
        if k != "none"
    }
    assert "GroundTruthSemSegEvaluator" in types["coco"] and "SeedEvaluator" in types["coco"]
    assert types["tags"] == ["EvalProgressBar", "OutputGatedEvaluator"]
    assert types["server"] == ["EvalProgressBar", SemSegSubmissionWriter.__name__]
    with pytest.raises(ValueError, match=r"nothing to score against.*voc_submission"):
        BMPTrainer.build_evaluator(cfg, kinds["none"])
    assert isinstance(
        BMPTrainer.build_evaluator(cfg, kinds["tags"])._evaluators[1]._inner,
        ClassificationEvaluator,
    )


def test_num_classes_follows_the_training_dataset(own_data):
    name = _coco(own_data)

    def config(k):
        opts = ["DATASETS.TRAIN", f"('{name}',)", "DATASETS.TEST", "()"]
        return load_config(TINY, opts + ["MODEL.BMP.NUM_CLASSES", k])

    cfg = config("-1")
    assert cfg.MODEL.BMP.NUM_CLASSES == 2 and cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES == 3
    with pytest.raises(ConfigError, match=f"NUM_CLASSES is 5, but dataset '{name}'.* has 2"):
        check_config(config("5"))
    with pytest.raises(ConfigError, match="'not_registered' in DATASETS.TRAIN is not registered"):
        load_config(TINY, ["DATASETS.TRAIN", "('not_registered',)", "MODEL.BMP.NUM_CLASSES", "-1"])
