"""The fully supervised ceiling (bmp.modeling.meta_arch.supervised)."""

import pytest
import torch
import torch.nn.functional as F

from bmp.modeling import BMPSupervised

K = 10


def _supervised_inputs(train_inputs):
    inputs = train_inputs()
    for i, d in enumerate(inputs):
        mask = torch.zeros(d["image"].shape[-2:], dtype=torch.long)
        mask[10:30, 10:30] = i + 1
        mask[~d["valid_mask"]] = 255
        d["sem_seg"] = mask
    return inputs


def test_trains_the_decoder_on_the_masks_with_cross_entropy(make_model, train_inputs, train_step):
    model = make_model(
        **{"MODEL.META_ARCHITECTURE": "BMPSupervised", "INPUT.DATASET_MAPPER_NAME": "supervised"}
    )
    assert isinstance(model, BMPSupervised)
    inputs = _supervised_inputs(train_inputs)
    torch.manual_seed(3)  # the same dropout masks in both passes
    losses, _ = train_step(model, inputs, 0)  # no warm-up: the masks are there from the start
    assert set(losses) == {"loss_cls", "loss_sem_seg"}
    x = model.preprocess(inputs).x
    torch.manual_seed(3)
    seg = model.forward_branches(x).seg_up()
    target = torch.stack([d["sem_seg"] for d in inputs])
    torch.testing.assert_close(
        losses["loss_sem_seg"], F.cross_entropy(seg, target, ignore_index=255)
    )
    losses["loss_sem_seg"].backward()
    assert model.sem_seg_head.predictor.weight.grad.abs().sum() > 0
    model.eval()
    assert tuple(model([inputs[0]])[0]["sem_seg"].shape) == (K + 1, 64, 64)


def test_refuses_inputs_without_masks(make_model, train_inputs):
    model = make_model(**{"MODEL.META_ARCHITECTURE": "BMPSupervised"})
    with pytest.raises(KeyError, match="supervised"):
        model(train_inputs())
