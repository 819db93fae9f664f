"""tools/train_second_stage.py hands an exported pseudo-mask folder to DeepLab's train_net."""

import importlib.util
import json
import os
import sys

import numpy as np
import pytest
from PIL import Image

from bmp.data.datasets.register_pseudo_masks import IDS_DIR, INFO_FILE, PALETTE_DIR
from bmp.data.label_png import write_label_png

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(ROOT, "configs", "second_stage", "deeplabv3plus_R_103_voc_pseudo.yaml")
_spec = importlib.util.spec_from_file_location(
    "train_second_stage", os.path.join(ROOT, "tools", "train_second_stage.py")
)
launcher = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(launcher)

# Stands in for detectron2's projects/DeepLab/train_net.py: builds its config the way DeepLab
# does and loads the training set through detectron2's DatasetMapper.
FAKE_TRAIN_NET = """
import json
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, DatasetMapper
from detectron2.projects.deeplab import add_deeplab_config


def main(args):
    cfg = get_cfg()
    add_deeplab_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    dicts = DatasetCatalog.get(cfg.DATASETS.TRAIN[0])
    mapper = DatasetMapper(cfg, is_train=True, augmentations=[])
    labels = [sorted(set(mapper(dict(d))["sem_seg"].unique().tolist())) for d in dicts]
    with open(cfg.OUTPUT_DIR + "/seen.json", "w") as f:
        json.dump({"train": list(cfg.DATASETS.TRAIN), "test": list(cfg.DATASETS.TEST),
                   "num_classes": cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES, "labels": labels}, f)
"""


def _fake_export(folder):
    """Two 8x10 images with pseudo masks (class 15 = person, 255 uncertain)."""
    images = []
    for i in range(2):
        stem = f"img{i}"
        Image.fromarray(np.full((8, 10, 3), 90 * i, np.uint8)).save(folder / f"{stem}.jpg")
        mask = np.zeros((8, 10), np.uint8)
        mask[2:6, 3:7] = 15
        mask[0, :] = 255
        palette = [v for _ in range(256) for v in (i, i, i)]
        write_label_png(str(folder / PALETTE_DIR / f"{stem}.png"), mask, palette)
        write_label_png(str(folder / IDS_DIR / f"{stem}.png"), mask)
        images.append(
            dict(stem=stem, file_name=str(folder / f"{stem}.jpg"), height=8, width=10,
                 cls_labels=[15])
        )  # fmt: skip
    info = dict(
        dataset="voc_2012_train_aug_wsss", seed="bsp", crf=None, weights="w.pth",
        class_names=["background"] + [f"c{i}" for i in range(1, 21)],
        stuff_colors=[[i, i, i] for i in range(21)], ignore_label=255, images=images,
    )  # fmt: skip
    (folder / INFO_FILE).write_text(json.dumps(info))


def test_deeplab_trains_on_the_registered_export(tmp_path, monkeypatch):
    pytest.importorskip("detectron2.projects.deeplab")
    export = tmp_path / "export"
    export.mkdir()
    _fake_export(export)
    fake = tmp_path / "deeplab" / "train_net.py"
    fake.parent.mkdir()
    fake.write_text(FAKE_TRAIN_NET)
    monkeypatch.delenv(launcher.ENV, raising=False)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delitem(sys.modules, "train_net", raising=False)
    code = launcher.main(
        ["--pseudo-masks", str(export), "--deeplab-train-net", str(fake),
         "--config-file", CONFIG, "--num-gpus", "1", "OUTPUT_DIR", str(tmp_path)]
    )  # fmt: skip
    assert code == 0
    seen = json.loads((tmp_path / "seen.json").read_text())
    assert seen["train"] == [launcher.DATASET_NAME] and seen["test"] == ["voc_2012_val_sem_seg"]
    assert seen["num_classes"] == 21
    # detectron2's mapper reads ids, not the palette's luminance.
    assert seen["labels"] == [[0, 15, 255], [0, 15, 255]]


def test_missing_train_net_or_export_is_one_line_error(tmp_path, capsys):
    export = tmp_path / "export"
    export.mkdir()
    code = launcher.main(["--pseudo-masks", str(export), "--deeplab-train-net", "x.py"])
    assert code == 2 and "is not a pseudo-mask export" in capsys.readouterr().err
    _fake_export(export)
    code = launcher.main(["--pseudo-masks", str(export), "--deeplab-train-net", "x.py"])
    assert code == 2 and "projects/DeepLab/train_net.py" in capsys.readouterr().err
