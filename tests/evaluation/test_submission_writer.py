"""Submission PNGs for splits without ground truth (VOC test)."""

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image

from bmp.engine.trainer import BMPTrainer
from bmp.evaluation import VOC_SUBMISSION_DIR, SemSegSubmissionWriter
from bmp.evaluation.progress import EvalProgressBar

COLORS = [[0, 0, 0], [128, 0, 0], [0, 128, 0]]


@pytest.fixture
def test_split():
    name = "__bmp_test_submission_split"
    if name not in DatasetCatalog.list():
        DatasetCatalog.register(name, lambda: [{"file_name": "/x/2008_000001.jpg"}])
        MetadataCatalog.get(name).set(
            stuff_classes=["background", "a", "b"], stuff_colors=COLORS,
            evaluator_type="voc_submission",
        )  # fmt: skip
    return name


def test_writes_argmax_as_palette_png(tmp_path, test_split):
    writer = SemSegSubmissionWriter(test_split, str(tmp_path))
    writer.reset()
    logits = torch.zeros(3, 2, 3)
    logits[1, 0, 0] = 5.0  # pixel (0, 0) -> class 1
    logits[2, 1, :] = 5.0  # row 1 -> class 2
    writer.process([{"file_name": "/x/2008_000001.jpg"}], [{"sem_seg": logits}])
    assert writer.evaluate() == {"submission": {"num_images": 1.0}}

    png = Image.open(tmp_path / "2008_000001.png")
    assert png.mode == "P"
    np.testing.assert_array_equal(np.array(png), [[1, 0, 0], [2, 2, 2]])
    assert png.getpalette()[:9] == [0, 0, 0, 128, 0, 0, 0, 128, 0]


def test_missing_palette_or_output_is_an_error(tmp_path, test_split):
    name = "__bmp_test_submission_no_colors"
    if name not in DatasetCatalog.list():
        DatasetCatalog.register(name, lambda: [{"file_name": "/x/2008_000001.jpg"}])
        MetadataCatalog.get(name).set(stuff_classes=["background"])
    with pytest.raises(ValueError, match="stuff_colors"):
        SemSegSubmissionWriter(name, str(tmp_path))
    writer = SemSegSubmissionWriter(test_split, str(tmp_path))
    with pytest.raises(KeyError, match="2008_000002.jpg"):
        writer.process([{"file_name": "2008_000002.jpg"}], [{"cam": torch.zeros(1)}])


def test_trainer_writes_submissions_for_splits_without_ground_truth(tmp_path, test_split):
    from bmp.config import load_config

    cfg = load_config("configs/synthetic/bmp_mit_tiny.yaml", ["OUTPUT_DIR", str(tmp_path)])
    evaluators = BMPTrainer.build_evaluator(cfg, test_split)._evaluators
    assert isinstance(evaluators[0], EvalProgressBar)
    evaluator = evaluators[-1]
    assert isinstance(evaluator, SemSegSubmissionWriter)
    assert evaluator._output_dir == str(tmp_path / "submission" / test_split / VOC_SUBMISSION_DIR)
    # The registered VOC test split says so in its metadata, so it gets the writer too.
    assert MetadataCatalog.get("voc_2012_test").get("evaluator_type") == "voc_submission"
