"""Images of every common mode become RGB uint8; bad files stop with an error naming them."""

import numpy as np
import pytest
from PIL import Image

from bmp.data.image_io import image_size, read_image_rgb, read_sem_seg


def test_rgb_grayscale_rgba_palette(tmp_path):
    rgb = np.array([[[10, 20, 30], [200, 100, 0]]], dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    np.testing.assert_array_equal(read_image_rgb(str(tmp_path / "rgb.png")), rgb)

    gray = np.array([[0, 128, 255]], dtype=np.uint8)
    Image.fromarray(gray).save(tmp_path / "gray.png")
    out = read_image_rgb(str(tmp_path / "gray.png"))
    assert out.shape == (1, 3, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, np.repeat(gray[:, :, None], 3, axis=2))

    rgba = np.concatenate([rgb, np.array([[[0], [255]]], dtype=np.uint8)], axis=2)
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    np.testing.assert_array_equal(read_image_rgb(str(tmp_path / "rgba.png")), rgb)

    pal = Image.fromarray(np.array([[0, 1]], dtype=np.uint8))
    pal.putpalette([0, 0, 0, 255, 0, 128] + [0] * 762)
    pal.save(tmp_path / "pal.png")
    np.testing.assert_array_equal(
        read_image_rgb(str(tmp_path / "pal.png")), [[[0, 0, 0], [255, 0, 128]]]
    )


def test_16bit_grayscale_is_rescaled_not_clipped(tmp_path):
    arr = np.array([[0, 257 * 100, 65535]], dtype=np.uint16)
    Image.fromarray(arr).save(tmp_path / "g16.png")
    out = read_image_rgb(str(tmp_path / "g16.png"))
    np.testing.assert_array_equal(out[0, :, 0], [0, 100, 255])
    np.testing.assert_array_equal(out[..., 0], out[..., 2])


def test_cmyk_jpeg_converts(tmp_path):
    Image.new("CMYK", (4, 3), (0, 0, 0, 0)).save(tmp_path / "c.jpg")
    out = read_image_rgb(str(tmp_path / "c.jpg"))
    assert out.shape == (3, 4, 3) and out.min() > 240  # CMYK zero ink = white


def test_missing_corrupt_truncated(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jpg"):
        read_image_rgb(str(tmp_path / "nope.jpg"))
    (tmp_path / "junk.jpg").write_bytes(b"\x00garbage" * 50)
    with pytest.raises(ValueError, match="junk.jpg"):
        read_image_rgb(str(tmp_path / "junk.jpg"))
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "t.jpg")
    data = (tmp_path / "t.jpg").read_bytes()
    (tmp_path / "t.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="t.jpg"):
        read_image_rgb(str(tmp_path / "t.jpg"))


def test_image_size_reads_header(tmp_path):
    Image.new("RGB", (7, 5)).save(tmp_path / "a.jpg")
    assert image_size(str(tmp_path / "a.jpg")) == (5, 7)


def test_mask_reading_and_validation(tmp_path):
    m = np.array([[0, 1, 2], [255, 2, 0]], dtype=np.uint8)
    Image.fromarray(m).save(tmp_path / "ok.png")
    out = read_sem_seg(str(tmp_path / "ok.png"), num_classes=2, expected_size=(2, 3))
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, m)

    Image.fromarray(np.array([[0, 3, 7, 255]], dtype=np.uint8)).save(tmp_path / "bad.png")
    with pytest.raises(ValueError, match=r"bad\.png.*3, 7.*0\.\.2"):
        read_sem_seg(str(tmp_path / "bad.png"), num_classes=2)

    with pytest.raises(ValueError, match=r"ok\.png.*2x3.*4x4"):
        read_sem_seg(str(tmp_path / "ok.png"), num_classes=2, expected_size=(4, 4))

    Image.new("RGB", (3, 2)).save(tmp_path / "rgb.png")
    with pytest.raises(ValueError, match=r"rgb\.png.*mode 'RGB'"):
        read_sem_seg(str(tmp_path / "rgb.png"), num_classes=2)

    with pytest.raises(FileNotFoundError, match="gone.png"):
        read_sem_seg(str(tmp_path / "gone.png"), num_classes=2)
