"""Pseudo-label construction (bmp.modeling.pseudo_labels)."""

import pytest
import torch
import torch.nn.functional as F

from bmp.modeling.par import PAR
from bmp.modeling.pseudo_labels import (
    Refinement,
    affinity_labels,
    bsp_pseudo_labels,
    cam_seed_labels,
    par_pseudo_labels,
    s2c_labels,
    valid_boxes,
)

IGN = 255
IDENTITY_PAR = PAR(num_iter=0)  # no propagation: labels are hand-computable


def _strip(values, k=2):
    """(1, K, 1, W) CAMs from per-pixel lists of K values."""
    return torch.tensor(values, dtype=torch.float32).t().reshape(1, k, 1, -1)


def test_two_threshold_rule():
    # Class 1 present, class 2 absent (with a huge CAM that must never win).
    cams = _strip([[0.9, 1.0], [0.45, 1.0], [0.1, 1.0], [0.9, 1.0]])
    cls_label = torch.tensor([[1.0, 0.0]])
    valid = torch.tensor([[[True, True, True, False]]])
    image = torch.rand(1, 3, 1, 4)
    labels = par_pseudo_labels(cams, cls_label, Refinement(image, valid, IDENTITY_PAR, scale=1.0))
    # fg in both runs -> 1; high-run bg & low-run fg -> ignore; both bg -> 0; padded -> ignore.
    assert labels.tolist() == [[[1, IGN, 0, IGN]]]
    assert labels.dtype == torch.long


def test_two_threshold_rule_follows_thresholds():
    cams = _strip([[0.5, 0.0], [0.3, 0.0]])
    cls_label = torch.tensor([[1.0, 1.0]])
    valid = torch.ones(1, 1, 2, dtype=torch.bool)
    image = torch.rand(1, 3, 1, 2)
    default = par_pseudo_labels(cams, cls_label, Refinement(image, valid, IDENTITY_PAR, scale=1.0))
    assert default.tolist() == [[[IGN, 0]]]
    lower = par_pseudo_labels(
        cams, cls_label, Refinement(image, valid, IDENTITY_PAR, scale=1.0), bg_scores=(0.4, 0.2)
    )
    assert lower.tolist() == [[[1, IGN]]]


def _reference_par_labels(cams, cls_label, image, valid, par, high, low, scale):
    """The authors' per-image loop over the present channels, for comparison."""
    b, k, h, w = cams.shape
    size = (int(h * scale), int(w * scale))
    small_img = F.interpolate(image, size=size, mode="bilinear", align_corners=False)
    small = F.interpolate(cams, size=size, mode="bilinear", align_corners=False)
    out = []
    for i in range(b):
        keys = torch.cat([torch.zeros(1, dtype=torch.long), cls_label[i].nonzero()[:, 0] + 1])
        runs = []
        for thr in (high, low):
            full = torch.cat([torch.full((1, *size), thr), small[i]], dim=0)
            probs = full[keys].unsqueeze(0).softmax(dim=1)
            ref = F.interpolate(par(small_img[i : i + 1], probs), size=(h, w), mode="bilinear")
            runs.append(keys[ref.argmax(dim=1)[0]])
        lab = runs[0].clone()
        lab[runs[0] == 0] = IGN
        lab[(runs[0] == 0) & (runs[1] == 0)] = 0
        lab[~valid[i]] = IGN
        out.append(lab)
    return torch.stack(out)


def _random_batch(seed, b=3, k=5, h=24, w=20):
    gen = torch.Generator().manual_seed(seed)
    cams = torch.rand(b, k, h, w, generator=gen)
    cams = F.avg_pool2d(cams, 5, stride=1, padding=2)  # smooth blobs
    cams = (cams - cams.amin((2, 3), True)) / (cams.amax((2, 3), True) - cams.amin((2, 3), True))
    # Different numbers of present classes per image (3, 1 and 0) exercise the slot padding.
    cls_label = torch.zeros(b, k)
    cls_label[0, [0, 2, 4]] = 1
    cls_label[1, 3] = 1
    image = torch.rand(b, 3, h, w, generator=gen)
    valid = torch.ones(b, h, w, dtype=torch.bool)
    valid[1, :, -5:] = False
    return cams, cls_label, image, valid


def test_batched_par_labels_match_per_image_loop():
    cams, cls_label, image, valid = _random_batch(0)
    par = PAR()
    got = par_pseudo_labels(cams, cls_label, Refinement(image, valid, par))
    ref = _reference_par_labels(cams, cls_label, image, valid, par, 0.55, 0.35, 0.5)
    assert torch.equal(got, ref)
    # The batch is not trivial: background, ignore and several classes all occur.
    found = set(got.unique().tolist())
    assert {0, IGN} <= found and len(found) >= 4


def test_absent_classes_are_never_predicted():
    cams, cls_label, image, valid = _random_batch(1)
    cams[:, 1] = 10.0  # class 2 is absent everywhere but has the largest CAM
    for labels in (
        par_pseudo_labels(cams, cls_label, Refinement(image, valid, PAR())),
        bsp_pseudo_labels(cams[:, :1] * 0.5, cams, cls_label, Refinement(image, valid, PAR())),
        cam_seed_labels(cams, cls_label, valid),
    ):
        for i in range(cams.shape[0]):
            allowed = {0, IGN} | set((cls_label[i].nonzero()[:, 0] + 1).tolist())
            assert set(labels[i].unique().tolist()) <= allowed
    # Image 2 has no class at all: background or ignore only.
    assert set(
        par_pseudo_labels(cams, cls_label, Refinement(image, valid, PAR()))[2].unique().tolist()
    ) <= {0}


def test_bsp_labels_by_hand():
    seg_bg = torch.tensor([[[[0.8, 0.2, 0.3, 0.9, 0.1]]]])
    cams = _strip([[0.1, 1.0], [0.7, 1.0], [0.4, 1.0], [0.0, 1.0], [0.95, 1.0]])
    cls_label = torch.tensor([[1.0, 0.0]])
    valid = torch.tensor([[[True, True, True, True, False]]])
    image = torch.rand(1, 3, 1, 5)
    labels = bsp_pseudo_labels(
        seg_bg, cams, cls_label, Refinement(image, valid, IDENTITY_PAR, scale=1.0)
    )
    # bg 0.8 wins; class 1 0.7 wins; max 0.4 < sigma_c -> ignore; bg 0.9 wins; padded -> ignore.
    assert labels.tolist() == [[[0, 1, IGN, 0, IGN]]]
    loose = bsp_pseudo_labels(
        seg_bg, cams, cls_label, Refinement(image, valid, IDENTITY_PAR, scale=1.0), sigma_c=0.3
    )
    assert loose.tolist() == [[[0, 1, 1, 0, IGN]]]


def _reference_bsp_labels(seg_bg, cams, cls_label, image, box, par, sigma_c=0.5):
    """One image the authors' way: 21-channel map, crop to the box, PAR, argmax over all."""
    y0, y1, x0, x1 = box
    h, w = cams.shape[-2:]
    full = torch.cat([seg_bg, cams], dim=0)[None]  # (1, K + 1, H, W)
    keys = torch.cat([torch.zeros(1, dtype=torch.long), cls_label.nonzero()[:, 0] + 1])
    crop_img = image[None, :, y0:y1, x0:x1]
    bh, bw = y1 - y0, x1 - x0
    small = F.interpolate(crop_img, size=(bh // 2, bw // 2), mode="bilinear")
    refined_keys = par(small, full[:, keys, y0:y1, x0:x1])  # PAR resizes, align_corners=True
    refined_keys = F.interpolate(refined_keys, size=(bh, bw), mode="bilinear")
    refined = torch.zeros_like(full)
    refined[0, keys, y0:y1, x0:x1] = refined_keys[0]
    best, lab = refined[0].max(dim=0)
    lab[best < sigma_c] = IGN
    return lab


def test_batched_bsp_labels_match_per_image_loop():
    cams, cls_label, image, valid = _random_batch(2)
    seg_bg = 1 - cams.amax(dim=1, keepdim=True)
    par = PAR()
    got = bsp_pseudo_labels(seg_bg, cams, cls_label, Refinement(image, valid, par))
    b, _, h, w = cams.shape
    boxes = [(0, h, 0, w), (0, h, 0, w - 5), (0, h, 0, w)]
    for i in range(b):
        ref = _reference_bsp_labels(seg_bg[i], cams[i], cls_label[i], image[i], boxes[i], par)
        assert torch.equal(got[i], ref)
    assert {0, IGN} <= set(got.unique().tolist())


def test_bsp_refines_only_the_box_of_real_pixels():
    cams, cls_label, image, _ = _random_batch(5, b=2)
    valid = torch.zeros(2, 24, 20, dtype=torch.bool)
    valid[0, 3:21, 2:15] = True  # padding on every side
    valid[1] = True
    seg_bg = 1 - cams.amax(dim=1, keepdim=True)
    par = PAR()
    got = bsp_pseudo_labels(seg_bg, cams, cls_label, Refinement(image, valid, par))
    ref = _reference_bsp_labels(seg_bg[0], cams[0], cls_label[0], image[0], (3, 21, 2, 15), par)
    assert torch.equal(got[0], ref)
    assert (got[0][~valid[0]] == IGN).all() and (got[0][valid[0]] != IGN).any()
    # Refining the whole padded image instead gives other labels inside the box.
    whole = _reference_bsp_labels(seg_bg[0], cams[0], cls_label[0], image[0], (0, 24, 0, 20), par)
    assert not torch.equal(whole[3:21, 2:15], got[0][3:21, 2:15])


def test_valid_boxes():
    valid = torch.zeros(3, 4, 5, dtype=torch.bool)
    valid[0] = True
    valid[1, 1:3, 2:4] = True
    assert valid_boxes(valid) == [(0, 4, 0, 5), (1, 3, 2, 4), None]


def test_bsp_sigma_c_is_compared_with_the_grown_par_maps():
    # A constant class score of 0.47 and background 0.1: PAR's weights sum to 1.01, so ten rounds
    # give 0.47 * 1.01 ** 10 = 0.519 >= 0.5 (labelled), while the normalised PAR keeps 0.47, which
    # lies between 0.5 / 1.105 and 0.5 (ignored).
    h, w = 8, 8
    cams = torch.full((1, 1, h, w), 0.47)
    seg_bg = torch.full((1, 1, h, w), 0.1)
    image = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(0))
    valid = torch.ones(1, h, w, dtype=torch.bool)
    one = torch.ones(1, 1)
    authors = bsp_pseudo_labels(seg_bg, cams, one, Refinement(image, valid, PAR()))
    assert (authors == 1).all()
    normalized = bsp_pseudo_labels(seg_bg, cams, one, Refinement(image, valid, PAR(normalize=True)))
    assert (normalized == IGN).all()


def test_cam_seed_labels_by_hand():
    cams = _strip([[0.9, 0.6], [0.5, 0.2], [0.55, 0.0], [0.2, 0.99], [0.9, 0.0]])
    cls_label = torch.tensor([[1.0, 0.0]])
    valid = torch.tensor([[[True, True, True, True, False]]])
    labels = cam_seed_labels(cams, cls_label, valid)
    # 0.55 ties with the background threshold -> background; class 2 absent.
    assert labels.tolist() == [[[1, 0, 0, 0, IGN]]]
    both = cam_seed_labels(cams, torch.ones(1, 2), valid, bg_thresh=0.3)
    assert both.tolist() == [[[1, 1, 1, 2, IGN]]]


def test_s2c_labels_by_hand():
    seg = torch.tensor(
        [[[0.0, 2.0, 1.0], [0.0, 0.5, 0.7], [3.0, 1.0, 0.0], [0.0, 0.0, 0.75], [0.0, 0.0, 5.0]]]
    )  # (1, 5 pixels, K+1=3)
    seg_logits = seg.permute(0, 2, 1).reshape(1, 3, 1, 5)
    valid = torch.tensor([[[True, True, True, True, False]]])
    labels = s2c_labels(seg_logits, valid)
    # class 1 -> 0; low logit -> ignore; background -> ignore; logit == sigma_s kept -> 1; padded.
    assert labels.tolist() == [[[0, IGN, IGN, 1, IGN]]]
    assert s2c_labels(seg_logits, valid, sigma_s=0.6).tolist() == [[[0, 1, IGN, 1, IGN]]]


@pytest.mark.parametrize("name", ["par", "bsp", "cam", "s2c"])
def test_padded_pixels_are_ignored_by_every_label_function(name):
    b, k, h, w = 2, 3, 8, 8
    cams = torch.ones(b, k, h, w)  # every pixel would be confident foreground
    cls_label = torch.ones(b, k)
    image = torch.rand(b, 3, h, w)
    valid = torch.ones(b, h, w, dtype=torch.bool)
    valid[0, 5:] = False
    valid[1, :, 6:] = False
    seg_logits = torch.zeros(b, k + 1, h, w)
    seg_logits[:, 1] = 5.0
    labels = {
        "par": lambda: par_pseudo_labels(cams, cls_label, Refinement(image, valid, PAR())),
        "bsp": lambda: bsp_pseudo_labels(
            cams[:, :1] * 0, cams, cls_label, Refinement(image, valid, PAR())
        ),
        "cam": lambda: cam_seed_labels(cams, cls_label, valid),
        "s2c": lambda: s2c_labels(seg_logits, valid),
    }[name]()
    assert labels.shape == (b, h, w)
    assert (labels[~valid] == IGN).all()
    assert (labels[valid] != IGN).all()


def test_label_functions_carry_no_gradient():
    cams, cls_label, image, valid = _random_batch(3)
    cams.requires_grad_(True)
    image.requires_grad_(True)
    seg_logits = torch.randn(3, 6, 24, 20, requires_grad=True)
    outs = [
        par_pseudo_labels(cams, cls_label, Refinement(image, valid, PAR())),
        bsp_pseudo_labels(cams[:, :1], cams, cls_label, Refinement(image, valid, PAR())),
        cam_seed_labels(cams, cls_label, valid),
        s2c_labels(seg_logits, valid),
        affinity_labels(s2c_labels(seg_logits, valid), (6, 5)),
    ]
    for out in outs:
        assert not out.requires_grad and out.grad_fn is None
        assert not out.is_floating_point()


def _naive_affinity(small, radius):
    flat = small.flatten().tolist()
    w = small.shape[1]
    n = len(flat)
    out = torch.empty(n, n, dtype=torch.long)
    for i in range(n):
        for j in range(n):
            far = abs(i // w - j // w) > radius or abs(i % w - j % w) > radius
            if far or flat[i] == IGN or flat[j] == IGN:
                out[i, j] = IGN
            else:
                out[i, j] = int(flat[i] == flat[j])
    return out


def test_affinity_labels_radius_and_ignore_by_hand():
    labels = torch.tensor([[[1, 1, 2, IGN, 1]]])
    aff = affinity_labels(labels, (1, 5), radius=2)
    i = IGN
    assert aff.tolist() == [
        [
            [1, 1, 0, i, i],  # pixel 0: pixels 3 (ignored) and 4 (|dx| = 4 > 2) dropped
            [1, 1, 0, i, i],  # pixel 1: pixel 4 is 3 > 2 away
            [0, 0, 1, i, 0],
            [i, i, i, i, i],  # an ignored pixel pairs with nothing, itself included
            [i, i, 0, i, 1],
        ]
    ]
    assert aff.dtype == torch.uint8


def test_affinity_labels_default_radius_is_a_square_window():
    labels = torch.zeros(1, 20, 20, dtype=torch.long)
    aff = affinity_labels(labels, (20, 20))
    idx = lambda y, x: y * 20 + x  # noqa: E731 (row-major)
    assert aff[0, idx(0, 0), idx(8, 8)] == 1  # corner of the window
    assert aff[0, idx(0, 0), idx(0, 9)] == IGN
    assert aff[0, idx(0, 0), idx(9, 0)] == IGN
    assert aff[0, idx(10, 10), idx(2, 18)] == 1


def test_affinity_labels_nearest_resize_symmetry_and_naive_match():
    gen = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 3, (2, 12, 16), generator=gen)
    labels[labels == 2] = IGN
    aff = affinity_labels(labels, (6, 8), radius=3)
    assert aff.shape == (2, 48, 48)
    assert torch.equal(aff, aff.transpose(1, 2))
    small = labels[:, ::2, ::2]  # nearest sampling of an exact 2x downscale
    for i in range(2):
        assert torch.equal(aff[i].long(), _naive_affinity(small[i], 3))
    assert {0, 1, IGN} == set(aff.unique().tolist())


def test_label_functions_reject_bad_shapes():
    cams = torch.rand(1, 2, 4, 4)
    with pytest.raises(ValueError, match="cls_label"):
        cam_seed_labels(cams, torch.ones(1, 3), torch.ones(1, 4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="valid_mask"):
        par_pseudo_labels(
            cams, torch.ones(1, 2), Refinement(torch.rand(1, 3, 4, 4), torch.ones(1, 4, 5), PAR())
        )
    with pytest.raises(ValueError, match="seg_bg"):
        bsp_pseudo_labels(
            torch.rand(1, 2, 4, 4),
            cams,
            torch.ones(1, 2),
            Refinement(torch.rand(1, 3, 4, 4), torch.ones(1, 4, 4, dtype=torch.bool), PAR()),
        )
    with pytest.raises(ValueError, match="REFINE_SCALE"):
        par_pseudo_labels(
            cams,
            torch.ones(1, 2),
            Refinement(torch.rand(1, 3, 4, 4), torch.ones(1, 4, 4), PAR(), scale=2.0),
        )


def test_par_and_bsp_share_the_colour_affinity_through_a_cache():
    cams, cls_label, image, _ = _random_batch(7)
    valid = torch.ones(3, 24, 20, dtype=torch.bool)
    seg_bg = 1 - cams.amax(dim=1, keepdim=True)
    calls = []
    par = PAR()
    affinity = par.affinity
    par.affinity = lambda img: calls.append(tuple(img.shape)) or affinity(img)
    cache = {}
    par_labels = par_pseudo_labels(cams, cls_label, Refinement(image, valid, par, cache=cache))
    bsp = bsp_pseudo_labels(seg_bg, cams, cls_label, Refinement(image, valid, par, cache=cache))
    assert calls == [(3, 3, 12, 10)] and len(cache) == 1  # one affinity for both
    assert torch.equal(
        par_labels, par_pseudo_labels(cams, cls_label, Refinement(image, valid, PAR()))
    )
    assert torch.equal(
        bsp, bsp_pseudo_labels(seg_bg, cams, cls_label, Refinement(image, valid, PAR()))
    )
    # A padded image has its own box: BSP refines it apart, with its own affinity.
    valid[1, :, -5:] = False
    calls.clear()
    cache = {}
    par_pseudo_labels(cams, cls_label, Refinement(image, valid, par, cache=cache))
    bsp_pseudo_labels(seg_bg, cams, cls_label, Refinement(image, valid, par, cache=cache))
    assert calls == [(3, 3, 12, 10), (2, 3, 12, 10), (1, 3, 12, 7)]
