"""Classification AP/F1 on hand-computed examples."""

import uuid

import numpy as np
import pytest
import torch
from detectron2.data import MetadataCatalog

from bmp.evaluation import ClassificationEvaluator, average_precision, classification_metrics


def test_average_precision_by_hand():
    # Ranked: +, -, +, -  -> precision at the positives 1/1 and 2/3 -> AP = (1 + 2/3) / 2.
    assert average_precision([0.9, 0.8, 0.7, 0.6], [1, 0, 1, 0]) == pytest.approx(5 / 6)
    # Ties form one threshold: the order within a tie cannot matter.
    assert average_precision([0.5, 0.5], [1, 0]) == pytest.approx(0.5)
    assert average_precision([0.5, 0.5], [0, 1]) == pytest.approx(0.5)
    assert np.isnan(average_precision([0.1, 0.2], [0, 0]))


def test_metrics_by_hand():
    scores = np.array([[0.9, 0.2], [0.8, 0.6], [0.3, 0.7]])
    labels = np.array([[1, 0], [0, 1], [1, 1]])
    res = classification_metrics(scores, labels, ["a", "b"])
    # class a: ranked +, -, + -> AP 5/6; class b: ranked +, +, - -> AP 1.
    assert res["AP-a"] == pytest.approx(500 / 6) and res["AP-b"] == pytest.approx(100.0)
    assert res["mAP"] == pytest.approx((500 / 6 + 100) / 2)
    # At 0.5: a -> tp 1, fp 1, fn 1; b -> tp 2. Micro F1 = 2*3 / (2*3 + 1 + 1).
    assert res["F1"] == pytest.approx(75.0)
    assert res["F1_macro"] == pytest.approx((50.0 + 100.0) / 2)
    assert res["precision"] == pytest.approx(75.0) and res["recall"] == pytest.approx(75.0)


def test_evaluator_gt_from_labels_or_mask():
    name = f"cls_toy_{uuid.uuid4().hex[:8]}"
    MetadataCatalog.get(name).set(stuff_classes=["background", "a", "b"], ignore_label=255)
    ev = ClassificationEvaluator(name, distributed=False)
    ev.reset()
    ev.process(
        [
            {"file_name": "1", "cls_label": torch.tensor([1.0, 0.0])},
            {"file_name": "2", "sem_seg": torch.tensor([[0, 2], [255, 2]])},
            {"file_name": "3", "cls_label": torch.tensor([1.0, 1.0])},
        ],
        [{"cls_score": torch.tensor(s)} for s in ([0.9, 0.2], [0.8, 0.6], [0.3, 0.7])],
    )
    res = ev.evaluate()["classification"]
    assert res["mAP"] == pytest.approx((500 / 6 + 100) / 2) and res["F1"] == pytest.approx(75.0)
    with pytest.raises(KeyError, match="cls_score"):
        ev.process([{"file_name": "1"}], [{"sem_seg": torch.zeros(3, 2, 2)}])
    with pytest.raises(ValueError, match=r"shape.*\(2,\)"):
        ev.process([{"file_name": "1"}], [{"cls_score": torch.zeros(3)}])
