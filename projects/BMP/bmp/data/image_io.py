"""Robust image and mask reading.

Real datasets contain grayscale, palette, RGBA, CMYK and 16-bit files, and the odd truncated
download. The model wants RGB uint8 and masks with ids in ``0..K`` or the ignore value, so every
read goes through here: supported modes are converted faithfully, anything else stops with an
error that names the file and says what is wrong, instead of training on garbage.
"""

import os
from typing import Iterable, Optional, Tuple

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = ["read_image_rgb", "read_sem_seg", "image_size", "check_mask_values"]

# Integer modes whose values are class ids; "1" (bilevel) is accepted as ids 0/1.
_MASK_MODES = ("L", "P", "I", "I;16", "I;16L", "I;16B", "1")


def _open(path: str) -> Image.Image:
    """Open and fully decode ``path`` so that truncated files fail here, naming the file."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"File not found: '{path}'. Check the dataset root and split list.")
    try:
        img = Image.open(path)
        img.load()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise ValueError(
            f"Cannot read image file '{path}': {e}. The file is corrupt or not an image; "
            "re-create or re-download it, or remove it from the split list."
        ) from e
    return img


def _to_uint8_gray(arr: np.ndarray, mode: str) -> np.ndarray:
    """Scale a single-channel high-bit-depth array to 0..255 (rounded, not clipped)."""
    if mode == "F":
        arr = arr.astype(np.float64)
        # Float images are either 0..1 or 0..255 by convention.
        if arr.size and np.nanmax(arr) <= 1.0:
            arr = arr * 255.0
        return np.clip(np.rint(np.nan_to_num(arr)), 0, 255).astype(np.uint8)
    arr = arr.astype(np.int64)
    if mode.startswith("I;16"):
        maxval = 65535
    else:
        # 32-bit "I" mode: Pillow also uses it for 16-bit PNGs; infer the bit depth from the data.
        peak = int(arr.max()) if arr.size else 0
        maxval = 255 if peak <= 255 else (65535 if peak <= 65535 else max(peak, 1))
        arr = np.clip(arr, 0, None)
    if maxval == 255:
        return arr.astype(np.uint8)
    return np.rint(arr * (255.0 / maxval)).astype(np.uint8)


def read_image_rgb(path: str) -> np.ndarray:
    """Read any supported image as an ``(H, W, 3)`` RGB uint8 array.

    Grayscale, palette, CMYK and YCbCr are converted by Pillow; RGBA/LA keep their colour channels
    (alpha carries no information for a photo); 16-bit and float images are rescaled to 0..255
    rather than clipped. EXIF orientation is applied so that masks made on the upright image align.
    """
    img = _open(path)
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # noqa: BLE001 - a malformed EXIF block must not make the image unusable
        pass
    mode = img.mode
    if mode == "RGB":
        out = np.asarray(img, dtype=np.uint8)
    elif mode in ("F", "I") or mode.startswith("I;16"):
        gray = _to_uint8_gray(np.asarray(img), mode)
        out = np.repeat(gray[:, :, None], 3, axis=2)
    elif mode == "RGBA":
        out = np.asarray(img, dtype=np.uint8)[:, :, :3]
    elif mode == "LA":
        gray = np.asarray(img, dtype=np.uint8)[:, :, 0]
        out = np.repeat(gray[:, :, None], 3, axis=2)
    else:
        try:
            out = np.asarray(img.convert("RGB"), dtype=np.uint8)
        except (ValueError, OSError) as e:
            raise ValueError(
                f"Image '{path}' has pixel mode '{mode}', which cannot be converted to RGB: {e}"
            ) from e
    if out.ndim != 3 or out.shape[2] != 3:
        raise ValueError(f"Image '{path}' decoded to shape {out.shape}, expected (H, W, 3).")
    return np.ascontiguousarray(out)


def image_size(path: str) -> Tuple[int, int]:
    """``(height, width)`` from the file header without decoding pixels (EXIF rotation applied)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"File not found: '{path}'. Check the dataset root and split list.")
    try:
        with Image.open(path) as img:
            w, h = img.size
            try:
                orientation = img.getexif().get(0x0112, 1)
            except Exception:  # noqa: BLE001 - unreadable EXIF means no rotation
                orientation = 1
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"Cannot read image file '{path}': {e}. The file is corrupt.") from e
    if orientation in (5, 6, 7, 8):  # rotated by 90 or 270 degrees
        h, w = w, h
    return int(h), int(w)


def check_mask_values(mask: np.ndarray, num_classes: int, ignore_label: int, path: str) -> None:
    """Raise if ``mask`` holds ids other than ``0..num_classes`` and ``ignore_label``."""
    values = np.unique(mask)
    bad = values[((values < 0) | (values > num_classes)) & (values != ignore_label)]
    if bad.size:
        shown = ", ".join(str(int(v)) for v in bad[:10]) + (" ..." if bad.size > 10 else "")
        raise ValueError(
            f"Mask '{path}' contains ids {shown} outside the valid range 0..{num_classes} "
            f"(ignore = {ignore_label}). Is it a colour-coded mask, or for a different dataset?"
        )


def read_sem_seg(
    path: str,
    num_classes: Optional[int] = None,
    ignore_label: int = 255,
    expected_size: Optional[Iterable[int]] = None,
) -> np.ndarray:
    """Read a class-id mask as an ``(H, W)`` int64 array and validate it.

    ``num_classes`` is K (foreground classes); ids must lie in ``0..K`` or equal ``ignore_label``.
    ``expected_size`` is the image's ``(height, width)``: a mask of another size is an error, as
    resizing it silently would misalign every label.
    """
    img = _open(path)
    if img.mode not in _MASK_MODES:
        raise ValueError(
            f"Mask '{path}' has pixel mode '{img.mode}'; expected a single-channel PNG of class "
            "ids (mode L or P). An RGB mask is a colour visualisation: convert it to ids first."
        )
    mask = np.asarray(img).astype(np.int64)
    if mask.ndim != 2:
        raise ValueError(f"Mask '{path}' has shape {mask.shape}, expected (H, W).")
    if expected_size is not None:
        exp = tuple(int(v) for v in expected_size)
        if mask.shape != exp:
            raise ValueError(
                f"Mask '{path}' has size {mask.shape[0]}x{mask.shape[1]} (HxW) but its image is "
                f"{exp[0]}x{exp[1]}; masks must match their image pixel for pixel."
            )
    if num_classes is not None:
        check_mask_values(mask, num_classes, ignore_label, path)
    return mask
