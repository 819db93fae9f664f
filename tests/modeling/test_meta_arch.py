"""BMP meta-architecture end to end on a tiny MiT: losses, schedule, gradient paths, inference."""

import copy

import pytest
import torch
import torch.nn.functional as F
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

import bmp.modeling.meta_arch.bmp as meta
from bmp.config import add_bmp_config

K = 10
AFTER_WARMUPS = 10_000  # past c2s / s2c / aff (2000) and BSP (4000)


def _cfg(**overrides):
    cfg = get_cfg()
    add_bmp_config(cfg)
    cfg.merge_from_file("configs/synthetic/bmp_mit_tiny.yaml")
    cfg.MODEL.DEVICE = "cpu"
    # The paper's warm-ups (the synthetic config shortens them) and no analysis outputs, so the
    # iterations below mean the same whatever the demo config says.
    cfg.MODEL.BMP.C2S.START_ITER = cfg.MODEL.BMP.S2C.START_ITER = 2000
    cfg.MODEL.BMP.AFF_START_ITER, cfg.MODEL.BMP.BSP.START_ITER = 2000, 4000
    cfg.TEST.BMP.EXTRA_OUTPUTS = cfg.TEST.BMP.SEED_USE_GT_LABELS = False
    for key, value in overrides.items():
        node = cfg
        *path, leaf = key.split(".")
        for p in path:
            node = node[p]
        node[leaf] = value
    return cfg


def _model(**overrides):
    model = build_model(_cfg(**overrides))
    # A confident foreground class everywhere, so the s2c targets are not all ignored.
    with torch.no_grad():
        model.sem_seg_head.predictor.bias[2] = 5.0
    return model.train()


def _inputs(size=64, n=2):
    inputs = []
    for i in range(n):
        valid = torch.ones(size, size, dtype=torch.bool)
        valid[:, size - 8 :] = False  # padded strip, as random crops produce
        label = torch.zeros(K)
        label[[i, 4]] = 1.0
        image = torch.randint(0, 256, (3, size, size), dtype=torch.uint8)
        inputs.append({"image": image, "cls_label": label, "valid_mask": valid})
    return inputs


def _train_step(model, inputs, iteration):
    with EventStorage(start_iter=iteration) as storage:
        losses = model(inputs)
    return losses, storage


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return _model()


def _grads(loss, params):
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    return [g for g in grads if g is not None and g.abs().sum() > 0]


def test_after_warmups_all_losses_finite_and_every_parameter_trained(tiny):
    tiny.zero_grad()
    losses, storage = _train_step(tiny, _inputs(), AFTER_WARMUPS)
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
    assert 0.0 <= ratio <= 1.0
    assert "bmp/time_pseudo_labels" in storage.latest()


def test_before_warmups_only_cls_loss_and_no_pseudo_label_work(tiny, monkeypatch):
    calls = []
    monkeypatch.setattr(meta, "par_pseudo_labels", lambda *a, **k: calls.append("par"))
    monkeypatch.setattr(tiny.backbone, "_forward", _counting(tiny.backbone._forward, calls))
    losses, _ = _train_step(tiny, _inputs(), 0)
    assert losses["loss_cls"].item() > 0
    assert [losses[k].item() for k in ("loss_c2s", "loss_s2c", "loss_aff")] == [0.0, 0.0, 0.0]
    assert calls == [(2, 64)]  # the main forward only
    # Zero losses stay in the graph: every parameter is used (DDP without unused parameters).
    grads = torch.autograd.grad(sum(losses.values()), list(tiny.parameters()), allow_unused=True)
    assert all(g is not None for g in grads)


def _counting(fn, calls):
    def wrapped(x, *args, **kwargs):
        calls.append((x.shape[0], x.shape[-1]))
        return fn(x, *args, **kwargs)

    return wrapped


def test_passes_are_shared_and_labels_switch_to_bsp(tiny, monkeypatch):
    passes, used = [], []
    monkeypatch.setattr(tiny.backbone, "_forward", _counting(tiny.backbone._forward, passes))
    for name in ("par_pseudo_labels", "bsp_pseudo_labels"):
        fn = getattr(meta, name)
        monkeypatch.setattr(
            meta, name, lambda *a, _fn=fn, _n=name, **k: used.append(_n) or _fn(*a, **k)
        )
    _train_step(tiny, _inputs(), 2000)  # c2s, s2c, aff on; BSP not yet
    # main pass (B), flip at scale 1.0 (B), scales 0.5 and 1.5 with their flips (2B each)
    assert passes == [(2, 64), (2, 64), (4, 32), (4, 96)]
    assert used == ["par_pseudo_labels"]
    passes.clear(), used.clear()
    _train_step(tiny, _inputs(), 4000)
    assert used == ["par_pseudo_labels", "bsp_pseudo_labels"]
    assert len(passes) == 4


def test_s2c_alone_needs_no_extra_pass(monkeypatch):
    model = _model(**{"MODEL.BMP.C2S.START_ITER": 10**9, "MODEL.BMP.AFF_START_ITER": 10**9})
    passes = []
    monkeypatch.setattr(model.backbone, "_forward", _counting(model.backbone._forward, passes))
    losses, _ = _train_step(model, _inputs(), 2000)
    assert passes == [(2, 64)]
    assert losses["loss_s2c"].item() > 0 and losses["loss_c2s"].item() == 0.0


def test_pseudo_label_passes_leave_batchnorm_statistics_alone(tiny):
    reference = copy.deepcopy(tiny)
    inputs = _inputs()
    images = torch.stack([d["image"] for d in inputs]).float()
    reference._forward_branches(reference._normalize(images), with_attention=True)
    _train_step(tiny, inputs, AFTER_WARMUPS)
    bn, ref_bn = tiny.sem_seg_head.linear_fuse.norm, reference.sem_seg_head.linear_fuse.norm
    torch.testing.assert_close(bn.running_mean, ref_bn.running_mean)
    torch.testing.assert_close(bn.running_var, ref_bn.running_var)
    assert bn.num_batches_tracked.item() == ref_bn.num_batches_tracked.item()
    assert bn.momentum == ref_bn.momentum


def test_gradients_only_flow_through_intended_paths(tiny):
    losses, _ = _train_step(tiny, _inputs(), AFTER_WARMUPS)
    classifier = [tiny.cls_head.classifier.weight]
    decoder = list(tiny.sem_seg_head.parameters())
    affinity = list(tiny.affinity_head.parameters())
    backbone = list(tiny.backbone.parameters())
    # c2s trains the decoder and the encoder, never the classifier: the interaction weights
    # are detached and the pseudo labels are integers.
    assert _grads(losses["loss_c2s"], classifier) == []
    assert _grads(losses["loss_c2s"], decoder) and _grads(losses["loss_c2s"], backbone)
    # s2c targets come from the detached segmentation output.
    assert _grads(losses["loss_s2c"], decoder + affinity) == []
    assert _grads(losses["loss_s2c"], classifier)
    assert _grads(losses["loss_aff"], decoder + classifier) == []
    assert _grads(losses["loss_aff"], affinity) and _grads(losses["loss_aff"], backbone)


def test_interaction_detach_is_what_keeps_the_classifier_out_of_c2s(tiny, monkeypatch):
    # The check above can fail: with an undetached confidence the classifier does get c2s grads.
    monkeypatch.setattr(
        meta,
        "cam_confidence",
        lambda cam, size: torch.sigmoid(
            F.interpolate(cam, size=size, mode="bilinear").amax(dim=1, keepdim=True)
        ),
    )
    losses, _ = _train_step(tiny, _inputs(), AFTER_WARMUPS)
    assert _grads(losses["loss_c2s"], [tiny.cls_head.classifier.weight])


def test_no_event_storage_means_everything_is_active(tiny):
    losses = tiny(_inputs())
    assert all(v.item() > 0 for v in losses.values())


def _eval_inputs(second=(49, 47)):
    return [
        {
            "image": torch.randint(0, 256, (3, 65, 71), dtype=torch.uint8),
            "height": 130,
            "width": 140,
        },
        {
            "image": torch.randint(0, 256, (3, *second), dtype=torch.uint8),
            "height": second[0],
            "width": second[1],
        },
    ]


def test_inference_outputs_at_original_size_for_mixed_sizes(tiny):
    tiny.eval()
    inputs = _eval_inputs()
    out = tiny(inputs)
    assert [tuple(o["sem_seg"].shape) for o in out] == [(K + 1, 130, 140), (K + 1, 49, 47)]
    assert set(out[0]) == {"sem_seg", "cls_score"}
    # cls_score is the sigmoid of the pooled classifier on the same pass (no ground truth used).
    assert out[0]["cls_score"].shape == (K,)
    x = (inputs[0]["image"][None].float() - tiny.pixel_mean) / tiny.pixel_std
    with torch.no_grad():
        expected = torch.sigmoid(tiny.cls_head(tiny.backbone(x)[tiny.cls_in_feature]))[0]
    torch.testing.assert_close(out[0]["cls_score"], expected)
    alone = tiny(inputs[1:])[0]["sem_seg"]
    torch.testing.assert_close(out[1]["sem_seg"], alone)
    tiny.train()


def test_test_time_augmentation_fuses_flips_and_scales():
    model = _model(**{"TEST.AUG.ENABLED": True, "TEST.AUG.SCALES": [1.0], "TEST.AUG.FLIP": True})
    model.eval()
    image = torch.randint(0, 256, (3, 64, 72), dtype=torch.uint8)
    tta = model([{"image": image}])[0]["sem_seg"]
    model.test_aug = False
    plain = model([{"image": image}])[0]["sem_seg"]
    flipped = model([{"image": image.flip(-1)}])[0]["sem_seg"].flip(-1)
    torch.testing.assert_close(tta, (plain + flipped) / 2, rtol=1e-4, atol=1e-4)
    model.test_aug, model.test_scales = True, [1.0, 0.5, 0.75]
    multi = model([{"image": image, "height": 32, "width": 36}])[0]["sem_seg"]
    assert tuple(multi.shape) == (K + 1, 32, 36)


def test_extra_outputs_use_predicted_classes_unless_asked(monkeypatch):
    model = _model(**{"TEST.BMP.EXTRA_OUTPUTS": True}).eval()
    presence = []
    fn = meta.cam_seed_labels
    monkeypatch.setattr(
        meta, "cam_seed_labels", lambda c, p, *a, **k: presence.append(p) or fn(c, p, *a, **k)
    )
    inputs = _eval_inputs(second=(66, 64))  # the 0.5 pseudo scale needs >= 64 px for MiT
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
        image = inputs[0]["image"][None].float()
        logits = model._forward_branches(model._normalize(image)).cls_logits
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


def test_resnet_backbone_builds_and_trains_without_affinity():
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
        _model(**overrides)
    model = _model(**overrides, **{"MODEL.BMP.AFFINITY.ENABLED": False})
    assert model.affinity_head is None
    losses, _ = _train_step(model, _inputs(), AFTER_WARMUPS)
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["loss_aff"].item() == 0.0 and losses["loss_c2s"].item() > 0
    sum(losses.values()).backward()
    assert model.cls_head.classifier.weight.grad.abs().sum() > 0
    model.eval()
    assert tuple(model([_eval_inputs()[0]])[0]["sem_seg"].shape) == (K + 1, 130, 140)


def test_config_errors_name_the_key():
    with pytest.raises(ValueError, match="MODEL.SEM_SEG_HEAD.NUM_CLASSES"):
        build_model(_cfg(**{"MODEL.SEM_SEG_HEAD.NUM_CLASSES": K}))
    with pytest.raises(ValueError, match="MODEL.BMP.CLS_IN_FEATURE"):
        build_model(_cfg(**{"MODEL.BMP.CLS_IN_FEATURE": "res5"}))
    with pytest.raises(KeyError, match="cls_label"):
        _model()([{"image": torch.zeros(3, 64, 64, dtype=torch.uint8)}])
