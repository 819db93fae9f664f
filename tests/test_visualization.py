"""bmp.visualization: the five-tile panel and the panel files written for a list of images."""

import numpy as np
import pytest
import torch
from detectron2.data import Metadata
from PIL import Image

from bmp.visualization import TILE_TITLES, make_panel, write_panels

META = Metadata(name="__test_panels__", stuff_classes=["background", "cat", "dog"])


def _outputs(h: int, w: int) -> dict:
    """A prediction with class 1 on the left half and a seed of class 2 at the top."""
    sem = torch.zeros(3, h, w)
    sem[1, :, : w // 2] = 5.0
    seed = torch.zeros(h, w, dtype=torch.long)
    seed[: h // 2] = 2
    return {"sem_seg": sem, "cam": torch.rand(2, h, w), "seeds": {"par": seed, "bsp": seed}}


class _FakePredictor:
    """Stands in for BMPPredictor: records the BGR images and names it is given."""

    metadata = META

    def __init__(self) -> None:
        self.calls = []

    def __call__(self, image, file_name="<image>"):
        self.calls.append((image.copy(), file_name))
        return _outputs(*image.shape[:2])


def test_panel_is_five_tiles_and_needs_cams_and_seeds():
    image = np.zeros((40, 60, 3), dtype=np.uint8)
    panel = make_panel(image, _outputs(40, 60), META, scale=1.0)
    assert len(TILE_TITLES) == 5 and panel.shape == (40, 300, 3)
    with pytest.raises(KeyError, match="EXTRA_OUTPUTS"):
        make_panel(image, {"sem_seg": torch.zeros(3, 40, 60)}, META)


def test_write_panels_reads_bgr_and_writes_one_file_per_image(tmp_path):
    rgb = np.zeros((32, 48, 3), dtype=np.uint8)
    rgb[..., 0] = 200  # red in RGB
    Image.fromarray(rgb).save(tmp_path / "a.png")
    predictor = _FakePredictor()
    written = write_panels(predictor, [str(tmp_path / "a.png")], tmp_path / "out", 0.5, ".jpg")
    assert written == [str(tmp_path / "out" / "a.jpg")]
    image, name = predictor.calls[0]
    assert name == str(tmp_path / "a.png") and image[0, 0, 2] == 200  # BGR, as DefaultPredictor
    assert np.array(Image.open(written[0])).shape == (16, 5 * 24, 3)
