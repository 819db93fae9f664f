"""demo/demo.py: one five-tile panel per input image, from a checkpoint and a config."""

import os
import sys

import numpy as np
import pytest
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model
from PIL import Image

from bmp.engine import ConfigError, load_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = os.path.join(ROOT, "configs", "synthetic", "bmp_mit_tiny.yaml")
sys.path.insert(0, os.path.join(ROOT, "demo"))
from predictor import TILE_TITLES  # noqa: E402

import demo  # noqa: E402


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
