"""Checkpoint writes that a kill can never leave half-done.

fvcore's :class:`Checkpointer` streams ``torch.save`` straight into ``model_XXXX.pth`` and then
overwrites ``last_checkpoint`` in place; a kill in between leaves a truncated file that
``--resume`` then fails to read. Here every file is written next to its target and moved into
place with :func:`os.replace`, which is atomic on POSIX, so "last" always names a whole file.
"""

import os
import pickle
from typing import IO, Any, Callable, Mapping

import torch
from detectron2.checkpoint import DetectionCheckpointer

__all__ = [
    "atomic_write",
    "atomic_torch_save",
    "AtomicCheckpointer",
    "CheckpointFormatError",
    "extract_state_dict",
    "load_state_dict_file",
    "save_d2_checkpoint",
]


def atomic_write(path: str, write_fn: Callable[[IO[bytes]], None]) -> None:
    """Call ``write_fn`` on a temporary file in ``path``'s folder, then move it onto ``path``."""
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".{os.path.basename(path)}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    try:  # make the rename itself durable; not all file systems allow opening a folder
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_torch_save(obj: Any, path: str) -> None:
    """``torch.save`` that leaves either the old file or the complete new one at ``path``."""
    atomic_write(path, lambda f: torch.save(obj, f))


class AtomicCheckpointer(DetectionCheckpointer):
    """A :class:`DetectionCheckpointer` whose checkpoint and ``last_checkpoint`` writes are atomic.

    Remote save folders (``scheme://``) keep fvcore's behaviour, as ``os.replace`` cannot reach
    them.
    """

    def _is_local(self) -> bool:
        return "://" not in self.save_dir

    def save(self, name: str, **kwargs: Any) -> None:
        if not self.save_dir or not self.save_to_disk:
            return
        if not self._is_local():
            super().save(name, **kwargs)
            return
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        basename = f"{name}.pth"
        save_file = os.path.join(self.save_dir, basename)
        os.makedirs(self.save_dir, exist_ok=True)
        self.logger.info(f"Saving checkpoint to {save_file}")
        atomic_torch_save(data, save_file)
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        if not self._is_local():
            super().tag_last_checkpoint(last_filename_basename)
            return
        path = os.path.join(self.save_dir, "last_checkpoint")
        atomic_write(path, lambda f: f.write(last_filename_basename.encode()))


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


def load_state_dict_file(path: str) -> Mapping[str, Any]:
    """Read the state dict of a ``.pth``/``.pt`` (torch) or ``.pkl`` (pickled numpy) file.

    Full unpickling is allowed because third-party training checkpoints often store numpy
    scalars or argparse namespaces next to the weights; only load files you trust.
    """
    if not os.path.isfile(path):
        raise CheckpointFormatError(f"{path} does not exist.")
    if path.endswith(".pkl"):
        with open(path, "rb") as f:
            return extract_state_dict(pickle.load(f, encoding="latin1"), path)
    return extract_state_dict(torch.load(path, map_location="cpu", weights_only=False), path)


def save_d2_checkpoint(state: Mapping[str, Any], path: str, author: str) -> None:
    """Write ``{"model": state, "__author__": author}`` atomically, loadable as MODEL.WEIGHTS.

    ``.pkl`` stores numpy arrays (detectron2's model-zoo format); any other suffix stores torch
    tensors. Both load through ``DetectionCheckpointer`` without name-matching heuristics.
    """
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if path.endswith(".pkl"):
        arrays = {
            k: v.detach().cpu().numpy() if torch.is_tensor(v) else v for k, v in state.items()
        }
        data = {"model": arrays, "__author__": author, "matching_heuristics": False}
        atomic_write(path, lambda f: pickle.dump(data, f))
    else:
        atomic_torch_save({"model": dict(state), "__author__": author}, path)
