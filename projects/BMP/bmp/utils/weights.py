"""Reading and writing weight files for the tools (converters, comparisons, exports).

Third-party checkpoints nest their state dict in various ways and come as torch or pickled numpy
files; these helpers accept them all and write what detectron2's checkpointer loads directly.
"""

import os
import pickle
from typing import Any, Mapping

import numpy as np
import torch

from .file_io import atomic_torch_save, atomic_write
from .safe_load import read_weights_file

__all__ = [
    "CheckpointFormatError",
    "extract_state_dict",
    "load_state_dict_file",
    "save_d2_checkpoint",
]


class CheckpointFormatError(ValueError):
    """A weights file that holds no state dict, or keys that cannot be mapped."""


def extract_state_dict(obj: Any, path: str) -> Mapping[str, Any]:
    """Accept a raw state dict or one nested under ``model`` / ``state_dict``."""
    if isinstance(obj, Mapping):
        for key in ("model", "state_dict"):
            inner = obj.get(key)
            if isinstance(inner, Mapping):
                return inner
        if obj and all(torch.is_tensor(v) or hasattr(v, "shape") for v in obj.values()):
            return obj
    raise CheckpointFormatError(
        f"{path}: found no state dict (expected a dict of tensors, or one under 'model' or "
        "'state_dict')."
    )


def load_state_dict_file(path: str, *, unsafe_unpickle: bool = False) -> Mapping[str, Any]:
    """Read the state dict of a ``.pth``/``.pt`` (torch) or ``.pkl`` (pickled numpy) file.

    The file is read as data (:mod:`bmp.utils.safe_load`), as downloaded weights may be crafted
    to run code; ``unsafe_unpickle`` (the tools' ``--unsafe-unpickle``) fully unpickles a file
    the user trusts.
    """
    if not os.path.isfile(path):
        raise CheckpointFormatError(f"{path} does not exist.")
    return extract_state_dict(read_weights_file(path, unsafe_unpickle=unsafe_unpickle), path)


def save_d2_checkpoint(state: Mapping[str, Any], path: str, author: str) -> None:
    """Write ``{"model": state, "__author__": author}`` atomically, loadable as MODEL.WEIGHTS.

    ``.pkl`` stores numpy arrays (detectron2's model-zoo format); any other suffix stores torch
    tensors (numpy arrays of a ``.pkl`` input converted), so that ``torch.load(weights_only=True)``
    reads it without an allow-list. Both load through ``DetectionCheckpointer`` without
    name-matching heuristics.
    """
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if path.endswith(".pkl"):
        arrays = {
            k: v.detach().cpu().numpy() if torch.is_tensor(v) else v for k, v in state.items()
        }
        data = {"model": arrays, "__author__": author, "matching_heuristics": False}
        atomic_write(path, lambda f: pickle.dump(data, f))
    else:
        tensors = {
            k: torch.as_tensor(v) if isinstance(v, np.ndarray) else v for k, v in state.items()
        }
        atomic_torch_save({"model": tensors, "__author__": author}, path)
