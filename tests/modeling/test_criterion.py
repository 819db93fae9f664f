"""BMP's criterion (bmp.modeling.criterion): phases, weights, graph-connected zeros."""

import pytest
import torch

from bmp.modeling.criterion import BMPCriterion, agreement_counts, label_agreement
from bmp.modeling.losses import affinity_loss, c2s_loss, classification_loss, s2c_loss
from bmp.modeling.schedule import LossSchedule, Phase
from bmp.modeling.structures import BranchOutputs

IGN = 255


def _criterion(**kwargs):
    schedule = LossSchedule(c2s_start=10, s2c_start=20, aff_start=30, bsp_start=40)
    return BMPCriterion(schedule=schedule, **kwargs)


def _outputs(with_affinity=True):
    gen = torch.Generator().manual_seed(0)
    cls = torch.randn(2, 3, generator=gen, requires_grad=True)
    cam = torch.randn(2, 3, 2, 2, generator=gen, requires_grad=True)
    seg = torch.randn(2, 4, 2, 2, generator=gen, requires_grad=True)
    aff = torch.rand(2, 4, 4, generator=gen, requires_grad=True) if with_affinity else None
    return BranchOutputs(cls, cam, seg, aff, (4, 4))


def test_phase_follows_the_schedule_and_the_switches():
    c = _criterion()
    assert c.phase(5) == Phase(False, False, False, False)
    assert c.phase(25) == Phase(True, True, False, False)
    assert c.phase(45) == Phase(True, True, True, True)
    off = _criterion(s2c_enabled=False, aff_enabled=False, bsp_enabled=False)
    assert off.phase(45) == Phase(True, False, False, False)
    assert Phase(True, False, True, True).needs_par and Phase(True, False, True, True).needs_bsp
    assert not Phase(False, True, False, True).needs_maps  # s2c reads the main pass only


def test_forward_weights_each_active_term():
    c = _criterion(lambda_c2s=0.7, lambda_s2c=0.2, lambda_aff=0.3, c2s_loss_mode="ce")
    out = _outputs()
    gen = torch.Generator().manual_seed(1)
    cls_label = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    targets = {
        "c2s": torch.randint(0, 4, (2, 4, 4), generator=gen),
        "s2c": torch.randint(0, 3, (2, 4, 4), generator=gen),
        "aff": torch.randint(0, 2, (2, 4, 4), generator=gen).to(torch.uint8),
    }
    targets["s2c"][0, 0] = IGN
    losses = c(out, targets, cls_label, Phase(True, True, True, True))
    torch.testing.assert_close(losses["loss_cls"], classification_loss(out.cls_logits, cls_label))
    torch.testing.assert_close(
        losses["loss_c2s"], 0.7 * c2s_loss(out.seg_up(), targets["c2s"], "ce")
    )
    torch.testing.assert_close(losses["loss_s2c"], 0.2 * s2c_loss(out.cam_up(), targets["s2c"]))
    torch.testing.assert_close(
        losses["loss_aff"], 0.3 * affinity_loss(out.affinity, targets["aff"])
    )


def test_inactive_terms_are_zeros_that_keep_every_output_in_the_graph():
    c = _criterion()
    out = _outputs()
    losses = c(out, {}, torch.ones(2, 3), Phase(False, False, False, False))
    assert [losses[k].item() for k in ("loss_c2s", "loss_s2c", "loss_aff")] == [0.0] * 3
    sum(losses.values()).backward()
    for t in (out.cls_logits, out.cam_logits, out.seg_logits, out.affinity):
        assert t.grad is not None
    no_aff = c(
        _outputs(with_affinity=False), {}, torch.ones(2, 3), Phase(False, False, True, False)
    )
    assert no_aff["loss_aff"].item() == 0.0


def test_missing_target_of_an_active_term_is_an_error():
    with pytest.raises(KeyError, match="c2s"):
        _criterion()(_outputs(), {}, torch.ones(2, 3), Phase(True, False, False, False))


def test_s2c_gate_waits_for_the_segmentation_branch_and_then_latches():
    c = _criterion(s2c_gate=0.75, s2c_gate_momentum=0.0)  # the current batch alone
    out = _outputs()
    seg_argmax = out.seg_up().argmax(dim=1)
    s2c = torch.zeros(2, 4, 4, dtype=torch.long)
    phase = Phase(True, True, False, False)
    wrong = (seg_argmax + 1) % 4  # the branch disagrees with every c2s label
    closed = c(out, {"c2s": wrong, "s2c": s2c}, torch.ones(2, 3), phase)
    assert closed["loss_s2c"].item() == 0.0 and not bool(c.s2c_open)
    mostly = seg_argmax.clone()
    mostly[0, 0, :] = wrong[0, 0, :]  # 4 of 32 pixels wrong: 82.9% class-balanced agreement
    opened = c(out, {"c2s": mostly, "s2c": s2c}, torch.ones(2, 3), phase)
    assert opened["loss_s2c"].item() > 0 and bool(c.s2c_open)
    # Latched: later disagreement does not close it; the state is in the state dict.
    again = c(out, {"c2s": wrong, "s2c": s2c}, torch.ones(2, 3), phase)
    assert again["loss_s2c"].item() > 0 and "s2c_open" in c.state_dict()
    # Off (the paper): s2c from its start iteration, whatever the agreement.
    paper = _criterion()(out, {"c2s": wrong, "s2c": s2c}, torch.ones(2, 3), phase)
    assert paper["loss_s2c"].item() > 0


def test_s2c_gate_opens_on_the_smoothed_agreement_not_one_batch():
    c = _criterion(s2c_gate=0.6, s2c_gate_momentum=0.5)
    out = _outputs()
    seg_argmax = out.seg_up().argmax(dim=1)
    s2c = torch.zeros(2, 4, 4, dtype=torch.long)
    phase = Phase(True, True, False, False)

    def step(c2s):
        return c(out, {"c2s": c2s, "s2c": s2c}, torch.ones(2, 3), phase)["loss_s2c"].item()

    # Agreement 1.0 each batch: the average goes 0.5, then 0.75 >= 0.6, and the gate opens.
    assert step(seg_argmax) == 0.0 and c.s2c_agreement.item() == 0.5
    assert step(seg_argmax) > 0 and bool(c.s2c_open)
    # One lucky batch among bad ones: 0.5, then 0.25 -- never open.
    lucky = _criterion(s2c_gate=0.6, s2c_gate_momentum=0.5)
    wrong = (seg_argmax + 1) % 4
    for c2s in (seg_argmax, wrong):
        out_lucky = lucky(out, {"c2s": c2s, "s2c": s2c}, torch.ones(2, 3), phase)
        assert out_lucky["loss_s2c"].item() == 0.0
    assert lucky.s2c_agreement.item() == 0.25 and "s2c_agreement" in lucky.state_dict()


def test_s2c_gate_stays_closed_for_a_branch_that_predicts_only_background():
    c = _criterion(s2c_gate=0.75, s2c_gate_momentum=0.0)
    seg = torch.zeros(1, 3, 1, 10)
    seg[:, 0] = 1.0  # argmax: background everywhere
    out = BranchOutputs(torch.zeros(1, 2), torch.zeros(1, 2, 1, 10), seg, None, (1, 10))
    c2s = torch.tensor([[[0] * 9 + [2]]])  # 9 of 10 labelled pixels agree, but class 2 has none
    phase = Phase(True, True, False, False)
    losses = c(
        out, {"c2s": c2s, "s2c": torch.zeros(1, 1, 10, dtype=torch.long)}, torch.ones(1, 2), phase
    )
    assert losses["loss_s2c"].item() == 0.0 and not bool(c.s2c_open)


def test_label_agreement_averages_over_the_labelled_classes():
    logits = torch.tensor([[[[2.0, 0.0, 1.0]], [[0.0, 3.0, 0.0]]]])  # argmax [0, 1, 0]
    assert label_agreement(logits, torch.tensor([[[0, 0, IGN]]]), IGN) == 0.5
    # class 0: 1 of 1 matched, class 1: 1 of 2 matched -> (1 + 0.5) / 2, not 2 of 3 pixels
    assert label_agreement(logits, torch.tensor([[[0, 1, 1]]]), IGN) == 0.75
    assert label_agreement(logits, torch.full((1, 1, 3), IGN), IGN) is None
    counts = agreement_counts(logits, torch.tensor([[[0, 1, 1]]]), IGN)
    assert counts.tolist() == [[1, 1], [1, 2]] and counts.dtype == torch.int64


def test_agreement_counts_rejects_a_label_outside_the_classes():
    logits = torch.zeros(1, 2, 1, 2)
    with pytest.raises(ValueError, match="label 5 is outside the 2 classes"):
        agreement_counts(logits, torch.tensor([[[0, 5]]]), IGN)
    with pytest.raises(ValueError, match="label -1 is outside the 2 classes"):
        agreement_counts(logits, torch.tensor([[[0, -1]]]), IGN)
