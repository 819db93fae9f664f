"""bmp/engine/finite_loss.py: a non-finite loss stops training, naming the loss and iteration."""

import itertools

import pytest
import torch
from detectron2.engine import SimpleTrainer
from detectron2.utils.events import EventStorage
from torch import nn

from bmp.engine.finite_loss import add_finite_loss_check, check_losses_finite


def test_finite_losses_pass():
    check_losses_finite({"loss_cls": torch.tensor(0.5), "loss_c2s": torch.tensor(0.0)}, 3)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_message_names_loss_and_iteration(bad):
    losses = {"loss_cls": torch.tensor(0.5), "loss_s2c": torch.tensor(bad)}
    with pytest.raises(FloatingPointError, match=rf"loss_s2c={bad} at iteration 17") as e:
        check_losses_finite(losses, 17)
    assert "loss_cls" not in str(e.value)


class _NaNAt(nn.Module):
    """Returns BMP-like losses; loss_c2s becomes NaN from iteration ``bad_iter`` on."""

    def __init__(self, bad_iter: int):
        super().__init__()
        self.w = nn.Parameter(torch.ones(2))
        self.bad_iter = bad_iter
        self.calls = 0

    def forward(self, batch):
        from detectron2.utils.events import get_event_storage

        it = get_event_storage().iter
        self.calls += 1
        c2s = self.w.sum() * (float("nan") if it >= self.bad_iter else 1.0)
        return {"loss_cls": self.w.square().sum(), "loss_c2s": c2s}


def test_trainer_stops_before_the_optimizer_step():
    model = add_finite_loss_check(_NaNAt(bad_iter=3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = SimpleTrainer(model, itertools.repeat([{}]), opt)
    with pytest.raises(FloatingPointError, match="loss_c2s=nan at iteration 3"):
        trainer.train(0, 10)
    assert model.calls == 4
    assert torch.isfinite(model.w).all()  # the NaN step never reached the weights


def test_write_metrics_still_logs_every_loss():
    model = add_finite_loss_check(_NaNAt(bad_iter=100))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = SimpleTrainer(model, itertools.repeat([{}]), opt)
    with EventStorage(0) as storage:
        trainer.storage = storage
        trainer.iter = 0
        trainer.run_step()
        assert {"loss_cls", "loss_c2s", "total_loss"} <= set(storage.histories())


def test_a_bare_forward_outside_training_is_checked_too():
    model = add_finite_loss_check(nn.Linear(2, 2))
    model.forward = lambda x: {"loss_x": torch.tensor(float("nan"))}  # noqa: E731
    with pytest.raises(FloatingPointError, match="loss_x=nan"):
        model(torch.zeros(1, 2))
