"""Dense CRF: the label boundary moves onto the colour edge; a clear error without the extra."""

import numpy as np
import pytest

from bmp.evaluation import crf
from bmp.evaluation.crf import CRFParams, crf_available, crf_refine_labels, dense_crf

needs_crf = pytest.mark.skipif(
    not crf_available(), reason="pydensecrf2 not installed: pip install -e '.[crf]'"
)

EDGE = 20  # the colour edge: columns < EDGE are red, >= EDGE blue


def _edge_image(h: int = 24, w: int = 48) -> np.ndarray:
    img = np.zeros((h, w, 3), np.uint8)
    img[:, :EDGE] = (200, 30, 30)
    img[:, EDGE:] = (30, 30, 200)
    return img


def _blurry_probs(h: int = 24, w: int = 48, centre: float = 13.5) -> np.ndarray:
    """Two classes whose 50% crossing sits 6 px left of the edge, with a soft ramp."""
    x = np.arange(w, dtype=np.float32)
    p1 = 1.0 / (1.0 + np.exp(-(x - centre) / 4.0))
    p1 = np.broadcast_to(p1, (h, w))
    return np.stack([1.0 - p1, p1]).astype(np.float32)


def _boundaries(labels: np.ndarray) -> set:
    """Columns where each row first switches from class 0 to class 1."""
    return {int(np.argmax(row == 1)) for row in labels}


@needs_crf
def test_crf_moves_boundary_onto_colour_edge():
    probs = _blurry_probs()
    before = probs.argmax(axis=0)
    assert _boundaries(before) == {14}  # the raw map is wrong by 6 px
    q = dense_crf(_edge_image(), probs, CRFParams())
    assert q.shape == probs.shape and q.dtype == np.float32
    np.testing.assert_allclose(q.sum(axis=0), 1.0, atol=1e-4)
    after = q.argmax(axis=0)
    assert _boundaries(after) == {EDGE}
    assert (after[:, :EDGE] == 0).all() and (after[:, EDGE:] == 1).all()


@needs_crf
def test_crf_without_edge_keeps_boundary():
    """On a flat image only the smoothness kernels act: the boundary must not jump to 20."""
    flat = np.full((24, 48, 3), 128, np.uint8)
    after = dense_crf(flat, _blurry_probs(), CRFParams()).argmax(axis=0)
    assert _boundaries(after) != {EDGE}


@needs_crf
def test_crf_refine_labels_keeps_uncertain_and_classes():
    labels = np.zeros((24, 48), np.int64)
    labels[:, 14:] = 7  # a seed whose object starts 6 px too early
    labels[:, 10:12] = 255  # an uncertain band
    out = crf_refine_labels(_edge_image(), labels, classes=[0, 7], params=CRFParams())
    assert set(np.unique(out)) <= {0, 7, 255}
    assert (out[:, 10:12] == 255).all()
    assert (out[:, EDGE:] == 7).all() and (out[:, 12:EDGE] == 0).all()


def test_refine_labels_rejects_unknown_ids():
    labels = np.zeros((4, 4), np.int64)
    labels[0, 0] = 3
    with pytest.raises(ValueError, match=r"ids \[3\] outside classes \[0, 1\]"):
        crf_refine_labels(np.zeros((4, 4, 3), np.uint8), labels, classes=[0, 1])


def test_params_reject_nonsense():
    with pytest.raises(ValueError, match="TEST.CRF.NUM_ITER"):
        CRFParams(num_iter=0)
    with pytest.raises(ValueError, match="TEST.CRF.BILATERAL_SRGB"):
        CRFParams(bilateral_srgb=0)


def test_missing_extra_is_one_clear_line(monkeypatch):
    monkeypatch.setattr(crf, "_import_densecrf", lambda: None)
    assert not crf.crf_available()
    with pytest.raises(ImportError) as err:
        dense_crf(_edge_image(), _blurry_probs())
    msg = str(err.value)
    assert "\n" not in msg and "pip install -e '.[crf]'" in msg and "pydensecrf2" in msg
