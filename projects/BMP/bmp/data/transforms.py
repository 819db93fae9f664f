"""The authors' training augmentations as detectron2 ``Augmentation``/``Transform`` classes.

detectron2 has no "scale the image by a random factor" nor "pad to the crop size at a random
offset, then crop" augmentation with the semantics the WSSS recipe uses, so they are written here
on top of ``ResizeTransform``/``CropTransform``. Going through the transform framework means a mask
(here: the all-ones "real pixel" mask) follows the image exactly, with nearest interpolation.
"""

from typing import Sequence, Tuple

import numpy as np
from detectron2.data import transforms as T
from PIL import Image

__all__ = ["RandomScale", "FillPadTransform", "RandomPadCrop"]


class RandomScale(T.Augmentation):
    """Rescale both sides by one factor drawn uniformly from ``[min_scale, max_scale]``."""

    def __init__(self, min_scale: float, max_scale: float, interp: int = Image.BILINEAR):
        super().__init__()
        if not 0 < min_scale <= max_scale:
            raise ValueError(f"RandomScale needs 0 < min_scale <= max_scale, got "
                             f"{min_scale}, {max_scale}.")  # fmt: skip
        self._init(locals())

    def get_transform(self, image: np.ndarray) -> T.Transform:
        h, w = image.shape[:2]
        s = np.random.uniform(self.min_scale, self.max_scale)
        new_h, new_w = max(1, int(round(h * s))), max(1, int(round(w * s)))
        return T.ResizeTransform(h, w, new_h, new_w, self.interp)


class FillPadTransform(T.Transform):
    """Pad with a per-channel fill colour (images) and a separate value (segmentations).

    fvcore's ``PadTransform`` takes one scalar for all channels; a per-channel fill lets the
    padding be the pixel mean (zero after normalisation) as well as black.
    """

    def __init__(
        self,
        top: int,
        left: int,
        bottom: int,
        right: int,
        fill: Sequence[float] = (0.0, 0.0, 0.0),
        seg_fill: int = 0,
    ):
        super().__init__()
        self._set_attributes(locals())

    def _pad(self, img: np.ndarray, value) -> np.ndarray:
        h, w = img.shape[:2]
        out = np.empty(
            (h + self.top + self.bottom, w + self.left + self.right) + img.shape[2:], img.dtype
        )
        out[...] = value
        out[self.top : self.top + h, self.left : self.left + w] = img
        return out

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        if img.ndim == 3 and len(self.fill) == img.shape[2]:
            fill = np.asarray(self.fill, dtype=np.float64)
        else:
            fill = np.asarray(float(np.mean(self.fill)))
        if img.dtype == np.uint8:
            fill = np.clip(np.rint(fill), 0, 255)
        return self._pad(img, fill.astype(img.dtype))

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        return self._pad(segmentation, self.seg_fill)

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        coords[:, 0] += self.left
        coords[:, 1] += self.top
        return coords

    def inverse(self) -> T.Transform:
        raise NotImplementedError("FillPadTransform is not inverted in BMP.")


class RandomPadCrop(T.Augmentation):
    """Crop a random ``crop_size`` window; a smaller side is first padded at a random offset.

    Padded pixels get ``fill`` in the image and ``seg_fill`` in segmentations, so pushing an
    all-ones mask through the same transforms marks exactly the real pixels.
    """

    def __init__(
        self,
        crop_size: Tuple[int, int],
        fill: Sequence[float] = (0.0, 0.0, 0.0),
        seg_fill: int = 0,
    ):
        super().__init__()
        crop_size = tuple(int(v) for v in crop_size)
        if len(crop_size) != 2 or min(crop_size) < 1:
            raise ValueError(f"crop_size must be (height, width) > 0, got {crop_size}.")
        fill = tuple(float(v) for v in fill)
        self._init(locals())

    def get_transform(self, image: np.ndarray) -> T.Transform:
        h, w = image.shape[:2]
        ch, cw = self.crop_size
        pad_h, pad_w = max(ch - h, 0), max(cw - w, 0)
        tfms = []
        if pad_h or pad_w:
            top, left = np.random.randint(pad_h + 1), np.random.randint(pad_w + 1)
            tfms.append(
                FillPadTransform(top, left, pad_h - top, pad_w - left, self.fill, self.seg_fill)
            )
        H, W = h + pad_h, w + pad_w
        y0, x0 = np.random.randint(H - ch + 1), np.random.randint(W - cw + 1)
        tfms.append(T.CropTransform(x0, y0, cw, ch, W, H))
        return T.TransformList(tfms)
