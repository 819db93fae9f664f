"""Affinity head: symmetrised attention logits -> 1x1 conv -> sigmoid."""

import pytest
import torch

from bmp.modeling.heads.affinity_head import AffinityHead


def test_hand_computed_affinity():
    head = AffinityHead(2)
    with torch.no_grad():
        head.attn_proj.weight.copy_(torch.tensor([1.0, -1.0]).view(1, 2, 1, 1))
        head.attn_proj.bias.fill_(0.5)
    attn = torch.tensor([[[[1.0, 2.0], [0.0, 3.0]], [[0.0, 1.0], [1.0, 0.0]]]])
    # symmetrised: map0 [[2, 2], [2, 6]], map1 [[0, 2], [2, 0]]; map0 - map1 + 0.5
    expected = torch.sigmoid(torch.tensor([[[2.5, 0.5], [0.5, 6.5]]]))
    torch.testing.assert_close(head(attn), expected)


def test_output_is_symmetric_and_names_match_the_contract():
    head = AffinityHead(16)
    out = head(torch.randn(2, 16, 9, 9))
    assert tuple(out.shape) == (2, 9, 9)
    torch.testing.assert_close(out, out.transpose(1, 2))
    assert ((out > 0) & (out < 1)).all()
    shapes = {k: tuple(v.shape) for k, v in head.state_dict().items()}
    assert shapes == {"attn_proj.weight": (1, 16, 1, 1), "attn_proj.bias": (1,)}


def test_wrong_number_of_maps_is_reported():
    with pytest.raises(ValueError, match="16"):
        AffinityHead(16)(torch.randn(1, 8, 4, 4))
    with pytest.raises(ValueError):
        AffinityHead(0)
