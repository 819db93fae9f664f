#!/usr/bin/env python
"""Fail fast, with one clear line, when the environment cannot run BMP-D2."""

import argparse
import sys


def check_torch() -> str:
    import torch
    import torchvision
    from torchvision.ops import nms

    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]])
    keep = nms(boxes, torch.tensor([0.9, 0.8, 0.7]), 0.5)
    if keep.tolist() != [0, 2]:
        raise SystemExit(f"torchvision.ops.nms returned {keep.tolist()}, expected [0, 2]")
    return f"torch {torch.__version__}, torchvision {torchvision.__version__} (nms ok)"


def check_detectron2() -> str:
    import detectron2
    import detectron2.data  # noqa: F401
    import detectron2.engine  # noqa: F401
    import detectron2.modeling  # noqa: F401
    from detectron2.evaluation import SemSegEvaluator  # noqa: F401

    import bmp  # noqa: F401

    return f"detectron2 {detectron2.__version__} at {detectron2.__file__}; bmp {bmp.__version__}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--torch-only", action="store_true")
    args = parser.parse_args()
    try:
        print("[check_env]", check_torch())
        if not args.torch_only:
            print("[check_env]", check_detectron2())
    except Exception as e:  # one clear line instead of a traceback
        print(f"[check_env] error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
