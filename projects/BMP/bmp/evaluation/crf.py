"""Dense-CRF post-processing of class probabilities, through the optional ``pydensecrf2`` package.

WSSS papers report segmentation (and often seed) mIoU after a fully connected CRF that snaps
label boundaries to colour edges. The CRF itself comes from ``pydensecrf2`` (installed by
``pip install -e '.[crf]'``; it imports as ``pydensecrf``); this module only feeds it and keeps
the package optional: nothing here imports it until a CRF actually runs.
"""

from dataclasses import dataclass
from types import ModuleType
from typing import Any, Optional, Sequence

import numpy as np

__all__ = [
    "CRFParams",
    "CRF_MISSING_MESSAGE",
    "crf_available",
    "require_crf",
    "dense_crf",
    "crf_refine_labels",
]

CRF_MISSING_MESSAGE = (
    "CRF post-processing needs the optional package pydensecrf2: "
    "run `pip install -e '.[crf]'` (or set TEST.CRF.ENABLED False)"
)


@dataclass(frozen=True)
class CRFParams:
    """Dense-CRF settings; the defaults are the authors' (``TEST.CRF.*``)."""

    num_iter: int = 10
    gaussian_sxy: float = 3.0
    gaussian_weight: float = 3.0
    bilateral_sxy: float = 64.0
    bilateral_srgb: float = 5.0
    bilateral_weight: float = 4.0

    @classmethod
    def from_config(cls, node: Any) -> Optional["CRFParams"]:
        """Params from a ``TEST.CRF`` config node; None when ``ENABLED`` is False."""
        if not node.ENABLED:
            return None
        return cls(
            num_iter=int(node.NUM_ITER),
            gaussian_sxy=float(node.GAUSSIAN_SXY),
            gaussian_weight=float(node.GAUSSIAN_WEIGHT),
            bilateral_sxy=float(node.BILATERAL_SXY),
            bilateral_srgb=float(node.BILATERAL_SRGB),
            bilateral_weight=float(node.BILATERAL_WEIGHT),
        )

    def __post_init__(self) -> None:
        if self.num_iter < 1:
            raise ValueError(f"TEST.CRF.NUM_ITER must be >= 1, got {self.num_iter}")
        for name in ("gaussian_sxy", "bilateral_sxy", "bilateral_srgb"):
            if getattr(self, name) <= 0:
                key = f"TEST.CRF.{name.upper()}"
                raise ValueError(f"{key} must be > 0, got {getattr(self, name)}")


def _import_densecrf() -> Optional[ModuleType]:
    try:
        import pydensecrf.densecrf as dcrf
    except ImportError:
        return None
    return dcrf


def crf_available() -> bool:
    """Whether the ``[crf]`` extra is installed (tests skip on False)."""
    return _import_densecrf() is not None


def require_crf() -> ModuleType:
    """The ``pydensecrf.densecrf`` module, or one ImportError line saying how to get it.

    Called when a CRF is configured, so a missing extra fails at start-up, not after training.
    """
    dcrf = _import_densecrf()
    if dcrf is None:
        raise ImportError(CRF_MISSING_MESSAGE)
    return dcrf


def dense_crf(
    image_rgb: np.ndarray, probs: np.ndarray, params: CRFParams = CRFParams()
) -> np.ndarray:
    """Refine ``probs`` (C, H, W), summing to 1 over C, with the colours of ``image_rgb``.

    Args:
        image_rgb: (H, W, 3) uint8 RGB image at the size of ``probs``.
        probs: per-pixel class probabilities, e.g. the softmax of segmentation logits.
        params: kernel sizes, weights and the number of mean-field iterations.

    Returns:
        (C, H, W) float32 CRF marginals; their argmax is the refined label map.
    """
    dcrf = require_crf()
    if probs.ndim != 3:
        raise ValueError(f"probs must be (C, H, W), got shape {probs.shape}")
    c, h, w = probs.shape
    if image_rgb.shape != (h, w, 3):
        raise ValueError(f"image must be ({h}, {w}, 3) to match probs, got {image_rgb.shape}")
    # Negative log-probability unary; the clip keeps log(0) finite.
    unary = -np.log(np.clip(probs.reshape(c, -1).astype(np.float32), 1e-8, 1.0))
    crf = dcrf.DenseCRF2D(w, h, c)
    crf.setUnaryEnergy(np.ascontiguousarray(unary))
    crf.addPairwiseGaussian(sxy=params.gaussian_sxy, compat=params.gaussian_weight)
    crf.addPairwiseBilateral(
        sxy=params.bilateral_sxy,
        srgb=params.bilateral_srgb,
        rgbim=np.ascontiguousarray(image_rgb.astype(np.uint8)),
        compat=params.bilateral_weight,
    )
    q = crf.inference(params.num_iter)
    return np.asarray(q, dtype=np.float32).reshape(c, h, w)


def crf_refine_labels(
    image_rgb: np.ndarray,
    labels: np.ndarray,
    classes: Sequence[int],
    params: CRFParams = CRFParams(),
    confidence: float = 0.7,
    ignore_label: int = 255,
) -> np.ndarray:
    """Refine a hard label map (e.g. a seed) with the CRF; uncertain pixels stay uncertain.

    A seed has labels, not probabilities: each labelled pixel gets ``confidence`` on its class
    and the rest spread over the other ``classes``; uncertain (``ignore_label``) pixels get a
    uniform distribution, so they take no side. The CRF runs over ``classes`` only (background
    and the image's classes), so it cannot invent a class the seed never had.

    Args:
        image_rgb: (H, W, 3) uint8 RGB.
        labels: (H, W) ids; values outside ``classes`` other than ``ignore_label`` are an error.
        classes: the ids the CRF may assign (at least two for the CRF to do anything).
        confidence: probability given to a pixel's own label, in (1/len(classes), 1).

    Returns:
        (H, W) int64 labels: the CRF argmax where the seed was labelled, ``ignore_label`` where
        it was not.
    """
    classes = sorted(set(int(c) for c in classes))
    uncertain = labels == ignore_label
    unknown = np.setdiff1d(np.unique(labels[~uncertain]), classes)
    if unknown.size:
        raise ValueError(f"labels hold ids {unknown.tolist()} outside classes {classes}")
    n = len(classes)
    if n < 2:
        return labels.astype(np.int64)
    if not 1.0 / n < confidence < 1.0:
        raise ValueError(f"confidence must be in (1/{n}, 1), got {confidence}")
    index = np.zeros(max(classes) + 1, dtype=np.int64)
    index[classes] = np.arange(n)
    compact = index[np.where(uncertain, classes[0], labels)]
    probs = np.full((n,) + labels.shape, (1.0 - confidence) / (n - 1), dtype=np.float32)
    np.put_along_axis(probs, compact[None], confidence, axis=0)
    probs[:, uncertain] = 1.0 / n
    refined = np.asarray(classes)[dense_crf(image_rgb, probs, params).argmax(axis=0)]
    return np.where(uncertain, ignore_label, refined).astype(np.int64)
