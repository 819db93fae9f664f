"""Train-mode passes that leave BatchNorm statistics alone (bmp.modeling.bn_stats)."""

import torch
from torch import nn

from bmp.modeling.bn_stats import frozen_bn_stats


def test_frozen_bn_stats_uses_batch_statistics_but_keeps_the_buffers():
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)).train()
    x = torch.randn(8, 3, 5, 5) * 3 + 2
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with frozen_bn_stats(model):
        y = model(x)
    # Batch statistics were used: each channel of the output is normalised.
    torch.testing.assert_close(y.mean(dim=(0, 2, 3)), torch.zeros(4), atol=1e-5, rtol=0)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert model[1].momentum == 0.1
    model(x)  # outside the context the statistics move again
    assert not torch.equal(model[1].running_mean, before["1.running_mean"])
