"""Write predictions as palette PNGs for a benchmark server (e.g. the PASCAL VOC test split).

Test splits have no ground truth: "evaluating" them means writing one PNG per image, named after
the image, whose pixel values are class ids and whose palette is the dataset's colours, which is
the format the VOC evaluation server expects (``results/VOC2012/Segmentation/comp6_test_cls/``).
"""

import logging
import os
from collections import OrderedDict
from typing import Dict, List, Mapping, Sequence

import numpy as np
from detectron2.data import MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils.comm import all_gather, is_main_process, synchronize
from PIL import Image

__all__ = ["SemSegSubmissionWriter", "VOC_SUBMISSION_DIR"]

logger = logging.getLogger(__name__)

# Where the VOC server looks for segmentation results inside the uploaded archive
# (comp6: trained with data beyond VOC's own, as SBD-augmented WSSS models are).
VOC_SUBMISSION_DIR = os.path.join("results", "VOC2012", "Segmentation", "comp6_test_cls")


def _palette(colors: Sequence[Sequence[int]]) -> List[int]:
    flat = [int(c) for rgb in colors for c in rgb]
    return flat + [0] * (768 - len(flat))


class SemSegSubmissionWriter(DatasetEvaluator):
    """Save ``argmax(outputs["sem_seg"])`` of every image as ``<output_dir>/<stem>.png``.

    Every rank writes its own images; ``evaluate`` reports how many were written in total.
    """

    def __init__(self, dataset_name: str, output_dir: str) -> None:
        meta = MetadataCatalog.get(dataset_name)
        colors = meta.get("stuff_colors")
        if not colors:
            raise ValueError(
                f"dataset '{dataset_name}' has no stuff_colors in its metadata; the submission "
                "PNGs need the dataset's palette"
            )
        self._dataset_name = dataset_name
        self._output_dir = output_dir
        self._palette = _palette(colors)
        self._written: List[str] = []

    def reset(self) -> None:
        self._written = []

    def process(self, inputs: Sequence[Mapping], outputs: Sequence[Mapping]) -> None:
        os.makedirs(self._output_dir, exist_ok=True)
        for inp, out in zip(inputs, outputs):
            if "sem_seg" not in out:
                raise KeyError(
                    f"the model gave no 'sem_seg' for {inp.get('file_name')}; the submission "
                    "writer needs semantic segmentation outputs"
                )
            pred = out["sem_seg"].argmax(dim=0).cpu().numpy().astype(np.uint8)
            stem = os.path.splitext(os.path.basename(inp["file_name"]))[0]
            png = Image.fromarray(pred, mode="P")
            png.putpalette(self._palette)
            dst = os.path.join(self._output_dir, stem + ".png")
            png.save(dst)
            self._written.append(dst)

    def evaluate(self) -> Dict[str, Dict[str, float]]:
        synchronize()
        total = sum(len(w) for w in all_gather(self._written))
        if is_main_process():
            logger.info(
                f"Wrote {total} submission PNGs for {self._dataset_name} to {self._output_dir}"
            )
        return OrderedDict(submission={"num_images": float(total)})
