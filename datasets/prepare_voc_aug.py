#!/usr/bin/env python
"""Build PASCAL VOC 2012 + SBD ("train_aug") for weakly supervised segmentation.

Inputs (defaults under ``$DETECTRON2_DATASETS``, else ``./datasets``):
  VOC2012/JPEGImages/*.jpg, VOC2012/SegmentationClass/*.png,
  VOC2012/ImageSets/Segmentation/{train,val}.txt              (VOCtrainval_11-May-2012.tar)
  benchmark_RELEASE/dataset/cls/*.mat, .../dataset/{train,val}.txt   (SBD, benchmark.tgz)

Outputs in VOC2012/:
  SegmentationClassAug/<stem>.png   masks for train_aug and val (palette PNG of ids, 255 = ignore);
                                    VOC's own mask is used where it exists, SBD's otherwise
  ImageSets/Segmentation/train_aug.txt   (SBD train + SBD val + VOC train) - VOC val = 10,582
  cls_labels.txt                    "<stem> <ids>" image-level labels derived from the masks
  image_sizes.txt                   "<stem> <h> <w>" (spares reading image headers at load time)

Idempotent: existing masks are kept unless --overwrite; lists and labels are rewritten. SBD .mat
files are read with SciPy (the optional ``voc`` extra).
"""

import argparse
import os
import sys
from typing import Dict, List, Sequence, Tuple

import numpy as np
from PIL import Image

NUM_CLASSES = 20
IGNORE = 255
EXPECTED = {"train_aug": 10582, "train": 1464, "val": 1449}


def _read_list(path: str) -> List[str]:
    with open(path, "r", encoding="utf-8") as f:
        return [line.split()[0] for line in f if line.strip()]


def check_inputs(voc: str, sbd: str) -> None:
    """Fail early, naming the first missing file or folder and where it comes from."""
    needed = [
        (os.path.join(voc, "JPEGImages"), "VOCtrainval_11-May-2012.tar"),
        (os.path.join(voc, "SegmentationClass"), "VOCtrainval_11-May-2012.tar"),
        (os.path.join(voc, "ImageSets", "Segmentation", "train.txt"), "VOC2012 trainval"),
        (os.path.join(voc, "ImageSets", "Segmentation", "val.txt"), "VOC2012 trainval"),
        (os.path.join(sbd, "dataset", "cls"), "SBD benchmark.tgz"),
        (os.path.join(sbd, "dataset", "train.txt"), "SBD benchmark.tgz"),
        (os.path.join(sbd, "dataset", "val.txt"), "SBD benchmark.tgz"),
    ]
    for path, source in needed:
        if not os.path.exists(path):
            raise FileNotFoundError(
                f"Missing '{path}' (from {source}). See datasets/README.md for the layout; "
                "--voc-root and --sbd-root point at other locations."
            )


def read_sbd_mask(path: str) -> np.ndarray:
    """``GTcls.Segmentation`` of an SBD class-annotation .mat file, as uint8 ids.

    Reading MATLAB files needs SciPy, the optional ``voc`` extra (``pip install -e '.[voc]'``).
    """
    try:
        from scipy.io import loadmat
    except ImportError:
        raise SystemExit(
            "error: reading SBD's .mat annotations needs SciPy: run `pip install -e '.[voc]'`"
        ) from None
    try:
        data = loadmat(path, squeeze_me=True, struct_as_record=False)
    except (ValueError, NotImplementedError, OSError, TypeError) as e:
        raise ValueError(f"SBD file '{path}' is not a readable MAT-file: {e}") from e
    seg = getattr(data.get("GTcls"), "Segmentation", None)
    if seg is None:
        raise ValueError(f"SBD file '{path}' has no GTcls.Segmentation; is it from dataset/cls/?")
    seg = np.asarray(seg)
    if seg.ndim != 2:
        raise ValueError(f"SBD file '{path}': Segmentation has shape {seg.shape}, expected 2-D.")
    return seg.astype(np.uint8)


def _voc_palette() -> List[int]:
    from bmp.data.datasets.register_voc import voc_palette

    return [v for col in voc_palette(256) for v in col]


def _check_values(mask: np.ndarray, path: str) -> None:
    values = np.unique(mask)
    bad = values[(values > NUM_CLASSES) & (values != IGNORE)]
    if bad.size:
        raise ValueError(
            f"Mask '{path}' has ids {bad.tolist()} outside 0..{NUM_CLASSES} and {IGNORE}; is it "
            "an RGB-converted mask instead of the original palette PNG?"
        )


def _save_png(mask: np.ndarray, path: str, palette: Sequence[int]) -> None:
    im = Image.fromarray(mask.astype(np.uint8))
    im.putpalette(list(palette))
    tmp = path + ".tmp.png"
    im.save(tmp)
    os.replace(tmp, path)  # never leave a half-written mask behind an interruption


def build(voc: str, sbd: str, overwrite: bool = False, progress: bool = True) -> Dict[str, int]:
    """Run the conversion; returns the split sizes."""
    from tqdm import tqdm

    check_inputs(voc, sbd)
    seg_lists = os.path.join(voc, "ImageSets", "Segmentation")
    voc_train = _read_list(os.path.join(seg_lists, "train.txt"))
    voc_val = _read_list(os.path.join(seg_lists, "val.txt"))
    sbd_all = _read_list(os.path.join(sbd, "dataset", "train.txt")) + _read_list(
        os.path.join(sbd, "dataset", "val.txt")
    )
    val_set = set(voc_val)
    train_aug = sorted((set(sbd_all) | set(voc_train)) - val_set)
    voc_has_mask = set(voc_train) | val_set

    # Check every input before writing anything.
    missing = []
    for stem in train_aug + voc_val:
        if not os.path.isfile(os.path.join(voc, "JPEGImages", stem + ".jpg")):
            missing.append(os.path.join(voc, "JPEGImages", stem + ".jpg"))
        if stem in voc_has_mask:
            src = os.path.join(voc, "SegmentationClass", stem + ".png")
        else:
            src = os.path.join(sbd, "dataset", "cls", stem + ".mat")
        if not os.path.isfile(src):
            missing.append(src)
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} input files are missing, e.g. '{missing[0]}'"
            + (f" and '{missing[1]}'" if len(missing) > 1 else "")
            + ". Is the VOC2012 or SBD download complete?"
        )

    out_dir = os.path.join(voc, "SegmentationClassAug")
    os.makedirs(out_dir, exist_ok=True)
    palette = _voc_palette()
    labels: Dict[str, List[int]] = {}
    sizes: Dict[str, Tuple[int, int]] = {}
    stems = sorted(set(train_aug) | val_set)
    for stem in tqdm(stems, desc="SegmentationClassAug", disable=not progress):
        dst = os.path.join(out_dir, stem + ".png")
        reuse = os.path.isfile(dst) and not overwrite
        if reuse:
            src = dst
            with Image.open(dst) as im:
                mask = np.asarray(im).astype(np.int64)
        elif stem in voc_has_mask:
            src = os.path.join(voc, "SegmentationClass", stem + ".png")
            with Image.open(src) as im:
                if im.mode not in ("P", "L"):
                    raise ValueError(
                        f"VOC mask '{src}' has mode {im.mode}, expected a palette PNG."
                    )
                mask = np.asarray(im).astype(np.int64)
        else:
            src = os.path.join(sbd, "dataset", "cls", stem + ".mat")
            mask = read_sbd_mask(src).astype(np.int64)
        _check_values(mask, src)
        with Image.open(os.path.join(voc, "JPEGImages", stem + ".jpg")) as im:
            w, h = im.size
        if mask.shape != (h, w):
            raise ValueError(f"Mask from '{src}' is {mask.shape} but its image is {(h, w)}.")
        if not reuse:
            _save_png(mask, dst, palette)
        labels[stem] = sorted(int(v) for v in np.unique(mask) if 0 < v <= NUM_CLASSES)
        sizes[stem] = (h, w)

    from bmp.data.label_files import write_image_labels, write_image_sizes

    with open(os.path.join(seg_lists, "train_aug.txt"), "w", encoding="utf-8") as f:
        f.write("".join(s + "\n" for s in train_aug))
    write_image_labels(os.path.join(voc, "cls_labels.txt"), labels)
    write_image_sizes(os.path.join(voc, "image_sizes.txt"), sizes)
    counts = {"train_aug": len(train_aug), "train": len(voc_train), "val": len(voc_val)}
    no_fg = [s for s in train_aug if not labels[s]]
    print(f"[voc_aug] wrote {len(stems)} masks to '{out_dir}'; splits: {counts}.")
    if no_fg:
        print(
            f"[voc_aug] {len(no_fg)} train_aug images have no foreground label (e.g. "
            f"{no_fg[0]}); the training split excludes them and says so."
        )
    for k, n in EXPECTED.items():
        if counts[k] != n:
            print(f"[voc_aug] note: {k} has {counts[k]} images; the full datasets give {n}.")
    return counts


def main(argv=None) -> int:
    root = os.path.expanduser(os.environ.get("DETECTRON2_DATASETS", "datasets"))
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--voc-root", default=os.path.join(root, "VOC2012"))
    p.add_argument("--sbd-root", default=os.path.join(root, "benchmark_RELEASE"))
    p.add_argument("--overwrite", action="store_true", help="rewrite masks that already exist")
    args = p.parse_args(argv)
    try:
        build(args.voc_root, args.sbd_root, overwrite=args.overwrite)
    except (FileNotFoundError, ValueError) as e:
        print(f"[voc_aug] error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
