#!/usr/bin/env python
"""Train and evaluate BMP (Branches Mutual Promotion) the detectron2 way.

    python train_net.py --config-file configs/voc/bmp_mit_b1_512_20k.yaml --num-gpus 2
    python train_net.py --config-file configs/synthetic/bmp_mit_tiny.yaml \
        SOLVER.MAX_ITER 100 MODEL.BMP.LAMBDA_S2C 0.2
    python train_net.py --config-file ... --resume              # continue after a kill
    python train_net.py --config-file ... --eval-only MODEL.WEIGHTS output/.../model_final.pth
    python train_net.py --register my_datasets.py --config-file ... \
        DATASETS.TRAIN "('my_train',)" DATASETS.TEST "('my_val',)" MODEL.BMP.NUM_CLASSES -1

Without CUDA the same commands run on CPU; ``--num-gpus N`` then starts N CPU processes that
synchronise over gloo.
"""

import logging
import re
import sys
from datetime import timedelta
from typing import Any

import bmp  # noqa: F401  isort: skip  (first: it imports detectron2 without its jit warnings)
import torch.multiprocessing as mp
from detectron2.config import CfgNode
from detectron2.engine import default_argument_parser, default_setup, launch
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from bmp.config import ConfigError, check_config, load_config
from bmp.data.datasets.user_registration import run_registration_files
from bmp.engine import AtomicCheckpointer, BMPTrainer
from bmp.utils.signals import ignore_signals, resolve_signals

logger = logging.getLogger("bmp.train_net")


class Trainer(BMPTrainer):
    """The trainer this script runs; override its ``build_*`` methods for experiments."""


def setup(args: Any) -> CfgNode:
    """get_cfg -> add_bmp_config -> file -> opts -> freeze, then detectron2's default_setup."""
    run_registration_files(args.register)  # in every process: the datasets must resolve here
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


def _preflight(args: Any) -> CfgNode:
    """Check the config once in the launcher, so a typo costs one line, not N tracebacks."""
    try:
        run_registration_files(args.register)
        cfg = load_config(args.config_file, args.opts)
        check_config(cfg, eval_only=args.eval_only, resume=args.resume)
        resolve_signals(cfg.SOLVER.PREEMPTION.SIGNALS)
    except (ConfigError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    return cfg


def _parser() -> Any:
    parser = default_argument_parser()
    parser.add_argument(
        "--dist-timeout",
        type=float,
        default=600.0,
        help="seconds to wait for every process (all machines) to join, and for a collective",
    )
    # detectron2's default --dist-url is one port per user, so two jobs of one user on one
    # machine would collide; "auto" lets launch() pick a free port. Several machines must name
    # machine 0's address (checked in cli()).
    parser.set_defaults(dist_url="auto")
    parser.add_argument(
        "--register",
        action="append",
        default=[],
        metavar="FILE",
        help="a Python file that registers your datasets (run in every process; repeatable); "
        "see docs/own_data.md",
    )
    return parser


def cli(argv: Any = None) -> None:
    args = _parser().parse_args(argv)
    if args.num_machines > 1 and args.dist_url == "auto":
        print(
            "error: --num-machines > 1 needs --dist-url tcp://<machine 0's address>:<free port>, "
            "the same on every machine (docs/cluster.md)",
            file=sys.stderr,
        )
        sys.exit(2)
    cfg = _preflight(args)
    print("Command Line Args:", args)
    world = args.num_gpus * args.num_machines
    if world > 1 and not args.eval_only:
        # The launching parent outlives a preemption signal: its children write the checkpoint
        # and exit with SOLVER.PREEMPTION.EXIT_CODE, which it then exits with.
        ignore_signals(resolve_signals(cfg.SOLVER.PREEMPTION.SIGNALS))()
    try:
        launch(
            main,
            args.num_gpus,
            num_machines=args.num_machines,
            machine_rank=args.machine_rank,
            dist_url=args.dist_url,
            args=(args,),
            timeout=timedelta(seconds=args.dist_timeout),
        )
    except mp.ProcessExitedException as e:
        if e.exit_code == cfg.SOLVER.PREEMPTION.EXIT_CODE:
            print(f"preempted: resume with --resume (exit {e.exit_code})", file=sys.stderr)
            sys.exit(e.exit_code)
        raise
    except FloatingPointError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except mp.ProcessRaisedException as e:
        join = _join_failure(e, args)
        if join is not None:
            print(f"error: {join}", file=sys.stderr)
            sys.exit(1)
        _data_error_exit(e)
    except (ValueError, OSError) as e:
        _data_error_exit(e)


_JOIN_ERRORS = ("DistStoreError", "DistNetworkError", "DistTimeoutError")


def _join_failure(e: BaseException, args: Any) -> Any:
    """One line for processes that could not form their group (a wrong --dist-url, a machine
    that never started), or None for any other failure."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    if not lines or not any(name in lines[-1] for name in _JOIN_ERRORS):
        return None
    return (
        f"the {args.num_machines * args.num_gpus} processes did not all join at "
        f"{args.dist_url} within --dist-timeout {args.dist_timeout:g} s ({lines[-1][:160]}); "
        "check that --dist-url is machine 0's address and a free port, reachable from every "
        "machine, and that all --num-machines machines were started"
    )


def _data_error_exit(e: BaseException) -> None:
    """Data problems (a corrupt image, a bad label, a missing file) name the file in their
    message; the trainer has already logged the traceback, so end with that one line."""
    message = _last_error_line(e)
    if message is None:
        raise e
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
