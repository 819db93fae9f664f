#!/usr/bin/env python
"""Generate the embedded synthetic WSSS dataset (`make demo` runs this too).

    python datasets/prepare_synthetic_wsss.py                      # default: 1200 train + 200 val
    python datasets/prepare_synthetic_wsss.py --num-train 300 --force
    python datasets/prepare_synthetic_wsss.py --sample-sheet datasets/synthetic_sample.png

Writes ``$DETECTRON2_DATASETS/synthetic_wsss`` (default ``./datasets``). Idempotent: a complete
dataset from the same generator version is kept unless ``--force``. See ``datasets/README.md``.
"""

import argparse
import os
import sys
import time


def main(argv=None) -> int:
    from bmp.data import synthetic as gen
    from bmp.data.datasets import dataset_root

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--root", default=None, help="datasets root (default $DETECTRON2_DATASETS)")
    p.add_argument("--num-train", type=int, default=gen.DEFAULT_NUM_TRAIN)
    p.add_argument("--num-val", type=int, default=gen.DEFAULT_NUM_VAL)
    p.add_argument("--seed", type=int, default=gen.DEFAULT_SEED)
    p.add_argument("--force", action="store_true", help="regenerate even if complete")
    p.add_argument("--sample-sheet", default=None, help="also write a PNG sheet of samples here")
    args = p.parse_args(argv)

    out = os.path.join(args.root or dataset_root(), "synthetic_wsss")
    if gen.is_complete(out) and not args.force:
        print(f"[synthetic_wsss] '{out}' is complete and current; nothing to do (--force redoes).")
    else:
        start = time.perf_counter()
        gen.ensure_synthetic_wsss(
            out, args.num_train, args.num_val, args.seed, force=args.force, progress=True
        )
        print(f"[synthetic_wsss] wrote '{out}' in {time.perf_counter() - start:.1f} s.")
    if args.sample_sheet:
        gen.save_sample_sheet(args.sample_sheet, seed=args.seed)
        print(f"[synthetic_wsss] sample sheet: '{args.sample_sheet}'.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
