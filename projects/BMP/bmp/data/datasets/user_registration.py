"""Users' own registration files: ``train_net.py --register my_datasets.py``.

A registration file is plain Python that calls detectron2's ``register_coco_instances``,
``load_sem_seg`` (through ``DatasetCatalog.register``) or BMP's
:func:`~bmp.data.datasets.register_image_labels`. It runs once in every process that needs the
datasets (the launcher, and each training process ``--num-gpus`` starts), so the names it
registers resolve wherever ``DATASETS.TRAIN`` / ``DATASETS.TEST`` are read.
"""

import os
import runpy
from typing import Iterable, Set

__all__ = ["run_registration_files"]

_DONE: Set[str] = set()


def run_registration_files(paths: Iterable[str]) -> None:
    """Run each file once per process; a missing file or an error inside it is one line."""
    for path in paths:
        key = os.path.abspath(os.path.expanduser(path))
        if key in _DONE:
            continue
        if not os.path.isfile(key):
            raise FileNotFoundError(f"--register file '{path}' does not exist.")
        try:
            runpy.run_path(key, run_name="__bmp_register__")
        except Exception as e:  # noqa: BLE001 - any error of the user's file, named as theirs
            raise ValueError(f"--register file '{path}' failed: {type(e).__name__}: {e}") from e
        _DONE.add(key)
