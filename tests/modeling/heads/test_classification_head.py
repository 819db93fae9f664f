"""Classification head: CAMs are the classifier per pixel; pooled logits as the authors pool."""

import pytest
import torch

from bmp.modeling.heads.classification_head import ClassificationHead


def test_cam_logits_are_the_classifier_applied_per_pixel():
    head = ClassificationHead(4, 3)
    x = torch.randn(2, 4, 5, 6)
    cam = head.cam_logits(x)
    expected = torch.einsum("bchw,kc->bkhw", x, head.classifier.weight[:, :, 0, 0])
    torch.testing.assert_close(cam, expected)
    assert head.classifier.bias is None
    assert tuple(head.classifier.weight.shape) == (3, 4, 1, 1)


def test_max_pooling_pools_features_before_the_classifier():
    head = ClassificationHead(2, 1, pooling="max")
    with torch.no_grad():
        head.classifier.weight.fill_(1.0)
    x = torch.tensor([[[[1.0, 5.0], [2.0, 0.0]], [[4.0, 0.0], [0.0, 3.0]]]])
    # per-channel maxima (5, 4) -> 9; the CAM's maximum would be 5 (= 1 + 4 or 5 + 0)
    assert head(x).tolist() == [[9.0]]
    assert head.cam_logits(x).max().item() == 5.0


def test_avg_pooled_logits_equal_the_mean_cam():
    head = ClassificationHead(4, 3, pooling="avg")
    x = torch.randn(2, 4, 5, 6)
    torch.testing.assert_close(head(x), head.cam_logits(x).mean(dim=(2, 3)))


def test_bad_pooling_names_the_key():
    with pytest.raises(ValueError, match="MODEL.BMP.CLASSIFIER.POOLING"):
        ClassificationHead(4, 3, pooling="gem")
