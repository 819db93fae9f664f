"""Device discipline and host syncs of a training step, checked on the ``meta`` device.

A model on ``meta`` has shapes but no data, like a GPU seen from the host: a tensor created
without the input's device lands on the CPU and fails when mixed with the model's, and every
read of a value on the host (``.item()``, ``bool``, ``.tolist()``, boolean indexing, ``nonzero``)
is what would wait for the GPU. Tensors the data loader made on the host (labels, valid masks)
stay CPU tensors here as on a GPU machine, so reading them is not counted.
"""

import pytest
import torch
from detectron2.utils.events import EventStorage
from torch.utils._python_dispatch import TorchDispatchMode

import bmp.modeling.meta_arch.bmp as meta
from bmp.engine.finite_loss import add_finite_loss_check

AFTER_WARMUPS = 10_000
# Host syncs a training step may make (outside detectron2's metric writer): the one agreement
# exchange that reads every process's losses (and later stop requests) per step.
SYNC_BUDGET = 2

_DATA_DEPENDENT = {
    torch.ops.aten.nonzero.default,
    torch.ops.aten.masked_select.default,
    torch.ops.aten.bincount.default,
    torch.ops.aten.unique_consecutive.default,
    torch.ops.aten._unique2.default,
}


class HostReads(TorchDispatchMode):
    """Counts reads of ``meta`` (device) values on the host, answering them with zeros."""

    def __init__(self):
        super().__init__()
        self.reads: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        on_device = [a for a in args if isinstance(a, torch.Tensor) and a.device.type == "meta"]
        if on_device and func is torch.ops.aten._local_scalar_dense.default:
            self.reads.append("scalar")
            return 0
        if on_device and func is torch.ops.aten._to_copy.default:
            if kwargs.get("device") == torch.device("cpu"):
                self.reads.append("copy to host")
                return torch.zeros(args[0].shape, dtype=kwargs.get("dtype") or args[0].dtype)
        boolean_index = func is torch.ops.aten.index.Tensor and any(
            isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in (args[1] or [])
        )
        if on_device and (func in _DATA_DEPENDENT or boolean_index):
            raise AssertionError(f"{func} reads device values to size its output (a host sync)")
        return func(*args, **kwargs)


def _step_on_meta(model, inputs, iteration):
    model = add_finite_loss_check(model.to("meta"))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    with EventStorage(iteration), HostReads() as reads:
        losses = model(inputs)
        sum(losses.values()).backward()
        opt.step()
    return losses, reads.reads


@pytest.mark.parametrize("iteration", [0, 2001, AFTER_WARMUPS])
def test_a_training_step_stays_on_the_device_and_within_the_sync_budget(
    tiny, train_inputs, iteration
):
    losses, reads = _step_on_meta(tiny, train_inputs(), iteration)
    assert all(v.device.type == "meta" for v in losses.values())
    assert len(reads) <= SYNC_BUDGET, reads
    assert reads == ["copy to host"]  # the agreement exchange


def test_the_s2c_gate_adds_no_host_sync(make_model, train_inputs):
    model = make_model(**{"MODEL.BMP.S2C.GATE_AGREEMENT": 0.25})
    _, reads = _step_on_meta(model, train_inputs(), AFTER_WARMUPS)
    assert reads == ["copy to host"]


def test_a_tensor_created_on_the_wrong_device_fails(tiny, train_inputs, monkeypatch):
    """The check can fail: a confidence map made on the CPU is mixed with device features."""

    def planted(cam_logits, size):
        return torch.ones(cam_logits.shape[0], 1, *size)  # no device=: lands on the CPU

    monkeypatch.setattr(meta, "cam_confidence", planted)
    with pytest.raises(RuntimeError, match="device"):
        _step_on_meta(tiny, train_inputs(), AFTER_WARMUPS)


def test_a_planted_host_read_is_counted(tiny, train_inputs, monkeypatch):
    original = meta.BMP.forward

    def forward(self, batched_inputs):
        losses = original(self, batched_inputs)
        float(losses["loss_cls"])  # a read of a device value
        return losses

    monkeypatch.setattr(meta.BMP, "forward", forward)
    _, reads = _step_on_meta(tiny, train_inputs(), AFTER_WARMUPS)
    assert reads == ["scalar", "copy to host"]


def test_a_stop_vote_travels_in_the_same_exchange(tiny, train_inputs):
    from bmp.engine import agreement

    agreement.add_voter("stop_requested", lambda: 1.0)
    try:
        _, reads = _step_on_meta(tiny, train_inputs(), AFTER_WARMUPS)
        assert reads == ["copy to host"]
        assert agreement.latest("stop_requested") == [0.0]  # meta's host copy reads zeros
    finally:
        agreement.remove_voter("stop_requested")
