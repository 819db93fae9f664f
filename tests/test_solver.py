"""The recipe's param groups and the warm-up + poly LR schedule (bmp/solver.py)."""

import pytest
import torch
from detectron2.config import get_cfg
from torch import nn

from bmp.config import add_bmp_config
from bmp.solver import (
    build_bmp_lr_scheduler,
    build_bmp_optimizer,
    build_warmup_poly_multiplier,
    get_bmp_param_groups,
)


class _Heads(nn.Module):
    def __init__(self, name: str, layer: nn.Module):
        super().__init__()
        self.add_module(name, layer)


class _TinyBMP(nn.Module):
    """Same top-level names as the BMP meta-arch, with one norm layer in backbone and decoder."""

    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Conv2d(4, 4, 1))
        self.cls_head = _Heads("classifier", nn.Conv2d(4, 2, 1, bias=False))
        self.affinity_head = _Heads("attn_proj", nn.Conv2d(3, 1, 1))
        self.sem_seg_head = nn.Sequential(nn.Conv2d(4, 4, 1, bias=False), nn.BatchNorm2d(4))


def _cfg(**solver):
    cfg = get_cfg()
    add_bmp_config(cfg)
    cfg.SOLVER.MAX_ITER = 100
    cfg.SOLVER.WARMUP_ITERS = 10
    for k, v in solver.items():
        setattr(cfg.SOLVER, k, v)
    return cfg


def _names_of(group, model):
    ids = {id(p) for p in group["params"]}
    return sorted(n for n, p in model.named_parameters() if id(p) in ids)


def test_four_groups_lr_and_decay():
    model = _TinyBMP()
    groups = {g["name"]: g for g in get_bmp_param_groups(model, 1e-3, 0.01, 10.0, True)}
    assert list(groups) == ["backbone", "backbone_norm", "cls_aff_heads", "decoder"]
    assert _names_of(groups["backbone"], model) == [
        "backbone.0.bias",
        "backbone.0.weight",
        "backbone.2.bias",
        "backbone.2.weight",
    ]
    assert _names_of(groups["backbone_norm"], model) == ["backbone.1.bias", "backbone.1.weight"]
    assert _names_of(groups["cls_aff_heads"], model) == [
        "affinity_head.attn_proj.bias",
        "affinity_head.attn_proj.weight",
        "cls_head.classifier.weight",
    ]
    assert _names_of(groups["decoder"], model) == [
        "sem_seg_head.0.weight",
        "sem_seg_head.1.bias",
        "sem_seg_head.1.weight",
    ]
    assert (groups["backbone"]["lr"], groups["backbone"]["weight_decay"]) == (1e-3, 0.01)
    assert (groups["backbone_norm"]["lr"], groups["backbone_norm"]["weight_decay"]) == (0.0, 0.0)
    assert groups["cls_aff_heads"]["lr"] == pytest.approx(1e-2)
    assert groups["decoder"]["lr"] == pytest.approx(1e-2)
    total = sum(len(g["params"]) for g in groups.values())
    assert total == len(list(model.parameters()))


def test_unfrozen_norm_uses_base_lr_and_norm_decay():
    groups = {g["name"]: g for g in get_bmp_param_groups(_TinyBMP(), 1e-3, 0.01, 10.0, False, 0.5)}
    assert (groups["backbone_norm"]["lr"], groups["backbone_norm"]["weight_decay"]) == (1e-3, 0.5)


def test_unknown_top_level_module_still_trained():
    model = _TinyBMP()
    model.extra = nn.Linear(2, 2)
    groups = {g["name"]: g for g in get_bmp_param_groups(model, 1e-3, 0.01)}
    assert "extra.weight" in _names_of(groups["backbone"], model)


def test_optimizer_is_adamw_with_recipe_hyperparameters():
    opt = build_bmp_optimizer(_cfg(BASE_LR=6e-5), _TinyBMP())
    assert isinstance(opt, torch.optim.AdamW)
    assert opt.defaults["betas"] == (0.9, 0.999) and opt.defaults["eps"] == 1e-8
    lrs = {g["name"]: g["lr"] for g in opt.param_groups}
    assert lrs == pytest.approx(
        {"backbone": 6e-5, "backbone_norm": 0.0, "cls_aff_heads": 6e-4, "decoder": 6e-4}
    )
    with pytest.raises(ValueError, match="SOLVER.OPTIMIZER"):
        build_bmp_optimizer(_cfg(OPTIMIZER="SGD"), _TinyBMP())


def test_frozen_norm_does_not_move_after_steps():
    model = _TinyBMP()
    opt = build_bmp_optimizer(_cfg(BASE_LR=1e-2), model)
    before = model.backbone[1].weight.detach().clone()
    w_before = model.backbone[0].weight.detach().clone()
    for _ in range(3):
        opt.zero_grad()
        y = model.backbone[1](model.backbone[0](torch.randn(5, 3)))
        y.square().sum().backward()
        opt.step()
    assert torch.equal(model.backbone[1].weight, before)
    assert not torch.equal(model.backbone[0].weight, w_before)


def test_multiplier_values_follow_the_authors_warmup_then_poly():
    m = build_warmup_poly_multiplier(100, 10, 1e-6, 1.0)
    assert m(0.0) == pytest.approx(1e-6)
    assert m(0.05) == pytest.approx(0.5 * (1e-6 + 1.0))  # half-way through warm-up
    assert m(0.09) == pytest.approx(1e-6 + (1 - 1e-6) * 0.9)  # last warm-up iteration
    assert m(0.10) == pytest.approx(0.9)  # then the poly curve of the global iteration
    assert m(0.50) == pytest.approx(0.5)
    assert m(0.99) == pytest.approx(0.01)
    assert build_warmup_poly_multiplier(100, 0, 1e-6, 2.0)(0.5) == pytest.approx(0.25)
    assert build_warmup_poly_multiplier(100, 10, 0.1, 1.0, "constant")(0.05) == 0.1


def test_multiplier_equals_the_authors_expressions_bit_for_bit():
    """Their PolyWarmupAdamW at global step t (warm-up 1500, 20000 iterations, ratio 1e-6)."""
    m = build_warmup_poly_multiplier(20000, 1500, 1e-6, 1.0)
    for t in (0, 1, 750, 1499):
        assert m(t / 20000) == 1 - (1 - t / 1500) * (1 - 1e-6)
    for t in (1500, 1501, 10000, 19999):
        assert m(t / 20000) == (1 - t / 20000) ** 1.0
    assert m(1499 / 20000) > 0.999 and m(1500 / 20000) == 0.925  # the step down


def test_continuous_shape_is_detectron2s_warmup_onto_the_poly_curve():
    m = build_warmup_poly_multiplier(100, 10, 1e-6, 1.0, shape="continuous")
    assert m(0.05) == pytest.approx(0.5 * (1e-6 + 0.9))
    assert m(0.10) == pytest.approx(0.9)
    with pytest.raises(ValueError, match="WARMUP_SHAPE"):
        build_warmup_poly_multiplier(100, 10, 1e-6, 1.0, shape="cosine")


def test_scheduler_keeps_group_ratios_through_training():
    cfg = _cfg(BASE_LR=1e-3, WARMUP_FACTOR=1e-6)
    opt = build_bmp_optimizer(cfg, _TinyBMP())
    sched = build_bmp_lr_scheduler(cfg, opt)

    def lrs():
        return {g["name"]: g["lr"] for g in opt.param_groups}

    seen = {}
    for it in range(100):
        seen[it] = lrs()
        opt.step()
        sched.step()
    assert seen[0]["backbone"] == pytest.approx(1e-9)
    assert seen[10]["backbone"] == pytest.approx(0.9e-3)
    assert seen[50]["backbone"] == pytest.approx(0.5e-3)
    assert seen[50]["decoder"] == pytest.approx(0.5e-2)
    assert seen[50]["cls_aff_heads"] == pytest.approx(0.5e-2)
    assert seen[99]["backbone"] == pytest.approx(1e-5)
    assert all(v["backbone_norm"] == 0.0 for v in seen.values())
    assert lrs()["backbone"] == pytest.approx(0.0, abs=1e-12)


def test_scheduler_resumes_from_state_dict():
    cfg = _cfg(BASE_LR=1e-3)
    opt = build_bmp_optimizer(cfg, _TinyBMP())
    sched = build_bmp_lr_scheduler(cfg, opt)
    for _ in range(30):
        opt.step()
        sched.step()
    state = sched.state_dict()
    opt2 = build_bmp_optimizer(cfg, _TinyBMP())
    sched2 = build_bmp_lr_scheduler(cfg, opt2)
    sched2.load_state_dict(state)
    opt2.step()
    sched2.step()
    opt.step()
    sched.step()
    assert [g["lr"] for g in opt2.param_groups] == pytest.approx(
        [g["lr"] for g in opt.param_groups]
    )
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-3 * (1 - 31 / 100))


def test_other_scheduler_names_go_to_detectron2():
    cfg = _cfg(LR_SCHEDULER_NAME="WarmupCosineLR", WARMUP_ITERS=0)
    opt = build_bmp_optimizer(cfg, _TinyBMP())
    sched = build_bmp_lr_scheduler(cfg, opt)
    for _ in range(50):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5 * cfg.SOLVER.BASE_LR)


def _step_with_grads(cfg, grads):
    model = _TinyBMP()
    opt = build_bmp_optimizer(cfg, model)
    params = [p for g in opt.param_groups for p in g["params"]]
    for p, value in zip(params, grads):
        p.grad = torch.full_like(p, value)
    opt.step()
    return params


@pytest.mark.parametrize("clip_type", ["value", "norm", "full_model"])
def test_clip_gradients_is_honoured(clip_type):
    cfg = _cfg()
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = clip_type
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 0.5
    params = _step_with_grads(cfg, [3.0] * 100)
    grads = torch.cat([p.grad.flatten() for p in params])
    if clip_type == "value":
        assert grads.abs().max() == pytest.approx(0.5)
    elif clip_type == "norm":  # each parameter's own norm
        assert max(float(p.grad.norm()) for p in params) == pytest.approx(0.5, rel=1e-4)
    else:  # the norm of all gradients together
        assert float(grads.norm()) == pytest.approx(0.5, rel=1e-4)


def test_clip_gradients_off_leaves_gradients_and_a_wrong_type_is_refused():
    params = _step_with_grads(_cfg(), [3.0] * 100)
    assert all(float(p.grad.abs().max()) == 3.0 for p in params)
    cfg = _cfg()
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "global"
    with pytest.raises(ValueError, match="SOLVER.CLIP_GRADIENTS.CLIP_TYPE='global'"):
        build_bmp_optimizer(cfg, _TinyBMP())
