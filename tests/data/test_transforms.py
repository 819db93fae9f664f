"""Random rescale and pad-then-crop: sizes, fill values, and the real-pixel mask."""

import numpy as np
import pytest
from detectron2.data import transforms as T

from bmp.data.transforms import FillPadTransform, RandomPadCrop, RandomScale


def test_random_scale_sizes_and_nearest_segmentation():
    img = np.zeros((10, 6, 3), dtype=np.uint8)
    tfm = RandomScale(0.5, 0.5).get_transform(img)
    assert tfm.apply_image(img).shape == (5, 3, 3)
    seg = np.array([[0, 1], [1, 0]], dtype=np.uint8)
    up = RandomScale(2.0, 2.0).get_transform(seg).apply_segmentation(seg)
    np.testing.assert_array_equal(up, np.kron(seg, np.ones((2, 2), dtype=np.uint8)))
    with pytest.raises(ValueError):
        RandomScale(0.0, 1.0)


def test_fill_pad_per_channel_and_segmentation():
    img = np.full((1, 2, 3), 9, dtype=np.uint8)
    t = FillPadTransform(top=1, left=0, bottom=0, right=1, fill=(1.2, 2.0, 250.6), seg_fill=0)
    out = t.apply_image(img)
    assert out.shape == (2, 3, 3)
    np.testing.assert_array_equal(out[0, 0], [1, 2, 251])
    np.testing.assert_array_equal(out[1, :2], 9)
    np.testing.assert_array_equal(out[:, 2], [[1, 2, 251], [1, 2, 251]])
    seg = t.apply_segmentation(np.ones((1, 2), dtype=np.uint8))
    np.testing.assert_array_equal(seg, [[0, 0, 0], [1, 1, 0]])


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_pad_crop_marks_exactly_the_real_pixels(seed):
    np.random.seed(seed)
    img = np.full((3, 5, 3), 200, dtype=np.uint8)
    aug = T.AugInput(img, sem_seg=np.ones((3, 5), dtype=np.uint8))
    T.AugmentationList([RandomPadCrop((6, 4), fill=(7, 8, 9))])(aug)
    assert aug.image.shape == (6, 4, 3)
    valid = aug.sem_seg == 1
    # Height 3 is padded to 6 (3 rows real), width 5 is cropped to 4 (all columns real).
    assert valid.sum() == 3 * 4
    rows = np.nonzero(valid.any(axis=1))[0]
    assert rows.max() - rows.min() == 2 and valid[rows].all()
    assert (aug.image[valid] == 200).all()
    assert (aug.image[~valid] == [7, 8, 9]).all()
