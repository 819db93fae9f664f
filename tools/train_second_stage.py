#!/usr/bin/env python
"""Train detectron2's DeepLab project on exported pseudo masks (the WSSS "second stage").

    python tools/train_second_stage.py --pseudo-masks output/pseudo_masks/bsp \
        --deeplab-train-net ~/detectron2/projects/DeepLab/train_net.py \
        --config-file configs/second_stage/deeplabv3plus_R_103_voc_pseudo.yaml --num-gpus 8

DeepLab's ``train_net.py`` ships with detectron2's sources, not with its package, so point at it.
This script registers the export (``tools/export_pseudo_masks.py``) as
``bmp_pseudo_masks_train`` next to BMP's datasets (``voc_2012_val_sem_seg`` for evaluation), then
runs DeepLab's ``main`` unchanged with detectron2's ``launch``; every other argument is DeepLab's
(``--eval-only``, ``--resume``, ``KEY VALUE`` overrides). Worker processes started by ``launch``
import this file again and register the same export from ``$BMP_PSEUDO_MASKS``.
"""

import argparse
import importlib
import os
import sys
from typing import List, Optional

DATASET_NAME = "bmp_pseudo_masks_train"
ENV = "BMP_PSEUDO_MASKS"


def register_from_env() -> None:
    """Register ``$BMP_PSEUDO_MASKS`` as :data:`DATASET_NAME` (also in launched workers)."""
    export_dir = os.environ.get(ENV)
    if not export_dir:
        return
    from detectron2.data import DatasetCatalog, MetadataCatalog

    import bmp  # noqa: F401  (registers BMP's datasets, e.g. voc_2012_val_sem_seg)
    from bmp.data.datasets.register_pseudo_masks import register_pseudo_masks

    if DATASET_NAME in DatasetCatalog.list():  # e.g. a stale $BMP_PSEUDO_MASKS at import
        DatasetCatalog.remove(DATASET_NAME)
        MetadataCatalog.remove(DATASET_NAME)
    register_pseudo_masks(DATASET_NAME, export_dir)


def load_deeplab_train_net(path: str):
    """Import DeepLab's ``train_net.py`` as module ``train_net`` (importable by workers too)."""
    path = os.path.abspath(os.path.expanduser(path))
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"--deeplab-train-net '{path}' not found; it is projects/DeepLab/train_net.py in a "
            "detectron2 source checkout"
        )
    sys.path.insert(0, os.path.dirname(path))
    sys.modules.pop("train_net", None)  # BMP's own train_net.py must not shadow DeepLab's
    module = importlib.import_module("train_net")
    if not hasattr(module, "main"):
        raise AttributeError(f"'{path}' defines no main(args); is it DeepLab's train_net.py?")
    return module


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--pseudo-masks", required=True, help="folder written by export_pseudo_masks")
    p.add_argument("--deeplab-train-net", required=True, help="detectron2's DeepLab train_net.py")
    ours, rest = p.parse_known_args(argv)
    from detectron2.engine import default_argument_parser, launch

    from bmp.data.datasets.register_pseudo_masks import read_export_info

    try:
        read_export_info(ours.pseudo_masks)
        train_net = load_deeplab_train_net(ours.deeplab_train_net)
    except (FileNotFoundError, ValueError, AttributeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    os.environ[ENV] = os.path.abspath(ours.pseudo_masks)
    register_from_env()
    args = default_argument_parser().parse_args(rest)
    launch(
        train_net.main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )
    return 0


register_from_env()

if __name__ == "__main__":
    sys.exit(main())
