"""BMP's pseudo-labeller (bmp.modeling.pseudo_labeller): one code path for targets and seeds."""

import pytest
import torch
import torch.nn.functional as F

from bmp.modeling.par import PAR
from bmp.modeling.pseudo_labeller import PseudoLabeller
from bmp.modeling.pseudo_labels import (
    Refinement,
    affinity_labels,
    bsp_pseudo_labels,
    cam_seed_labels,
    par_pseudo_labels,
    s2c_labels,
)
from bmp.modeling.schedule import Phase
from bmp.modeling.structures import Batch, BranchOutputs

K = 3


def _forward(calls):
    """CAMs from the input's first K channels pooled 4x, segmentation from their negation."""

    def forward(x, with_seg):
        calls.append((x.shape[0], tuple(x.shape[-2:])))
        cam = F.avg_pool2d(x.repeat(1, 1, 1, 1)[:, :K], 4) * 4
        seg = torch.cat([-cam.amax(1, keepdim=True), cam], dim=1) if with_seg else None
        n = cam.shape[-2] * cam.shape[-1]
        return BranchOutputs(cam.amax((2, 3)), cam, seg, torch.rand(x.shape[0], n, n), x.shape[-2:])

    return forward


def _batch(h=32, w=32):
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (2, 3, h, w), generator=gen).float()
    valid = torch.ones(2, h, w, dtype=torch.bool)
    valid[1, :, -6:] = False
    cls_label = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    return Batch(images, (images - 128) / 64, valid, cls_label)


def _labeller():
    return PseudoLabeller(par=PAR(num_iter=2), scales=(1.0, 0.5))


def test_targets_follow_the_phase_and_equal_the_seeds():
    labeller, batch, calls = _labeller(), _batch(), []
    forward = _forward(calls)
    main = forward(batch.x, True)
    calls.clear()
    assert labeller.training_targets(forward, batch, main, Phase(False, False, False, False)) == {}
    s2c_only = labeller.training_targets(forward, batch, main, Phase(False, True, False, False))
    assert calls == [] and set(s2c_only) == {"s2c"}
    expected = s2c_labels(main.seg_up(), batch.valid, labeller.thresholds.sigma_s)
    assert torch.equal(s2c_only["s2c"], expected)

    par_phase = labeller.training_targets(forward, batch, main, Phase(True, False, True, False))
    # [x, flip(x)] at 1.0 (the authors' batch), then 0.5 with its flip
    assert calls == [(4, (32, 32)), (4, (16, 16))]
    maps = labeller.maps(forward, batch, main, with_seg=True, reuse_main=False)
    along = Refinement(batch.images / 255, batch.valid, labeller.par)
    par = par_pseudo_labels(maps.cams, batch.cls_label, along)
    assert torch.equal(par_phase["c2s"], par)
    assert torch.equal(
        par_phase["aff"], affinity_labels(par, (8, 8), labeller.thresholds.aff_radius)
    )

    bsp_phase = labeller.training_targets(forward, batch, main, Phase(True, False, False, True))
    bsp = bsp_pseudo_labels(maps.segs[:, :1], maps.cams, batch.cls_label, along)
    assert torch.equal(bsp_phase["c2s"], bsp) and not torch.equal(bsp, par)


def test_seeds_are_the_training_labels_for_the_given_classes():
    labeller, batch = _labeller(), _batch()
    forward = _forward([])
    main = forward(batch.x, True)
    cams, seeds = labeller.seeds(forward, batch, main, batch.cls_label)
    maps = labeller.maps(forward, batch, main, with_seg=True)
    assert torch.equal(cams, maps.cams)
    assert torch.equal(seeds["cam"], cam_seed_labels(maps.cams, batch.cls_label, batch.valid))
    targets = labeller.training_targets(forward, batch, main, Phase(True, False, True, False))
    assert torch.equal(seeds["par"], targets["c2s"])
    assert (seeds["bsp"][1][~batch.valid[1]] == 255).all()


def test_bad_requests_are_errors():
    labeller, batch = _labeller(), _batch()
    forward = _forward([])
    main = forward(batch.x, True)
    maps = labeller.maps(forward, batch, main, with_seg=False)
    with pytest.raises(ValueError, match="with_seg"):
        labeller.seed("bsp", maps, batch.cls_label, batch)
    with pytest.raises(ValueError, match="kind"):
        labeller.seed("crf", maps, batch.cls_label, batch)
    with pytest.raises(ValueError, match="SCALES"):
        PseudoLabeller(par=PAR(), scales=())


def test_all_passes_run_the_authors_passes_where_no_label_needs_them():
    labeller, batch, calls = _labeller(), _batch(), []
    forward = _forward(calls)
    main = forward(batch.x, True)
    calls.clear()
    warmup = Phase(False, False, False, False)
    assert labeller.training_targets(forward, batch, main, warmup, all_passes=True) == {}
    assert calls == [(4, (32, 32)), (4, (16, 16))]
    calls.clear()
    assert labeller.training_targets(forward, batch, main, warmup) == {} and calls == []
