#!/usr/bin/env python
"""Convert a checkpoint of the BMP authors' training code into a BMP-D2 checkpoint.

    python tools/convert_bmp_official.py their_checkpoint.pth bmp_d2.pth
    python train_net.py --config-file configs/voc/bmp_mit_b1_512_20k.yaml --eval-only \
        MODEL.WEIGHTS bmp_d2.pth

Their model is ``encoder`` (MiT, SegFormer's names), ``decoder`` (SegFormer head with a
``ConvModule``-style fuse layer), ``classifier`` and ``attn_proj``. BMP-D2 uses the same layers
under the names below, so a converted checkpoint reproduces their logits exactly: the mapping is a
pure renaming and never touches a tensor. Keys that match no rule stop the conversion with the
full list: a silently dropped weight would only show up as a worse mIoU.
"""

import argparse
import re
import sys
from collections import OrderedDict
from typing import Any, List, Mapping, Tuple

from bmp.utils.safe_load import UNSAFE_UNPICKLE_HELP, RefusedPickleError
from bmp.utils.weights import CheckpointFormatError, load_state_dict_file, save_d2_checkpoint

# (their pattern, our template). Patterns are anchored; groups carry over.
THEIRS_TO_OURS: List[Tuple[str, str]] = [
    (r"encoder\.(.+)", r"backbone.\1"),
    (r"decoder\.linear_c([1-4])\.proj\.(weight|bias)", r"sem_seg_head.linear_c\1.proj.\2"),
    (r"decoder\.linear_fuse\.conv\.weight", r"sem_seg_head.linear_fuse.weight"),
    (
        r"decoder\.linear_fuse\.bn\.(weight|bias|running_mean|running_var|num_batches_tracked)",
        r"sem_seg_head.linear_fuse.norm.\1",
    ),
    (r"decoder\.linear_pred\.(weight|bias)", r"sem_seg_head.predictor.\1"),
    (r"classifier\.weight", r"cls_head.classifier.weight"),
    (r"attn_proj\.(weight|bias)", r"affinity_head.attn_proj.\1"),
]

OURS_TO_THEIRS: List[Tuple[str, str]] = [
    (r"backbone\.(.+)", r"encoder.\1"),
    (r"sem_seg_head\.linear_c([1-4])\.proj\.(weight|bias)", r"decoder.linear_c\1.proj.\2"),
    (r"sem_seg_head\.linear_fuse\.weight", r"decoder.linear_fuse.conv.weight"),
    (
        r"sem_seg_head\.linear_fuse\.norm\."
        r"(weight|bias|running_mean|running_var|num_batches_tracked)",
        r"decoder.linear_fuse.bn.\1",
    ),
    (r"sem_seg_head\.predictor\.(weight|bias)", r"decoder.linear_pred.\1"),
    (r"cls_head\.classifier\.weight", r"classifier.weight"),
    (r"affinity_head\.attn_proj\.(weight|bias)", r"attn_proj.\1"),
]

# Their MiT may carry SegFormer's ImageNet classifier; it has no role in segmentation.
THEIR_UNUSED = (r"encoder\.head\.(weight|bias)",)
# Our buffers without a counterpart in their checkpoints: preprocessing, and the state of the
# optional s2c gate (our extension).
OUR_UNUSED = (r"pixel_(mean|std)", r"criterion\.s2c_(open|agreement)")


class ConversionError(CheckpointFormatError):
    """Keys that no rule maps."""


def _rename(
    state: Mapping[str, Any], rules: List[Tuple[str, str]], skip: Tuple[str, ...], what: str
) -> Tuple["OrderedDict[str, Any]", List[str]]:
    out: "OrderedDict[str, Any]" = OrderedDict()
    unknown, skipped = [], []
    for key, value in state.items():
        if any(re.fullmatch(p, key) for p in skip):
            skipped.append(key)
            continue
        for pattern, template in rules:
            m = re.fullmatch(pattern, key)
            if m:
                new = m.expand(template)
                if new in out:
                    raise ConversionError(f"two {what} keys map to '{new}'")
                out[new] = value
                break
        else:
            unknown.append(key)
    if unknown:
        raise ConversionError(
            f"{len(unknown)} {what} key(s) match no rule, refusing to drop them: "
            + ", ".join(sorted(unknown))
        )
    return out, skipped


def strip_module_prefix(state: Mapping[str, Any]) -> "OrderedDict[str, Any]":
    """Remove DataParallel's ``module.`` prefix when every key has it."""
    if state and all(k.startswith("module.") for k in state):
        return OrderedDict((k[len("module.") :], v) for k, v in state.items())
    return OrderedDict(state)


def official_to_bmp_d2(state: Mapping[str, Any]) -> Tuple["OrderedDict[str, Any]", List[str]]:
    """Their state dict -> ours. Returns (converted, keys deliberately dropped)."""
    return _rename(strip_module_prefix(state), THEIRS_TO_OURS, THEIR_UNUSED, "official")


def bmp_d2_to_official(state: Mapping[str, Any]) -> Tuple["OrderedDict[str, Any]", List[str]]:
    """Ours -> theirs (for comparing against their code, and the round-trip test)."""
    return _rename(state, OURS_TO_THEIRS, OUR_UNUSED, "BMP-D2")


def main(argv: List[str] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input", help="the authors' checkpoint (.pth/.pt/.pkl)")
    parser.add_argument("output", help="destination (.pth, or .pkl for numpy arrays)")
    parser.add_argument("--unsafe-unpickle", action="store_true", help=UNSAFE_UNPICKLE_HELP)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        converted, dropped = official_to_bmp_d2(
            load_state_dict_file(args.input, unsafe_unpickle=args.unsafe_unpickle)
        )
    except (CheckpointFormatError, RefusedPickleError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    save_d2_checkpoint(
        converted, args.output, "BMP official checkpoint, converted by convert_bmp_official.py"
    )
    if dropped:
        print(f"dropped (not used by BMP-D2): {', '.join(dropped)}")
    print(f"wrote {len(converted)} tensors to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
