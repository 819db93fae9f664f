"""Shared fixtures of the modeling tests: a tiny BMP (MiT-tiny, K = 10) and its inputs."""

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

from bmp.config import add_bmp_config
from bmp.utils import deferred_scalars

K = 10
AFTER_WARMUPS = 10_000  # past c2s / s2c / aff (2000) and BSP (4000)


def _cfg(**overrides):
    cfg = get_cfg()
    add_bmp_config(cfg)
    cfg.merge_from_file("configs/synthetic/bmp_mit_tiny.yaml")
    cfg.MODEL.DEVICE = "cpu"
    # The paper's warm-ups (the synthetic config shortens them) and no analysis outputs, so the
    # iterations in the tests mean the same whatever the demo config says.
    cfg.MODEL.BMP.C2S.START_ITER = cfg.MODEL.BMP.S2C.START_ITER = 2000
    cfg.MODEL.BMP.AFFINITY.START_ITER, cfg.MODEL.BMP.BSP.START_ITER = 2000, 4000
    cfg.TEST.BMP.EXTRA_OUTPUTS = cfg.TEST.BMP.SEED_USE_GT_LABELS = False
    for key, value in overrides.items():
        node = cfg
        *path, leaf = key.split(".")
        for p in path:
            node = node[p]
        node[leaf] = value
    return cfg


def _model(**overrides):
    torch.manual_seed(0)
    model = build_model(_cfg(**overrides))
    # A confident foreground class everywhere, so the s2c targets are not all ignored.
    with torch.no_grad():
        model.sem_seg_head.predictor.bias[2] = 5.0
    return model.train()


def _train_inputs(size=64, n=2):
    inputs = []
    for i in range(n):
        valid = torch.ones(size, size, dtype=torch.bool)
        valid[:, size - 8 :] = False  # padded strip, as random crops produce
        label = torch.zeros(K)
        label[[i, 4]] = 1.0
        image = torch.randint(0, 256, (3, size, size), dtype=torch.uint8)
        image[:, ~valid] = 0  # black padding
        inputs.append({"image": image, "cls_label": label, "valid_mask": valid})
    return inputs


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


def _train_step(model, inputs, iteration):
    """One forward in an EventStorage; the scalars the model defers are then written to it, as
    the trainer's writer would at its next write."""
    deferred_scalars.clear()
    with EventStorage(start_iter=iteration) as storage:
        losses = model(inputs)
        deferred_scalars.flush(storage)
    return losses, storage


@pytest.fixture
def make_cfg():
    """``make_cfg(**{"MODEL.X": v})``: the tiny synthetic config with the paper's warm-ups."""
    return _cfg


@pytest.fixture
def make_model():
    """``make_model(**overrides)``: a fresh tiny BMP in train mode."""
    return _model


@pytest.fixture
def tiny():
    """A fresh tiny BMP in train mode (function scope: tests may change it freely)."""
    return _model()


@pytest.fixture
def train_inputs():
    return _train_inputs


@pytest.fixture
def eval_inputs():
    return _eval_inputs


@pytest.fixture
def train_step():
    """``train_step(model, inputs, iteration) -> (losses, storage)`` inside an EventStorage."""
    return _train_step
