#!/usr/bin/env python
"""Write one explanation panel per image: input | segmentation | CAM | foreground | seed.

    python demo/demo.py --config-file configs/synthetic/bmp_mit_tiny.yaml \
        --input imgs/*.jpg --output out/ --opts MODEL.WEIGHTS output/default_job/model_final.pth
"""

import argparse
import glob
import os
import sys
from typing import List, Optional

from detectron2.utils.logger import setup_logger

import bmp  # noqa: F401  (registers the model and the datasets' metadata)
from bmp.config import ConfigError, load_config
from bmp.utils.safe_load import RefusedPickleError
from bmp.visualization import BMPPredictor, write_panels


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument("--input", nargs="+", required=True, help="images or glob patterns")
    parser.add_argument("--output", required=True, help="folder for the PNG panels")
    parser.add_argument("--opts", default=[], nargs=argparse.REMAINDER, help="KEY VALUE overrides")
    return parser


def expand_inputs(patterns: List[str]) -> List[str]:
    """Expand globs (for shells that do not), keeping order; a pattern matching nothing fails."""
    files: List[str] = []
    for p in patterns:
        matches = sorted(glob.glob(os.path.expanduser(p)))
        if not matches:
            raise FileNotFoundError(f"--input '{p}' matches no file")
        files.extend(m for m in matches if m not in files)
    return files


def run(
    config_file: str, inputs: List[str], output: str, opts: Optional[List[str]] = None
) -> List[str]:
    """Predict every input and write ``<output>/<stem>.png``; return the written paths."""
    cfg = load_config(config_file, opts or [])
    if not cfg.MODEL.WEIGHTS:
        raise ConfigError("the demo needs trained weights: --opts MODEL.WEIGHTS path/to/model.pth")
    if not os.path.isfile(cfg.MODEL.WEIGHTS) and "://" not in cfg.MODEL.WEIGHTS:
        raise ConfigError(f"MODEL.WEIGHTS file '{cfg.MODEL.WEIGHTS}' does not exist.")
    files = expand_inputs(inputs)
    setup_logger(name="bmp")  # one line per written panel
    return write_panels(BMPPredictor(cfg), files, output)


def main(argv: Optional[List[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    try:
        run(args.config_file, args.input, args.output, args.opts)
    except (ConfigError, FileNotFoundError, ImportError, RefusedPickleError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
