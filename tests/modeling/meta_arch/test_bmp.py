"""BMP meta-architecture end to end on a tiny MiT: losses, phases, gradient paths, inference."""

import copy

import pytest
import torch
import torch.nn.functional as F
from detectron2.modeling import build_model
from torch.profiler import ProfilerActivity, profile

import bmp.modeling.meta_arch.bmp as meta
import bmp.modeling.pseudo_labeller as labeller_module
from bmp.modeling import BMPWithTTA

K = 10
AFTER_WARMUPS = 10_000


def _grads(loss, params):
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    return [g for g in grads if g is not None and g.abs().sum() > 0]


def _count_passes(model, calls):
    """Record (batch, h, w) of the classifier's features at every pass of the branches."""
    return model.cls_head.register_forward_pre_hook(
        lambda _m, args: calls.append((args[0].shape[0], *args[0].shape[-2:]))
    )


def _record_seeds(model, used):
    seed = model.pseudo_labeller.seed
    model.pseudo_labeller.seed = lambda kind, *a, **k: used.append(kind) or seed(kind, *a, **k)


def test_after_warmups_all_losses_finite_and_every_parameter_trained(
    tiny, train_inputs, train_step
):
    losses, storage = train_step(tiny, train_inputs(), AFTER_WARMUPS)
    assert set(losses) == {"loss_cls", "loss_c2s", "loss_s2c", "loss_aff"}
    for name, value in losses.items():
        assert torch.isfinite(value) and value.item() > 0, name
    sum(losses.values()).backward()
    missing = [
        n
        for n, p in tiny.named_parameters()
        if p.requires_grad and not (p.grad is not None and p.grad.abs().sum() > 0)
    ]
    assert missing == []
    ratio = storage.latest()["bmp/pseudo_ignore_ratio"][0]
    assert 0.0 < ratio < 1.0  # BSP ignores the padded strip's neighbourhood, not everything


def test_ignore_ratio_is_not_logged_without_real_pixels(tiny, train_inputs, train_step):
    inputs = train_inputs()
    for d in inputs:
        d["valid_mask"][:] = False
    losses, storage = train_step(tiny, inputs, AFTER_WARMUPS)
    assert "bmp/pseudo_ignore_ratio" not in storage.latest()
    assert losses["loss_c2s"].item() == 0.0 and torch.isfinite(losses["loss_aff"])


def test_before_warmups_only_cls_loss_and_passes_for_batchnorm_alone(
    tiny, train_inputs, train_step
):
    passes, used = [], []
    _count_passes(tiny, passes)
    _record_seeds(tiny, used)
    bn = tiny.sem_seg_head.linear_fuse.norm
    losses, _ = train_step(tiny, train_inputs(), 0)
    assert losses["loss_cls"].item() > 0
    assert [losses[k].item() for k in ("loss_c2s", "loss_s2c", "loss_aff")] == [0.0, 0.0, 0.0]
    # The authors run every multi-scale pass at every iteration: no label is built, but their
    # BatchNorm updates happen (the training pass and three scales).
    assert passes == [(2, 4, 4), (4, 4, 4), (4, 2, 2), (4, 6, 6)] and used == []
    assert bn.num_batches_tracked.item() == 4
    # Zero losses stay in the graph: every parameter is used (DDP without unused parameters).
    grads = torch.autograd.grad(sum(losses.values()), list(tiny.parameters()), allow_unused=True)
    assert all(g is not None for g in grads)


def test_frozen_batchnorm_statistics_skip_the_passes_no_label_needs(
    make_model, train_inputs, train_step
):
    model = make_model(**{"MODEL.BMP.PSEUDO.FREEZE_BN_STATS": True})
    passes, segs = [], []
    _count_passes(model, passes)
    model.sem_seg_head.register_forward_hook(lambda *_: segs.append(1))
    train_step(model, train_inputs(), 0)
    assert passes == [(2, 4, 4)]  # the main forward only
    passes.clear()
    train_step(model, train_inputs(), 2001)  # PAR labels: the decoder runs in the main pass only
    assert len(passes) == 4 and len(segs) == 2
    assert model.sem_seg_head.linear_fuse.norm.num_batches_tracked.item() == 2


def test_passes_are_the_authors_and_labels_switch_to_bsp(tiny, train_inputs, train_step):
    passes, used = [], []
    _count_passes(tiny, passes)
    _record_seeds(tiny, used)
    segs = []
    tiny.sem_seg_head.register_forward_hook(lambda *_: segs.append(1))
    train_step(tiny, train_inputs(), 2001)  # c2s, s2c, aff on; BSP not yet
    # main pass (B), then [x, flip(x)] at each scale 1.0, 0.5 and 1.5 (2B each), decoder
    # included (its BatchNorm statistics update as in the authors' passes)
    assert passes == [(2, 4, 4), (4, 4, 4), (4, 2, 2), (4, 6, 6)] and len(segs) == 4
    assert used == ["par"]
    passes.clear(), used.clear()
    train_step(tiny, train_inputs(), 4000)
    assert used == ["par", "bsp"] and len(passes) == 4


def test_reusing_the_main_pass_is_an_option(make_model, train_inputs, train_step):
    model = make_model(**{"MODEL.BMP.PSEUDO.REUSE_MAIN_PASS": True})
    passes = []
    _count_passes(model, passes)
    train_step(model, train_inputs(), AFTER_WARMUPS)
    # main pass (B) reused at scale 1.0, whose flip runs alone (B)
    assert passes == [(2, 4, 4), (2, 4, 4), (4, 2, 2), (4, 6, 6)]


def test_s2c_alone_needs_no_extra_pass(make_model, train_inputs, train_step):
    model = make_model(
        **{
            "MODEL.BMP.C2S.START_ITER": 10**9,
            "MODEL.BMP.AFFINITY.START_ITER": 10**9,
            "MODEL.BMP.PSEUDO.FREEZE_BN_STATS": True,
        }
    )
    passes = []
    _count_passes(model, passes)
    losses, _ = train_step(model, train_inputs(), 2000)
    assert passes == [(2, 4, 4)]
    assert losses["loss_s2c"].item() > 0 and losses["loss_c2s"].item() == 0.0


def test_the_steps_are_named_for_the_profiler(tiny, train_inputs, train_step):
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        train_step(tiny, train_inputs(), AFTER_WARMUPS)
    names = {e.key for e in prof.key_averages()}
    expected = {
        "bmp.forward",
        "bmp.pseudo_labels",
        "bmp.losses",
        "bmp.multiscale.scale_0.5",
        "bmp.pseudo_labels.par",
        "bmp.pseudo_labels.bsp",
        "bmp.pseudo_labels.aff",
    }
    assert expected <= names


def test_pseudo_label_passes_update_batchnorm_statistics_as_the_authors(
    tiny, train_inputs, train_step
):
    """The training pass, then [x, flip x] at scales 1, 0.5, 1.5: four updates, in that order."""
    reference = copy.deepcopy(tiny)
    inputs = train_inputs()
    x = reference.preprocess(inputs).x
    with torch.no_grad():
        reference.forward_branches(x, with_attention=True)
        for s in (1.0, 0.5, 1.5):
            size = (int(x.shape[-2] * s), int(x.shape[-1] * s))
            xs = (
                x if s == 1.0 else F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            )
            reference.forward_branches(torch.cat([xs, xs.flip(-1)]))
    train_step(tiny, inputs, AFTER_WARMUPS)
    bn, ref_bn = tiny.sem_seg_head.linear_fuse.norm, reference.sem_seg_head.linear_fuse.norm
    assert bn.num_batches_tracked.item() == 4
    torch.testing.assert_close(bn.running_mean, ref_bn.running_mean)
    torch.testing.assert_close(bn.running_var, ref_bn.running_var)
    assert bn.num_batches_tracked.item() == ref_bn.num_batches_tracked.item()


def test_frozen_batchnorm_statistics_are_an_option(make_model, train_inputs, train_step):
    model = make_model(**{"MODEL.BMP.PSEUDO.FREEZE_BN_STATS": True})
    reference = copy.deepcopy(model)
    inputs = train_inputs()
    reference.forward_branches(reference.preprocess(inputs).x, with_attention=True)
    train_step(model, inputs, AFTER_WARMUPS)
    bn, ref_bn = model.sem_seg_head.linear_fuse.norm, reference.sem_seg_head.linear_fuse.norm
    torch.testing.assert_close(bn.running_mean, ref_bn.running_mean)
    torch.testing.assert_close(bn.running_var, ref_bn.running_var)
    assert bn.num_batches_tracked.item() == ref_bn.num_batches_tracked.item()
    assert bn.momentum == ref_bn.momentum


def test_gradients_only_flow_through_intended_paths(tiny, train_inputs, train_step):
    losses, _ = train_step(tiny, train_inputs(), AFTER_WARMUPS)
    classifier = [tiny.cls_head.classifier.weight]
    decoder = list(tiny.sem_seg_head.parameters())
    affinity = list(tiny.affinity_head.parameters())
    backbone = list(tiny.backbone.parameters())
    assert _grads(losses["loss_cls"], classifier) and _grads(losses["loss_cls"], backbone)
    assert _grads(losses["loss_cls"], decoder + affinity) == []
    # c2s trains the decoder and the backbone, but not the classifier: the interaction weights
    # are detached and the pseudo labels are integers.
    assert _grads(losses["loss_c2s"], classifier) == []
    assert _grads(losses["loss_c2s"], decoder) and _grads(losses["loss_c2s"], backbone)
    # s2c targets come from the detached segmentation output.
    assert _grads(losses["loss_s2c"], decoder + affinity) == []
    assert _grads(losses["loss_s2c"], classifier)
    assert _grads(losses["loss_aff"], decoder + classifier) == []
    assert _grads(losses["loss_aff"], affinity) and _grads(losses["loss_aff"], backbone)


def test_interaction_detach_is_what_keeps_the_classifier_out_of_c2s(
    tiny, train_inputs, train_step, monkeypatch
):
    # The check above can fail: with an undetached confidence the classifier does get c2s grads.
    monkeypatch.setattr(
        meta,
        "cam_confidence",
        lambda cam, size: torch.sigmoid(
            F.interpolate(cam, size=size, mode="bilinear").amax(dim=1, keepdim=True)
        ),
    )
    losses, _ = train_step(tiny, train_inputs(), AFTER_WARMUPS)
    assert _grads(losses["loss_c2s"], [tiny.cls_head.classifier.weight])


def test_interaction_off_feeds_the_decoder_plain_features(make_model, train_inputs):
    on, off = make_model(), make_model(**{"MODEL.BMP.INTERACTION.ENABLED": False})
    off.load_state_dict(on.state_dict())
    x = on.preprocess(train_inputs()).x
    on.eval(), off.eval()
    with torch.no_grad():
        seg_on, seg_off = on.forward_branches(x).seg_logits, off.forward_branches(x).seg_logits
        feats = {n: f for n, f in off.backbone(x).items() if n in off.seg_in_features}
        torch.testing.assert_close(seg_off, off.sem_seg_head(feats))
    assert (seg_on - seg_off).abs().max() > 1e-3


def test_no_event_storage_means_everything_is_active(tiny, train_inputs):
    losses = tiny(train_inputs())
    assert all(v.item() > 0 for v in losses.values())


def test_inference_outputs_at_original_size_for_mixed_sizes(tiny, eval_inputs):
    tiny.eval()
    inputs = eval_inputs()
    out = tiny(inputs)
    assert [tuple(o["sem_seg"].shape) for o in out] == [(K + 1, 130, 140), (K + 1, 49, 47)]
    assert set(out[0]) == {"sem_seg", "cls_score"}
    # cls_score is the sigmoid of the pooled classifier on the same pass (no ground truth used).
    x = tiny.preprocess(inputs[:1]).x
    with torch.no_grad():
        expected = torch.sigmoid(tiny.cls_head(tiny.backbone(x)[tiny.cls_in_feature]))[0]
    torch.testing.assert_close(out[0]["cls_score"], expected)
    alone = tiny(inputs[1:])[0]["sem_seg"]
    torch.testing.assert_close(out[1]["sem_seg"], alone)


def test_test_time_augmentation_fuses_flips_and_scales(make_cfg, make_model):
    cfg = make_cfg(**{"TEST.AUG.SCALES": [1.0], "TEST.AUG.FLIP": True})
    model = make_model().eval()
    image = torch.randint(0, 256, (3, 64, 72), dtype=torch.uint8)
    tta = BMPWithTTA(cfg, model)([{"image": image}])[0]["sem_seg"]
    plain = model([{"image": image}])[0]["sem_seg"]
    flipped = model([{"image": image.flip(-1)}])[0]["sem_seg"].flip(-1)
    torch.testing.assert_close(tta, (plain + flipped) / 2, rtol=1e-4, atol=1e-4)
    # Scales are max-fused, each pass upsampled to its own input size first.
    multi = BMPWithTTA(cfg, model, scales=[1.0, 0.5])([{"image": image}])[0]["sem_seg"]
    half = F.interpolate(image[None].float(), scale_factor=0.5, mode="bilinear")
    half = half.round().clamp(0, 255).to(torch.uint8)[0]
    assert tuple(multi.shape) == (K + 1, 64, 72)
    assert (multi >= tta - 1e-5).all()  # the max over scales includes scale 1
    out = BMPWithTTA(cfg, model)([{"image": image, "height": 32, "width": 36}])[0]
    assert tuple(out["sem_seg"].shape) == (K + 1, 32, 36) and "cls_score" in out
    with pytest.raises(TypeError, match="BMP"):
        BMPWithTTA(cfg, torch.nn.Linear(2, 2))
    del half


def test_extra_outputs_use_predicted_classes_unless_asked(make_model, eval_inputs, monkeypatch):
    model = make_model(**{"TEST.BMP.EXTRA_OUTPUTS": True}).eval()
    presence = []
    fn = labeller_module.cam_seed_labels
    monkeypatch.setattr(
        labeller_module,
        "cam_seed_labels",
        lambda c, p, *a, **k: presence.append(p) or fn(c, p, *a, **k),
    )
    inputs = eval_inputs(second=(66, 64))  # the 0.5 pseudo scale needs >= 64 px for MiT
    out = model(inputs)
    for o, d in zip(out, inputs):
        size = (d["height"], d["width"])
        assert tuple(o["cam"].shape) == (K, *size)
        assert o["cam"].min() >= 0 and o["cam"].max() <= 1
        assert set(o["seeds"]) == {"cam", "par", "bsp"}
        for seed in o["seeds"].values():
            assert seed.dtype == torch.long and tuple(seed.shape) == size
            assert set(seed.unique().tolist()) <= set(range(K + 1)) | {255}
    with torch.no_grad():
        logits = model.forward_branches(model.preprocess(inputs[:1]).x).cls_logits
    expected = torch.sigmoid(logits) > 0.5
    expected[0, logits.argmax()] = True
    assert torch.equal(presence[0], expected.float())

    model.seed_use_gt_labels = True
    with pytest.raises(KeyError, match="SEED_USE_GT_LABELS"):
        model(inputs)
    label = torch.zeros(K)
    label[6] = 1.0
    presence.clear()
    seeds = model([{**inputs[0], "cls_label": label}])[0]["seeds"]
    assert torch.equal(presence[0], label[None])
    for seed in seeds.values():
        assert set(seed.unique().tolist()) <= {0, 7, 255}


def test_eval_seeds_ignore_the_padding_an_input_marks(make_model, train_inputs):
    model = make_model(**{"TEST.BMP.EXTRA_OUTPUTS": True, "TEST.BMP.SEED_USE_GT_LABELS": True})
    model.eval()
    d = train_inputs(n=1)[0]
    seeds = model([d])[0]["seeds"]
    for name in ("par", "bsp", "cam"):
        assert (seeds[name][~d["valid_mask"]] == 255).all(), name
        assert (seeds[name][d["valid_mask"]] != 255).any(), name


def test_resnet_backbone_builds_and_trains_without_affinity(
    make_model, train_inputs, eval_inputs, train_step
):
    overrides = {
        "MODEL.BACKBONE.NAME": "build_resnet_backbone",
        "MODEL.RESNETS.DEPTH": 50,
        "MODEL.RESNETS.OUT_FEATURES": ["res2", "res3", "res4", "res5"],
        "MODEL.SEM_SEG_HEAD.IN_FEATURES": ["res2", "res3", "res4", "res5"],
        "MODEL.BMP.CLS_IN_FEATURE": "res5",
        "MODEL.PIXEL_MEAN": [123.675, 116.28, 103.53],
        "MODEL.PIXEL_STD": [58.395, 57.12, 57.375],
    }
    with pytest.raises(ValueError, match="MODEL.BMP.AFFINITY.ENABLED"):
        make_model(**overrides)
    model = make_model(**overrides, **{"MODEL.BMP.AFFINITY.ENABLED": False})
    assert model.affinity_head is None
    losses, _ = train_step(model, train_inputs(), AFTER_WARMUPS)
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["loss_aff"].item() == 0.0 and losses["loss_c2s"].item() > 0
    sum(losses.values()).backward()
    assert model.cls_head.classifier.weight.grad.abs().sum() > 0
    model.eval()
    assert tuple(model([eval_inputs()[0]])[0]["sem_seg"].shape) == (K + 1, 130, 140)


def test_config_errors_name_the_key(make_cfg, make_model):
    with pytest.raises(ValueError, match="MODEL.SEM_SEG_HEAD.NUM_CLASSES"):
        build_model(make_cfg(**{"MODEL.SEM_SEG_HEAD.NUM_CLASSES": K}))
    assert build_model(make_cfg(**{"MODEL.SEM_SEG_HEAD.NUM_CLASSES": K + 1})) is not None
    with pytest.raises(ValueError, match="MODEL.BMP.CLS_IN_FEATURE"):
        build_model(make_cfg(**{"MODEL.BMP.CLS_IN_FEATURE": "res5"}))
    with pytest.raises(ValueError, match="MODEL.BMP.S2C.LOSS"):
        build_model(make_cfg(**{"MODEL.BMP.S2C.LOSS": "bce"}))
    with pytest.raises(KeyError, match="cls_label"):
        make_model()([{"image": torch.zeros(3, 64, 64, dtype=torch.uint8)}])


def test_s2c_gate_settings_are_checked(make_cfg):
    with pytest.raises(ValueError, match="GATE_AGREEMENT"):
        build_model(make_cfg(**{"MODEL.BMP.S2C.GATE_AGREEMENT": 1.5}))
    off = {"MODEL.BMP.S2C.GATE_AGREEMENT": 0.9, "MODEL.BMP.C2S.ENABLED": False}
    with pytest.raises(ValueError, match="C2S.ENABLED"):
        build_model(make_cfg(**off))
    with pytest.raises(ValueError, match="GATE_MOMENTUM"):
        build_model(make_cfg(**{"MODEL.BMP.S2C.GATE_MOMENTUM": 1.0}))
