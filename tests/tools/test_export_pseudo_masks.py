"""tools/export_pseudo_masks.py on a tiny synthetic split: same mIoU as the seed evaluator,
PNGs detectron2 reads back as the same labels, resumable, and settings-safe."""

import importlib.util
import os
import re

import numpy as np
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import DatasetCatalog, DatasetMapper
from detectron2.modeling import build_model
from PIL import Image

from bmp.config import load_config
from bmp.data import SemSegEvalMapper
from bmp.data.datasets.register_pseudo_masks import IDS_DIR, PALETTE_DIR, register_pseudo_masks
from bmp.data.synthetic import ensure_synthetic_wsss
from bmp.evaluation import SeedEvaluator
from bmp.evaluation.crf import crf_available

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = os.path.join(ROOT, "configs", "synthetic", "bmp_mit_tiny.yaml")
_spec = importlib.util.spec_from_file_location(
    "export_pseudo_masks", os.path.join(ROOT, "tools", "export_pseudo_masks.py")
)
tool = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tool)

SPLIT = "synthetic_wsss_train_sem_seg"
FAST = ["MODEL.BMP.PSEUDO.SCALES", "[1.0]"]


@pytest.fixture
def setup(datasets_root, tmp_path):
    ensure_synthetic_wsss(str(datasets_root / "synthetic_wsss"), num_train=4, num_val=1)
    cfg = load_config(TINY, FAST)
    torch.manual_seed(3)
    DetectionCheckpointer(build_model(cfg), save_dir=str(tmp_path)).save("w")
    return str(tmp_path / "w.pth"), tmp_path / "export"


def _run(weights, out, *extra):
    args = ["--config-file", TINY, "--dataset", SPLIT, "--output-dir", str(out), "--no-progress"]
    return tool.main([*args, *extra, "MODEL.WEIGHTS", weights, *FAST])


def _reference(weights, seed):
    """Seeds straight from the model, scored by the SeedEvaluator (what evaluation reports)."""
    cfg = load_config(TINY, ["MODEL.WEIGHTS", weights, *FAST])
    model = tool.build_model(cfg)
    mapper = SemSegEvalMapper(cfg, False)
    evaluator = SeedEvaluator(SPLIT, seed_types=[seed], distributed=False)
    evaluator.reset()
    seeds = {}
    with torch.no_grad():
        for d in DatasetCatalog.get(SPLIT):
            inp = mapper(d)
            out = model([inp])
            evaluator.process([inp], out)
            seeds[d["image_id"]] = out[0]["seeds"][seed].numpy()
    return evaluator.evaluate()[f"seed_{seed}"]["mIoU"], seeds


def test_export_matches_seed_evaluator_and_detectron2_reads_it(setup, capsys):
    weights, out = setup
    assert _run(weights, out, "--seed", "bsp") == 0
    printed = capsys.readouterr().out
    miou = float(re.search(r"mIoU (\d+\.\d+)", printed).group(1))
    ref_miou, ref_seeds = _reference(weights, "bsp")
    assert miou == pytest.approx(ref_miou, abs=0.005)

    palette_png = Image.open(out / PALETTE_DIR / "train_00000.png")
    assert palette_png.mode == "P" and palette_png.getpalette()[3:6] == [128, 0, 0]  # VOC class 1
    assert palette_png.getpalette()[3 * 255 : 3 * 256] == [224, 224, 192]  # VOC "void"

    # Re-register the export and read it the way detectron2's trainers do.
    name = f"__bmp_pseudo_{out.parent.name}"
    register_pseudo_masks(name, str(out))
    dicts = DatasetCatalog.get(name)
    assert len(dicts) == 4 and all(d["sem_seg_file_name"].endswith(".png") for d in dicts)
    mapper = DatasetMapper(is_train=True, augmentations=[], image_format="RGB")
    evaluator = SeedEvaluator(SPLIT, seed_types=["bsp"], distributed=False)
    evaluator.reset()
    for d in dicts:
        labels = mapper(dict(d))["sem_seg"].numpy()
        np.testing.assert_array_equal(labels, ref_seeds[d["image_id"]])
        np.testing.assert_array_equal(
            np.asarray(Image.open(out / PALETTE_DIR / f"{d['image_id']}.png")), labels
        )
        evaluator.process([{"file_name": d["file_name"]}], [{"seeds": {"bsp": labels}}])
    assert evaluator.evaluate()["seed_bsp"]["mIoU"] == pytest.approx(ref_miou, abs=1e-9)


def test_resume_skips_valid_pngs_and_redoes_broken_ones(setup, capsys):
    weights, out = setup
    assert _run(weights, out, "--seed", "cam") == 0
    capsys.readouterr()
    stamp = os.path.getmtime(out / IDS_DIR / "train_00001.png")
    (out / IDS_DIR / "train_00002.png").write_bytes(b"\x89PNG truncated")
    assert _run(weights, out, "--seed", "cam") == 0
    printed = capsys.readouterr().out
    assert "3 of 4 images already exported and valid" in printed and "1 written" in printed
    assert os.path.getmtime(out / IDS_DIR / "train_00001.png") == stamp
    assert np.asarray(Image.open(out / IDS_DIR / "train_00002.png")).ndim == 2


def test_another_seed_in_the_same_folder_is_refused(setup, capsys):
    weights, out = setup
    assert _run(weights, out, "--seed", "cam") == 0
    assert _run(weights, out, "--seed", "par") == 2
    err = capsys.readouterr().err
    assert "holds a different export (seed: 'cam' -> 'par')" in err and "--overwrite" in err


def test_split_without_labels_is_refused(setup, capsys):
    weights, out = setup
    args = ["--config-file", TINY, "--dataset", "voc_2012_test", "--output-dir", str(out)]
    assert tool.main([*args, "MODEL.WEIGHTS", weights]) == 2
    assert "error:" in capsys.readouterr().err


@pytest.mark.skipif(
    not crf_available(), reason="pydensecrf2 not installed: pip install -e '.[crf]'"
)
def test_crf_export_keeps_classes_and_uncertain_pixels(setup, capsys):
    weights, out = setup
    assert _run(weights, out, "--seed", "par", "--crf") == 0
    assert "par + CRF" in capsys.readouterr().out
    _, ref_seeds = _reference(weights, "par")
    for d in DatasetCatalog.get(SPLIT):
        labels = np.asarray(Image.open(out / IDS_DIR / f"{d['image_id']}.png"))
        assert set(np.unique(labels)) <= {0, 255, *d["cls_labels"]}
        np.testing.assert_array_equal(labels == 255, ref_seeds[d["image_id"]] == 255)


def test_settings_cover_the_config_and_the_weights_file(tmp_path):
    from argparse import Namespace

    from bmp.config import load_config

    weights = tmp_path / "w.pth"
    weights.write_bytes(b"x")
    cfg = load_config(TINY, ["MODEL.WEIGHTS", str(weights)])
    args = Namespace(dataset="d", seed="bsp")
    base = tool.export_settings(args, cfg, None)
    other = load_config(TINY, ["MODEL.WEIGHTS", str(weights), "MODEL.BMP.BSP.SIGMA_C", "0.4"])
    assert tool.export_settings(args, other, None)["config_sha1"] != base["config_sha1"]
    weights.write_bytes(b"retrained")  # same path, new contents
    assert tool.export_settings(args, cfg, None)["weights_file"] != base["weights_file"]


def test_masks_without_info_or_an_overwrite_are_never_mixed(tmp_path):
    (tmp_path / "SegmentationClass").mkdir()
    (tmp_path / "SegmentationClass" / "a.png").write_bytes(b"png")
    with pytest.raises(ValueError, match="no export_info.json"):
        tool.check_resumable(str(tmp_path), {"seed": "par"}, overwrite=False)
    tool.check_resumable(str(tmp_path), {"seed": "par"}, overwrite=True)
    assert not (tmp_path / "SegmentationClass").exists()  # emptied before anything is written


def test_weights_that_name_code_are_refused(setup, crafted_weights, capsys):
    _, out = setup
    files = crafted_weights({"unused.weight": torch.ones(1)})
    assert _run(str(files.pth), out) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "refused to unpickle 'posix.mkdir'" in err
    assert not files.marker.exists() and not out.exists()
