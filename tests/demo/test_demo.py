"""demo/demo.py: one five-tile panel per input image, from a checkpoint and a config."""

import importlib.util
import os

import numpy as np
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model
from PIL import Image

from bmp.config import ConfigError, load_config
from bmp.evaluation.crf import crf_available
from bmp.visualization import TILE_TITLES, BMPPredictor, make_panel

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = os.path.join(ROOT, "configs", "synthetic", "bmp_mit_tiny.yaml")
_spec = importlib.util.spec_from_file_location("demo", os.path.join(ROOT, "demo", "demo.py"))
demo = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(demo)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("w")
    cfg = load_config(TINY, [])
    DetectionCheckpointer(build_model(cfg), save_dir=str(path)).save("tiny")
    return str(path / "tiny.pth")


def test_writes_one_panel_per_image(tmp_path, weights):
    rng = np.random.default_rng(0)
    for name, shape in (("a.jpg", (90, 120, 3)), ("b.png", (64, 64))):  # RGB and grayscale
        Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8)).save(tmp_path / name)
    out = tmp_path / "out"
    # The config asks for ground-truth image labels for seeds; a demo image has none, so the
    # predictor must fall back to predicted classes instead of failing.
    code = demo.main(
        ["--config-file", TINY, "--input", str(tmp_path / "*.*"), "--output", str(out),
         "--opts", "MODEL.WEIGHTS", weights]
    )  # fmt: skip
    assert code == 0
    assert sorted(os.listdir(out)) == ["a.png", "b.png"]
    panel = np.array(Image.open(out / "a.png"))
    h, w = panel.shape[:2]
    # Five tiles side by side, each the (enlarged) input's aspect ratio.
    assert len(TILE_TITLES) == 5 and w == pytest.approx(5 * h * 120 / 90, rel=0.05)


def test_bad_inputs_are_one_line_errors(tmp_path, weights, capsys):
    assert demo.main(["--config-file", TINY, "--input", str(tmp_path / "none*.jpg"),
                      "--output", str(tmp_path)]) == 2  # fmt: skip
    assert "needs trained weights" in capsys.readouterr().err
    code = demo.main(["--config-file", TINY, "--input", str(tmp_path / "none*.jpg"),
                      "--output", str(tmp_path), "--opts", "MODEL.WEIGHTS", weights])  # fmt: skip
    assert code == 2 and "matches no file" in capsys.readouterr().err
    with pytest.raises(ConfigError):
        demo.run(TINY, [], str(tmp_path), ["MODEL.WEIGHTS", "/no/such.pth"])


def _one_image(tmp_path):
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (72, 96, 3), dtype=np.uint8)).save(tmp_path / "c.jpg")
    return str(tmp_path / "c.jpg")


@pytest.mark.skipif(
    not crf_available(),
    reason="pydensecrf2 not installed: pip install -e '.[crf]'",
)
def test_crf_panel(tmp_path, weights):
    cfg = load_config(TINY, ["MODEL.WEIGHTS", weights, "TEST.CRF.ENABLED", "True"])
    predictor = BMPPredictor(cfg)
    image = np.array(Image.open(_one_image(tmp_path)))[:, :, ::-1]  # BGR, as cv2 reads it
    out = predictor(image)
    assert out["sem_seg_crf"].shape == out["sem_seg"].shape
    np.testing.assert_allclose(out["sem_seg_crf"].sum(dim=0).numpy(), 1.0, atol=1e-4)
    assert make_panel(image[:, :, ::-1], out, predictor.metadata).ndim == 3


def test_crf_without_extra_is_one_line_error(tmp_path, weights, capsys, monkeypatch):
    from bmp.evaluation import crf

    monkeypatch.setattr(crf, "_import_densecrf", lambda: None)
    code = demo.main(["--config-file", TINY, "--input", _one_image(tmp_path),
                      "--output", str(tmp_path / "o"),
                      "--opts", "MODEL.WEIGHTS", weights, "TEST.CRF.ENABLED", "True"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "pip install -e '.[crf]'" in err and len(err.strip().splitlines()) == 1


def test_weights_that_name_code_are_one_line_errors(tmp_path, crafted_weights, capsys):
    files = crafted_weights({"unused.weight": torch.ones(1)})
    code = demo.main(["--config-file", TINY, "--input", _one_image(tmp_path),
                      "--output", str(tmp_path / "o"),
                      "--opts", "MODEL.WEIGHTS", str(files.pkl)])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "refused to unpickle 'posix.mkdir'" in err and "MODEL.WEIGHTS_UNSAFE_UNPICKLE" in err
    assert not files.marker.exists()
