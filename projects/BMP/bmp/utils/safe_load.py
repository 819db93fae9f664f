"""Reading weight files as data, so that a downloaded file cannot run code.

A pickle names the functions that unpickling calls to rebuild its objects, and nothing stops it
from naming ``os.system``: fully unpickling a crafted ``mit_b1.pth`` or ``model.pkl`` runs its
payload on the user's machine. Weights need none of that. Here a ``.pkl`` goes through an
unpickler that resolves only what numpy arrays and plain containers are built from, and every
other file through ``torch.load(weights_only=True)``, which rebuilds tensors and plain
containers, with numpy arrays and scalars (and ``argparse.Namespace``) allowed in addition.
Anything else is refused with one line naming the file, the refused global and the opt-in.

Full unpickling stays possible for a file the user trusts, behind an explicit opt-in: the
tools' ``--unsafe-unpickle`` flag, or ``MODEL.WEIGHTS_UNSAFE_UNPICKLE True`` for the files the
checkpointer reads. It is never the default.
"""

import argparse
import codecs
import contextlib
import logging
import pickle
import re
from collections import OrderedDict
from typing import Any, Dict, Iterator, List, Tuple

import numpy as np
import torch

__all__ = ["CLI_OPT_IN", "UNSAFE_UNPICKLE_HELP", "RefusedPickleError", "read_weights_file"]

logger = logging.getLogger(__name__)

# How a command-line tool's user opts in; every tool that reads weight files names it the same.
CLI_OPT_IN = "rerun with --unsafe-unpickle"
UNSAFE_UNPICKLE_HELP = (
    "read the weight file by full unpickling, only for a file you trust: a crafted file runs code "
    "on this machine (default: read it as data and refuse anything else)"
)


class RefusedPickleError(ValueError):
    """A weight file that names a global outside the allow-list: reading it could run code."""


def _refusal_message(path: str, refused: str, opt_in: str) -> str:
    """The one line that says what was refused, why, and how to proceed."""
    return (
        f"{path}: refused to unpickle {refused}: weight files are read as data (tensors, numpy "
        f"arrays, plain containers) and this one asks to run other code; if you trust the file, "
        f"{opt_in} (full unpickling, which lets the file run any code on this machine)."
    )


def _numpy_globals() -> Dict[str, Any]:
    """What numpy arrays, dtypes and scalars are rebuilt from, under every name they pickle as.

    numpy 2 pickles ``numpy._core.*``, numpy 1 ``numpy.core.*`` (detectron2's model zoo files
    and most ``.pkl`` weights in the wild); protocol 5 pickles arrays via ``_frombuffer``.
    """
    try:
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy < 1.26 has only numpy.core
        from numpy.core import multiarray, numeric
    allowed: Dict[str, Any] = {"numpy.ndarray": np.ndarray, "numpy.dtype": np.dtype}
    for package in ("numpy.core", "numpy._core"):
        allowed[f"{package}.multiarray._reconstruct"] = multiarray._reconstruct
        allowed[f"{package}.multiarray.scalar"] = multiarray.scalar
        allowed[f"{package}.numeric._frombuffer"] = numeric._frombuffer
    return allowed


def _pkl_globals() -> Dict[str, Any]:
    """The whole allow-list of ``.pkl`` files: numpy arrays in plain containers."""
    allowed = _numpy_globals()
    allowed["collections.OrderedDict"] = OrderedDict
    allowed["_codecs.encode"] = codecs.encode  # how protocol 2 pickles bytes (array data)
    return allowed


def _torch_extra_globals() -> List[Tuple[Any, str]]:
    """What torch's weights-only loader allows besides tensors and plain containers.

    numpy arrays and scalars: training checkpoints keep metrics, epochs or extra arrays next to
    the weights. numpy's dtype classes: torch rebuilds a dtype from its class, where pickle uses
    ``numpy.dtype`` (numeric kinds only). ``argparse.Namespace``: training scripts store their
    arguments with the weights; it is a plain attribute holder.
    """
    extra = [(obj, name) for name, obj in _numpy_globals().items()]
    for code in "?" + np.typecodes["AllInteger"] + np.typecodes["AllFloat"]:
        cls = type(np.dtype(code))
        extra.append((cls, f"{cls.__module__}.{cls.__name__}"))
    extra.append((argparse.Namespace, "argparse.Namespace"))
    return extra


class _DataUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals of :func:`_pkl_globals`."""

    def __init__(self, file: Any, path: str, opt_in: str) -> None:
        super().__init__(file, encoding="latin1")  # latin1: Python 2 pickles of numpy arrays
        self._path = path
        self._opt_in = opt_in
        self._allowed = _pkl_globals()

    def find_class(self, module: str, name: str) -> Any:
        found = self._allowed.get(f"{module}.{name}")
        if found is None:
            raise RefusedPickleError(
                _refusal_message(self._path, f"'{module}.{name}'", self._opt_in)
            )
        return found


@contextlib.contextmanager
def _torch_allow_list() -> Iterator[None]:
    safe_globals = getattr(torch.serialization, "safe_globals", None)  # torch >= 2.5
    if safe_globals is None:
        yield
        return
    with safe_globals(_torch_extra_globals()):
        yield


# What torch's weights-only loader names in its refusals, most specific first.
_TORCH_REFUSED = (
    re.compile(r"\bGLOBAL (\S+)"),  # not allowed, or its module is blocked
    re.compile(r"but got <class '([^']+)'>"),
    re.compile(r"unrecognized function (\S+)"),
)


def _torch_refused_name(message: str) -> str:
    for pattern in _TORCH_REFUSED:
        match = pattern.search(message)
        if match:
            return f"'{match.group(1)}'"
    return "an object outside the allow-list"


def _read_as_data(path: str, opt_in: str) -> Any:
    if path.endswith(".pkl"):
        with open(path, "rb") as f:
            return _DataUnpickler(f, path, opt_in).load()
    try:
        with _torch_allow_list():
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if not str(e).startswith("Weights only load failed"):
            raise  # a damaged file, not a refusal
        raise RefusedPickleError(_refusal_message(path, _torch_refused_name(str(e)), opt_in)) from e


def read_weights_file(path: str, *, unsafe_unpickle: bool = False, opt_in: str = CLI_OPT_IN) -> Any:
    """The object a ``.pkl`` (plain pickle) or any other (``torch.save``) weight file holds.

    Read as data unless ``unsafe_unpickle``; a refusal raises :class:`RefusedPickleError`, whose
    message ends with ``opt_in``: how the caller's user turns ``unsafe_unpickle`` on.
    """
    if not unsafe_unpickle:
        return _read_as_data(path, opt_in)
    logger.warning(f"{path}: full unpickling as asked; a crafted file runs code on this machine.")
    if path.endswith(".pkl"):
        with open(path, "rb") as f:
            return pickle.load(f, encoding="latin1")
    return torch.load(path, map_location="cpu", weights_only=False)
