"""TEST.CRF in evaluation: mIoU with and without CRF, CRF-refined submissions, missing extra."""

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image

from bmp.config import load_config
from bmp.engine.trainer import BMPTrainer
from bmp.evaluation import SemSegSubmissionWriter, crf
from bmp.evaluation.crf import CRFParams, crf_available
from bmp.evaluation.crf_evaluator import CRFRefinedEvaluator

needs_crf = pytest.mark.skipif(
    not crf_available(), reason="pydensecrf2 not installed: pip install -e '.[crf]'"
)
TINY = "configs/synthetic/bmp_mit_tiny.yaml"
H, W, EDGE = 24, 48, 20


def _blurry_logits() -> torch.Tensor:
    """Two-class logits whose boundary sits 6 px left of the colour edge, softly."""
    x = torch.arange(W, dtype=torch.float32)
    fg = ((x - 13.5) / 4.0).expand(H, W)
    return torch.stack([torch.zeros(H, W), fg])


def _register_edge_split(tmp_path, evaluator_type="sem_seg"):
    """A registered one-image split: red | blue at column EDGE, ground truth 0 | 1 there."""
    img = np.zeros((H, W, 3), np.uint8)
    img[:, :EDGE] = (200, 30, 30)
    img[:, EDGE:] = (30, 30, 200)
    Image.fromarray(img).save(tmp_path / "edge.png")
    gt = np.zeros((H, W), np.uint8)
    gt[:, EDGE:] = 1
    Image.fromarray(gt).save(tmp_path / "edge_gt.png")
    name = f"__bmp_crf_edge_{tmp_path.name}_{evaluator_type}"
    d = {
        "file_name": str(tmp_path / "edge.png"),
        "sem_seg_file_name": str(tmp_path / "edge_gt.png"),
    }
    d.update(height=H, width=W, image_id="edge")
    DatasetCatalog.register(name, lambda: [dict(d)])
    MetadataCatalog.get(name).set(
        stuff_classes=["background", "thing"],
        stuff_colors=[[0, 0, 0], [128, 0, 0]],
        ignore_label=255,
        evaluator_type=evaluator_type,
    )
    return name, d


@pytest.fixture
def edge_split(tmp_path):
    return _register_edge_split(tmp_path)


def _cfg(tmp_path, *opts):
    opts = ["OUTPUT_DIR", str(tmp_path / "out"), "TEST.BMP.EXTRA_OUTPUTS", "False", *opts]
    return load_config(TINY, opts)


@needs_crf
def test_evaluation_reports_miou_with_and_without_crf(tmp_path, edge_split):
    name, d = edge_split
    cfg = _cfg(tmp_path, "TEST.CRF.ENABLED", "True")
    evaluator = BMPTrainer.build_evaluator(cfg, name)
    evaluator.reset()
    evaluator.process([d], [{"sem_seg": _blurry_logits()}])
    res = evaluator.evaluate()
    assert res["sem_seg"]["mIoU"] < 90.0  # 6 px wrong on 48 columns
    assert res["sem_seg_crf"]["mIoU"] == pytest.approx(100.0)


def test_evaluation_without_crf_has_no_crf_result(tmp_path, edge_split):
    name, d = edge_split
    evaluator = BMPTrainer.build_evaluator(_cfg(tmp_path), name)
    evaluator.reset()
    evaluator.process([d], [{"sem_seg": _blurry_logits()}])
    assert "sem_seg_crf" not in evaluator.evaluate()


@needs_crf
def test_submission_pngs_are_crf_refined(tmp_path):
    name, d = _register_edge_split(tmp_path, evaluator_type="voc_submission")  # PNGs only
    cfg = _cfg(tmp_path, "TEST.CRF.ENABLED", "True")
    evaluator = BMPTrainer.build_evaluator(cfg, name, output_folder=str(tmp_path / "sub"))
    writer = evaluator._evaluators[-1]
    assert isinstance(writer, CRFRefinedEvaluator) and isinstance(
        writer._inner, SemSegSubmissionWriter
    )
    evaluator.reset()
    evaluator.process([d], [{"sem_seg": _blurry_logits()}])
    evaluator.evaluate()
    png = np.array(Image.open(writer._inner._output_dir + "/edge.png"))
    assert (png[:, :EDGE] == 0).all() and (png[:, EDGE:] == 1).all()


@needs_crf
def test_crf_evaluator_checks_prediction_size(edge_split):
    _, d = edge_split
    ev = CRFRefinedEvaluator(SemSegSubmissionWriter.__new__(SemSegSubmissionWriter), CRFParams())
    with pytest.raises(ValueError, match="edge.png.*CRF needs predictions at image size"):
        ev.process([d], [{"sem_seg": torch.zeros(2, H // 2, W // 2)}])


def test_missing_extra_fails_when_evaluator_is_built(tmp_path, edge_split, monkeypatch):
    monkeypatch.setattr(crf, "_import_densecrf", lambda: None)
    cfg = _cfg(tmp_path, "TEST.CRF.ENABLED", "True")
    with pytest.raises(ImportError, match=r"pip install -e '\.\[crf\]'"):
        BMPTrainer.build_evaluator(cfg, edge_split[0])


def test_crf_params_from_config(tmp_path):
    assert CRFParams.from_config(_cfg(tmp_path).TEST.CRF) is None
    cfg = _cfg(tmp_path, "TEST.CRF.ENABLED", "True", "TEST.CRF.BILATERAL_SRGB", "13.0")
    params = CRFParams.from_config(cfg.TEST.CRF)
    assert params == CRFParams(bilateral_srgb=13.0)
    assert (params.num_iter, params.gaussian_sxy, params.gaussian_weight) == (10, 3.0, 3.0)
    assert (params.bilateral_sxy, params.bilateral_weight) == (64.0, 4.0)
