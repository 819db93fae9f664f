"""Checkpoint writes that a kill can never leave half-done.

fvcore's :class:`Checkpointer` streams ``torch.save`` straight into ``model_XXXX.pth`` and then
overwrites ``last_checkpoint`` in place; a kill in between leaves a truncated file that
``--resume`` then fails to read. Here every file is written next to its target and moved into
place with :func:`os.replace`, which is atomic on POSIX, so "last" always names a whole file.

What a kill can still leave behind is handled when the checkpointer starts: temporary files of
interrupted writes are removed, and ``--resume`` skips a checkpoint that cannot be read (copied
in truncated, say) with one warning line, resuming from the newest one that loads.

Every file the checkpointer reads (``MODEL.WEIGHTS``, a resumed checkpoint) is read as data, as
detectron2's plain ``pickle.load`` would run whatever code a downloaded file names; see
:mod:`bmp.utils.safe_load`. ``MODEL.WEIGHTS_UNSAFE_UNPICKLE`` is the opt-in for a trusted file.
"""

import glob
import os
import pickle
import zipfile
from typing import Any, Dict, List, Optional

from detectron2.checkpoint import DetectionCheckpointer

from bmp.utils.file_io import atomic_torch_save, atomic_write, remove_stale_temp_files
from bmp.utils.safe_load import RefusedPickleError, read_weights_file
from bmp.utils.weights import CheckpointFormatError

__all__ = ["AtomicCheckpointer", "DamagedCheckpointError", "checkpoint_damage"]

# How the user of a config opts in to full unpickling (named in refusals).
CONFIG_OPT_IN = "set MODEL.WEIGHTS_UNSAFE_UNPICKLE True"


class DamagedCheckpointError(ValueError):
    """A checkpoint file that exists but cannot be read."""


# What torch.load / pickle raise on a truncated or overwritten file.
# A damaged legacy (non-zip) pickle can fail with almost anything while unpickling.
_READ_ERRORS = (
    RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, OSError, ValueError,
    KeyError, AttributeError, UnicodeDecodeError, ImportError, IndexError, TypeError,
)  # fmt: skip


def _one_line(e: BaseException, limit: int = 200) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def checkpoint_damage(path: str) -> Optional[str]:
    """Why the checkpoint at ``path`` cannot be read, or None if it can.

    Checked before loading, because a failed ``load`` can leave detectron2's checkpointer unable
    to load again. A zip-format file (what ``torch.save`` writes) is checked by its CRCs without
    unpickling; anything else (truncated zips included) only by reading it as data. A file that
    names code is not damaged: loading it reports the refusal (or honours the opt-in).
    """
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()
            return None if bad is None else f"member '{bad}' fails its CRC check"
        read_weights_file(path, opt_in=CONFIG_OPT_IN)
    except RefusedPickleError:
        return None
    except _READ_ERRORS as e:
        return _one_line(e)
    return None


class AtomicCheckpointer(DetectionCheckpointer):
    """A :class:`DetectionCheckpointer` whose writes are atomic and whose resume survives damage.

    * checkpoint and ``last_checkpoint`` writes go through :func:`atomic_write`;
    * on construction (main process), leftover temporary files of killed writes are removed;
    * ``resume_or_load(..., resume=True)`` falls back from an unreadable checkpoint to the
      newest readable one in the folder, with one warning line naming the damaged file;
    * every file is read as data (tensors, numpy arrays, plain containers) unless
      ``unsafe_unpickle`` (``MODEL.WEIGHTS_UNSAFE_UNPICKLE``) is set.

    Remote save folders (``scheme://``) keep fvcore's behaviour, as ``os.replace`` cannot reach
    them.
    """

    def __init__(self, *args: Any, unsafe_unpickle: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.unsafe_unpickle = unsafe_unpickle
        if self.save_dir and self.save_to_disk and self._is_local():
            removed = remove_stale_temp_files(self.save_dir)
            if removed:
                names = ", ".join(os.path.basename(p) for p in removed)
                self.logger.info(
                    f"Removed {len(removed)} temporary file(s) left by interrupted writes in "
                    f"{self.save_dir}: {names}"
                )

    def _is_local(self) -> bool:
        return "://" not in self.save_dir

    def _resume_candidates(self) -> List[str]:
        """The tagged checkpoint first, then the folder's other ``.pth`` files, newest first."""
        tagged = self.get_checkpoint_file()
        others = [
            p
            for p in glob.glob(os.path.join(self.save_dir, "*.pth"))
            if os.path.abspath(p) != os.path.abspath(tagged)
        ]
        return [tagged] + sorted(others, key=os.path.getmtime, reverse=True)

    def resume_or_load(self, path: str, *, resume: bool = True) -> Dict[str, Any]:
        if not (resume and self.has_checkpoint() and self._is_local()):
            return super().resume_or_load(path, resume=resume)
        candidates = self._resume_candidates()
        for i, candidate in enumerate(candidates):
            following = candidates[i + 1] if i + 1 < len(candidates) else None
            then = f"resuming from '{following}' instead." if following else "nothing left to try."
            if not os.path.isfile(candidate):
                self.logger.warning(
                    f"last_checkpoint names '{candidate}', which is missing; {then}"
                )
                continue
            damage = checkpoint_damage(candidate)
            if damage is None:
                return self.load(candidate)
            self.logger.warning(f"Checkpoint '{candidate}' is damaged ({damage}); {then}")
        raise DamagedCheckpointError(
            f"--resume found no readable checkpoint in '{self.save_dir}' (tried "
            f"{len(candidates)}); delete the damaged files, or train without --resume."
        )

    def _load_file(self, filename: str) -> Dict[str, Any]:
        """detectron2's layouts (its ``.pkl``, Caffe2 blobs, pycls ``.pyth``, ``.pth``), read as
        data: detectron2's own reader unpickles ``.pkl`` files fully."""
        data = read_weights_file(
            filename, unsafe_unpickle=self.unsafe_unpickle, opt_in=CONFIG_OPT_IN
        )
        if not isinstance(data, dict):
            raise CheckpointFormatError(
                f"{filename} holds a {type(data).__name__}, not a checkpoint (a dict of weights)."
            )
        if filename.endswith(".pkl"):
            if "model" in data and "__author__" in data:  # detectron2's model-zoo format
                self.logger.info(f"Reading a file from '{data['__author__']}'")
                return data
            blobs = data.get("blobs", data)  # Caffe2 / Detectron1: detection models nest them
            weights = {k: v for k, v in blobs.items() if not k.endswith("_momentum")}
            return {"model": weights, "__author__": "Caffe2", "matching_heuristics": True}
        if filename.endswith(".pyth"):  # pycls
            if "model_state" not in data:
                raise CheckpointFormatError(f"{filename}: a pycls .pyth file needs 'model_state'.")
            weights = {
                k: v
                for k, v in data["model_state"].items()
                if not k.endswith("num_batches_tracked")
            }
            return {"model": weights, "__author__": "pycls", "matching_heuristics": True}
        return data if "model" in data else {"model": data}

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
