#!/usr/bin/env python
"""Convert SegFormer's ImageNet-1k MiT weights (``mit_b*.pth``) into a detectron2 checkpoint.

    python tools/convert_mit_imagenet.py mit_b1.pth weights/mit_b1.pkl \
        --config-file configs/voc/bmp_mit_b1_512_20k.yaml
    python train_net.py --config-file configs/voc/bmp_mit_b1_512_20k.yaml \
        MODEL.WEIGHTS weights/mit_b1.pkl

BMP-D2's backbone uses SegFormer's MiT parameter names, so the conversion only adds the
``backbone.`` prefix and drops the ImageNet classifier (``head.*``). With ``--config-file`` the
result is checked against the backbone that config builds: a missing, extra or mis-shaped tensor
is an error, so a mismatch between ``mit_b*`` file and ``MODEL.MIT.NAME`` is caught here rather
than as a warning in the training log.
"""

import argparse
import sys
from collections import OrderedDict
from typing import Any, List, Mapping, Sequence, Tuple

from bmp.utils.safe_load import UNSAFE_UNPICKLE_HELP
from bmp.utils.weights import CheckpointFormatError, load_state_dict_file, save_d2_checkpoint

IMAGENET_HEAD_PREFIX = "head."


def mit_imagenet_to_d2(state: Mapping[str, Any]) -> Tuple["OrderedDict[str, Any]", List[str]]:
    """SegFormer MiT state dict -> ``backbone.*`` names. Returns (converted, dropped keys)."""
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    out: "OrderedDict[str, Any]" = OrderedDict()
    dropped = []
    for key, value in state.items():
        if key.startswith(IMAGENET_HEAD_PREFIX):
            dropped.append(key)
        elif key.startswith("backbone."):
            raise CheckpointFormatError(
                f"'{key}' already has the 'backbone.' prefix: this file looks converted already."
            )
        else:
            out["backbone." + key] = value
    return out, dropped


def check_against_backbone(converted: Mapping[str, Any], expected: Mapping[str, Any]) -> None:
    """Raise unless ``converted`` has exactly the names and shapes of ``expected``."""
    missing = sorted(set(expected) - set(converted))
    extra = sorted(set(converted) - set(expected))
    shapes = [
        f"{k}: file {tuple(converted[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected
        if k in converted and tuple(converted[k].shape) != tuple(expected[k].shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing {missing}")
    if extra:
        problems.append(f"unexpected {extra}")
    if shapes:
        problems.append(f"shape mismatch {shapes}")
    if problems:
        raise CheckpointFormatError(
            "weights do not fit the configured backbone (check MODEL.MIT.NAME): "
            + "; ".join(problems)
        )


def backbone_state_dict(config_file: str, opts: Sequence[str] = ()) -> Mapping[str, Any]:
    """State dict (``backbone.*`` names) of the backbone a config builds, on CPU."""
    from detectron2.modeling import build_backbone

    import bmp  # noqa: F401  (registers the MiT backbone)
    from bmp.config import load_config

    cfg = load_config(config_file, list(opts) + ["MODEL.DEVICE", "cpu"])
    backbone = build_backbone(cfg)
    return OrderedDict(("backbone." + k, v) for k, v in backbone.state_dict().items())


def main(argv: List[str] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input", help="SegFormer's mit_b*.pth")
    parser.add_argument("output", help="destination (.pkl for numpy arrays, or .pth)")
    parser.add_argument("--config-file", default="", help="check names and shapes against it")
    parser.add_argument("--unsafe-unpickle", action="store_true", help=UNSAFE_UNPICKLE_HELP)
    parser.add_argument(
        "--opts", default=[], nargs=argparse.REMAINDER, help="config overrides (KEY VALUE ...)"
    )
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        converted, dropped = mit_imagenet_to_d2(
            load_state_dict_file(args.input, unsafe_unpickle=args.unsafe_unpickle)
        )
        if args.config_file:
            check_against_backbone(converted, backbone_state_dict(args.config_file, args.opts))
    except (CheckpointFormatError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    save_d2_checkpoint(converted, args.output, "SegFormer MiT ImageNet, convert_mit_imagenet.py")
    print(f"dropped the ImageNet classifier: {', '.join(dropped) or 'none present'}")
    print(f"wrote {len(converted)} tensors to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
