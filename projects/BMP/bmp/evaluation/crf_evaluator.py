"""Run any segmentation evaluator on CRF-refined predictions.

The model returns logits; the CRF is post-processing, so it lives outside the model, as a wrapper
around an evaluator. Wrapping detectron2's ``SemSegEvaluator`` under a second result key gives
mIoU with and without CRF from the same forward passes, the way WSSS papers report both;
wrapping the submission writer makes the VOC test PNGs CRF-refined.
"""

from typing import Callable, Dict, List, Mapping, Optional, Sequence

import numpy as np
import torch
from detectron2.evaluation import DatasetEvaluator

from ..data.image_io import read_image_rgb
from .crf import CRFParams, dense_crf, require_crf

__all__ = ["CRFRefinedEvaluator", "crf_refine_output"]


def crf_refine_output(
    image_rgb: np.ndarray, sem_seg_logits: torch.Tensor, params: CRFParams
) -> torch.Tensor:
    """(C, H, W) logits at image size -> (C, H, W) CRF marginals of their softmax."""
    probs = torch.softmax(sem_seg_logits.detach().float(), dim=0).cpu().numpy()
    return torch.from_numpy(dense_crf(image_rgb, probs, params))


class CRFRefinedEvaluator(DatasetEvaluator):
    """Feed ``inner`` the outputs with ``sem_seg`` replaced by CRF marginals.

    The CRF image is the input's ``file_name`` read from disk, so it has the original size the
    model's ``sem_seg`` comes at, whatever test-time resizing the mapper did. With
    ``result_key`` set, the inner evaluator's single result group is renamed (e.g. ``sem_seg`` ->
    ``sem_seg_crf``) so it can sit next to the uncorrected one in ``DatasetEvaluators``.
    """

    def __init__(
        self,
        inner: DatasetEvaluator,
        params: CRFParams = CRFParams(),
        result_key: Optional[str] = None,
        read_image: Callable[[str], np.ndarray] = read_image_rgb,
    ) -> None:
        require_crf()  # fail when the evaluator is built, not after the first inference
        self._inner = inner
        self._params = params
        self._result_key = result_key
        self._read_image = read_image

    def reset(self) -> None:
        self._inner.reset()

    def process(self, inputs: Sequence[Mapping], outputs: Sequence[Mapping]) -> None:
        refined: List[Dict] = []
        for inp, out in zip(inputs, outputs):
            if "sem_seg" not in out:
                raise KeyError(
                    f"the model gave no 'sem_seg' for {inp.get('file_name')}; "
                    "TEST.CRF needs semantic segmentation outputs"
                )
            image = self._read_image(inp["file_name"])
            if image.shape[:2] != tuple(out["sem_seg"].shape[-2:]):
                raise ValueError(
                    f"'{inp['file_name']}' is {image.shape[:2]} but its sem_seg is "
                    f"{tuple(out['sem_seg'].shape[-2:])}; CRF needs predictions at image size"
                )
            new = dict(out)
            new["sem_seg"] = crf_refine_output(image, out["sem_seg"], self._params)
            refined.append(new)
        self._inner.process(inputs, refined)

    def evaluate(self):
        results = self._inner.evaluate()
        if results is None or self._result_key is None:
            return results
        if len(results) != 1:
            raise ValueError(
                f"cannot rename the results of {type(self._inner).__name__} to "
                f"'{self._result_key}': it returned {len(results)} groups ({list(results)})"
            )
        return {self._result_key: next(iter(results.values()))}
