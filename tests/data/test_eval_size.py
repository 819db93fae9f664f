"""bmp/data/eval_size.py: test size, oversized images and the too-small-image rule."""

import logging
import os

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import (
    DatasetEvaluator,
    DatasetEvaluators,
    SemSegEvaluator,
    inference_on_dataset,
)
from PIL import Image

import bmp  # noqa: F401
from bmp.config import load_config
from bmp.data import SemSegEvalMapper
from bmp.data.eval_size import EvalImageSize, drop_small_images, scaled_size
from bmp.engine.trainer import BMPTrainer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = os.path.join(ROOT, "configs", "synthetic", "bmp_mit_tiny.yaml")


@pytest.mark.parametrize(
    "hw, min_size, max_size, expected",
    [
        ((300, 400), 0, 512, (300, 400)),  # under the cap: unchanged, never enlarged
        ((3000, 4000), 0, 512, (384, 512)),  # long side capped
        ((600, 200), 0, 512, (512, 171)),
        ((300, 400), 600, 1000, (600, 800)),  # detectron2's ResizeShortestEdge
        ((300, 900), 600, 1000, (333, 1000)),
    ],
)
def test_scaled_size(hw, min_size, max_size, expected):
    assert scaled_size(*hw, min_size, max_size) == expected


def _write(path, h, w, value=0):
    Image.fromarray(np.full((h, w, 3), value, np.uint8)).save(path)
    return str(path)


def _mask(path, h, w):
    Image.fromarray(np.zeros((h, w), np.uint8)).save(path)
    return str(path)


def _warnings(caplog, name):
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelname == "WARNING" and name in r.getMessage()
    ]


def test_oversized_image_is_capped_with_one_warning(tmp_path, caplog):
    big = _write(tmp_path / "big.jpg", 1100, 900)
    mid = _write(tmp_path / "mid.jpg", 700, 500)
    size = EvalImageSize(0, 512, 64, "resize")
    with caplog.at_level(logging.WARNING):
        for _ in range(2):  # e.g. two evaluations
            out = size.apply(np.asarray(Image.open(big)), big)
            assert out.shape == (512, 419, 3)
        assert size.apply(np.asarray(Image.open(mid)), mid).shape == (512, 366, 3)
    assert len(_warnings(caplog, "big.jpg")) == 1
    assert "1100x900" in _warnings(caplog, "big.jpg")[0]
    assert _warnings(caplog, "mid.jpg") == []  # resized to the test size, nothing unusual


def test_too_small_image_resized_up_by_the_mapper(tmp_path, caplog):
    cfg = load_config(TINY, ["INPUT.MIN_SIDE_TEST", "64"])
    d = {
        "file_name": _write(tmp_path / "tiny.png", 8, 12, value=90),
        "sem_seg_file_name": _mask(tmp_path / "tiny_mask.png", 8, 12),
    }
    mapper = SemSegEvalMapper(cfg, False)
    with caplog.at_level(logging.WARNING):
        out = mapper(d)
        mapper(d)
    assert tuple(out["image"].shape) == (3, 64, 96)
    assert (out["height"], out["width"]) == (8, 12) and tuple(out["sem_seg"].shape) == (8, 12)
    warned = _warnings(caplog, "tiny.png")
    assert len(warned) == 1 and "MIN_SIDE_TEST" in warned[0]


def test_skip_rule_drops_the_image_with_a_warning(tmp_path, caplog):
    small = {"file_name": _write(tmp_path / "small.png", 8, 8)}
    fine = {"file_name": _write(tmp_path / "fine.png", 80, 70), "height": 80, "width": 70}
    rule = EvalImageSize(0, 512, 64, "skip")
    with caplog.at_level(logging.WARNING):
        kept = drop_small_images([small, fine], rule, "my_split")
    assert kept == [fine]
    warned = _warnings(caplog, "small.png")
    assert len(warned) == 1 and "skipped" in warned[0] and "my_split" in warned[0]
    with pytest.raises(ValueError, match="small.png"):  # mapping it anyway is an error
        rule.apply(np.zeros((8, 8, 3), np.uint8), small["file_name"])
    assert drop_small_images([small, fine], EvalImageSize(0, 512, 64, "resize"), "x") == [
        small,
        fine,
    ]


def test_bad_rule_is_named():
    with pytest.raises(ValueError, match="INPUT.SMALL_TEST_IMAGE"):
        EvalImageSize(0, 512, 64, "enlarge")


@pytest.fixture
def odd_split(tmp_path):
    """A registered split with an 8x8 image next to a normal one."""
    name = f"odd_sizes_{os.getpid()}_{tmp_path.name}"
    dicts = []
    for stem, (h, w) in {"eight": (8, 8), "normal": (72, 80)}.items():
        dicts.append(
            {
                "file_name": _write(tmp_path / f"{stem}.png", h, w, value=120),
                "sem_seg_file_name": _mask(tmp_path / f"{stem}_m.png", h, w),
                "height": h,
                "width": w,
            }
        )
    DatasetCatalog.register(name, lambda: dicts)
    MetadataCatalog.get(name).set(
        stuff_classes=["background"] + [f"c{i}" for i in range(1, 11)],
        ignore_label=255,
        evaluator_type="sem_seg",
    )
    yield name
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


class _Seen(DatasetEvaluator):
    """Records which images reached the evaluators."""

    def reset(self):
        self.names = []

    def process(self, inputs, outputs):
        self.names += [os.path.basename(i["file_name"]) for i in inputs]

    def evaluate(self):
        return {}


@pytest.mark.parametrize(
    "rule, scored", [("resize", ["eight.png", "normal.png"]), ("skip", ["normal.png"])]
)
def test_evaluation_survives_an_8x8_image(odd_split, tmp_path, rule, scored, caplog):
    cfg = load_config(
        TINY,
        [
            "OUTPUT_DIR", str(tmp_path / "out"),
            "INPUT.SMALL_TEST_IMAGE", rule,
            "TEST.BMP.EXTRA_OUTPUTS", "False",
            "DATASETS.TEST", f"('{odd_split}',)",
        ],
    )  # fmt: skip
    model = BMPTrainer.build_model(cfg)
    seen = _Seen()
    evaluator = DatasetEvaluators([SemSegEvaluator(odd_split, distributed=False), seen])
    loader = BMPTrainer.build_test_loader(cfg, odd_split)
    with caplog.at_level(logging.WARNING):
        results = inference_on_dataset(model, loader, evaluator)
    assert np.isfinite(results["sem_seg"]["mIoU"])
    assert sorted(seen.names) == scored
    assert len(_warnings(caplog, "eight.png")) == 1
