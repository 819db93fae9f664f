#!/usr/bin/env python
"""Train and evaluate BMP (Branches Mutual Promotion) the detectron2 way.

    python train_net.py --config-file configs/voc/bmp_mit_b1_512_20k.yaml --num-gpus 2
    python train_net.py --config-file configs/synthetic/bmp_mit_tiny.yaml \
        SOLVER.MAX_ITER 100 MODEL.BMP.LAMBDA_S2C 0.2
    python train_net.py --config-file ... --resume              # continue after a kill
    python train_net.py --config-file ... --eval-only MODEL.WEIGHTS output/.../model_final.pth

Without CUDA the same commands run on CPU; ``--num-gpus N`` then starts N CPU processes that
synchronise over gloo.
"""

import logging
import re
import sys
from typing import Any

import bmp  # noqa: F401  isort: skip  (first: it imports detectron2 without its jit warnings)
import torch.multiprocessing as mp
from detectron2.config import CfgNode
from detectron2.engine import default_argument_parser, default_setup, launch
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from bmp.config import ConfigError, check_config, load_config
from bmp.engine import AtomicCheckpointer, BMPTrainer

logger = logging.getLogger("bmp.train_net")


class Trainer(BMPTrainer):
    """The trainer this script runs; override its ``build_*`` methods for experiments."""


def setup(args: Any) -> CfgNode:
    """get_cfg -> add_bmp_config -> file -> opts -> freeze, then detectron2's default_setup."""
    cfg = load_config(args.config_file, args.opts)
    check_config(cfg, eval_only=args.eval_only, resume=args.resume)
    default_setup(cfg, args)
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="bmp")
    return cfg


def main(args: Any) -> Any:
    cfg = setup(args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        checkpointer = AtomicCheckpointer(  # reads MODEL.WEIGHTS as data
            model,
            save_dir=cfg.OUTPUT_DIR,
            save_to_disk=False,
            unsafe_unpickle=cfg.MODEL.WEIGHTS_UNSAFE_UNPICKLE,
        )
        checkpointer.resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        return Trainer.test(cfg, model)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def _preflight(args: Any) -> None:
    """Check the config once in the launcher, so a typo costs one line, not N tracebacks."""
    try:
        cfg = load_config(args.config_file, args.opts)
        check_config(cfg, eval_only=args.eval_only, resume=args.resume)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def cli(argv: Any = None) -> None:
    args = default_argument_parser().parse_args(argv)
    _preflight(args)
    print("Command Line Args:", args)
    try:
        launch(
            main,
            args.num_gpus,
            num_machines=args.num_machines,
            machine_rank=args.machine_rank,
            dist_url=args.dist_url,
            args=(args,),
        )
    except FloatingPointError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except (ValueError, OSError, mp.ProcessRaisedException) as e:
        # Data problems (a corrupt image, a bad label, a missing file) name the file in their
        # message; the trainer has already logged the traceback, so end with that one line.
        message = _last_error_line(e)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        sys.exit(1)


# The final "SomeError: message" line of a traceback carried in an exception's text.
_ERROR_LINE = re.compile(r"^(?P<type>[A-Za-z_][\w.]*(Error|Exception)): (?P<message>.+)$")
_DATA_ERRORS = (
    "ValueError",
    "FileNotFoundError",
    "OSError",
    "DamagedCheckpointError",
    "CheckpointFormatError",
    "RefusedPickleError",
)


def _last_error_line(e: BaseException) -> Any:
    """The one-line message of a data error, also when a DataLoader worker or a spawned process
    wrapped it in its traceback text; None for anything else."""
    lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
    if not lines:
        return None
    if len(lines) == 1 and not isinstance(e, mp.ProcessRaisedException):
        return lines[0]
    match = _ERROR_LINE.match(lines[-1])
    if match is None or match["type"].rsplit(".", 1)[-1] not in _DATA_ERRORS:
        return None
    return match["message"]


if __name__ == "__main__":
    cli()
