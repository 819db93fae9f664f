#!/usr/bin/env python
"""Build semantic masks and image-level labels for MS COCO 2014 from its instance annotations.

Inputs (defaults under ``$DETECTRON2_DATASETS``, else ``./datasets``):
  coco/train2014/*.jpg, coco/val2014/*.jpg, coco/annotations/instances_{train,val}2014.json

Outputs in coco/sem_seg_2014/:
  {split}/<stem>.png          masks: 0 = background, 1..80 = categories in id order, 255 = crowd
  {split}.txt                 images with at least one labelled object (train2014: ~82,081)
  {split}_skipped.txt         "<stem> <reason>" for every image left out, so none vanishes silently
  cls_labels_{split}.txt      "<stem> <ids>" labels derived from the masks
  image_sizes_{split}.txt     "<stem> <h> <w>"
  categories.json             COCO category id -> contiguous id and name

Overlaps follow ``bmp.data.rasterize`` (the rule scoring a COCO-format dataset uses): crowd regions
are painted 255 first, then objects from the largest pixel area to the smallest (ties by annotation
id), so small objects stay on top and objects inside a crowd keep their class. Idempotent:
existing masks are kept unless --overwrite.
"""

import argparse
import json
import multiprocessing as mp
import os
import sys
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

IGNORE = 255
SPLITS = ("train2014", "val2014")
_CAT_MAP: Dict[int, int] = {}


def render_mask(h: int, w: int, anns: Sequence[dict], cat_map: Dict[int, int]) -> np.ndarray:
    """Semantic mask of one image: ``bmp.data.rasterize``'s overlap rule, ties by annotation id."""
    from bmp.data.rasterize import render_instances

    ordered = sorted(anns, key=lambda a: a["id"])
    return render_instances(
        h, w,
        [(0 if a.get("iscrowd", 0) else cat_map[a["category_id"]], a["segmentation"],
          bool(a.get("iscrowd", 0))) for a in ordered],
        IGNORE,
    )  # fmt: skip


def _init_worker(cat_map: Dict[int, int]) -> None:
    _CAT_MAP.clear()
    _CAT_MAP.update(cat_map)


def _process(job: Tuple[dict, List[dict], str, bool, bool]) -> Tuple[str, List[int], int, int]:
    info, anns, out_path, write, overwrite = job
    h, w = int(info["height"]), int(info["width"])
    if os.path.isfile(out_path) and not overwrite:
        with Image.open(out_path) as im:
            mask = np.asarray(im)
        if mask.shape != (h, w):
            raise ValueError(f"Existing mask '{out_path}' is {mask.shape}, expected {(h, w)}; "
                             "re-run with --overwrite.")  # fmt: skip
    else:
        mask = render_mask(h, w, anns, _CAT_MAP)
        if write:
            tmp = out_path + ".tmp.png"
            Image.fromarray(mask).save(tmp)
            os.replace(tmp, out_path)
    labels = sorted(int(v) for v in np.unique(mask) if 0 < v < IGNORE)
    stem = os.path.splitext(info["file_name"])[0]
    return stem, labels, h, w


def _load_json(path: str) -> dict:
    with open(path, "r", encoding="utf-8") as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"Annotation file '{path}' is not valid JSON: {e}") from e


def check_inputs(coco: str, splits: Sequence[str]) -> None:
    """Fail early, naming the first missing file or folder."""
    for split in splits:
        for path in (
            os.path.join(coco, "annotations", f"instances_{split}.json"),
            os.path.join(coco, split),
        ):
            if not os.path.exists(path):
                raise FileNotFoundError(
                    f"Missing '{path}'. Download {split}.zip and annotations_trainval2014.zip "
                    "from the COCO website and unpack them there (see datasets/README.md)."
                )


def build_split(
    coco: str, split: str, workers: int = 1, overwrite: bool = False, write_masks: bool = True,
    progress: bool = True,
) -> Dict[str, int]:  # fmt: skip
    """Convert one split; returns counts of kept and skipped images."""
    from tqdm import tqdm

    from bmp.data.label_files import write_image_labels, write_image_sizes

    data = _load_json(os.path.join(coco, "annotations", f"instances_{split}.json"))
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise ValueError(f"Annotation file for {split} has no '{key}' list.")
    cats = sorted(data["categories"], key=lambda c: c["id"])
    cat_map = {int(c["id"]): i + 1 for i, c in enumerate(cats)}
    if len(cats) != 80:
        print(f"[coco] note: {split} defines {len(cats)} categories, not COCO's 80; the registered "
              "datasets assume 80.")  # fmt: skip
    by_image: Dict[int, List[dict]] = {}
    for a in data["annotations"]:
        if a["category_id"] not in cat_map:
            raise ValueError(f"Annotation {a.get('id')} of {split} has unknown category "
                             f"{a['category_id']}.")  # fmt: skip
        by_image.setdefault(a["image_id"], []).append(a)
    images = sorted(data["images"], key=lambda im: im["file_name"])
    missing = [im["file_name"] for im in images
               if not os.path.isfile(os.path.join(coco, split, im["file_name"]))]  # fmt: skip
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} images of instances_{split}.json are missing from "
            f"'{os.path.join(coco, split)}', e.g. '{missing[0]}'. Is the download complete?"
        )

    out_root = os.path.join(coco, "sem_seg_2014")
    mask_dir = os.path.join(out_root, split)
    os.makedirs(mask_dir, exist_ok=True)
    with open(os.path.join(out_root, "categories.json"), "w", encoding="utf-8") as f:
        json.dump([{"id": c["id"], "contiguous_id": cat_map[int(c["id"])], "name": c["name"]}
                   for c in cats], f, indent=1)  # fmt: skip

    skipped: List[Tuple[str, str]] = []
    jobs = []
    for im in images:
        stem = os.path.splitext(im["file_name"])[0]
        anns = by_image.get(im["id"], [])
        if not anns:
            skipped.append((stem, "no_annotations"))
            continue
        jobs.append((im, anns, os.path.join(mask_dir, stem + ".png"), write_masks, overwrite))

    results = []
    bar = dict(total=len(jobs), desc=f"coco {split}", disable=not progress)
    if workers > 1:
        with mp.Pool(workers, initializer=_init_worker, initargs=(cat_map,)) as pool:
            results = list(tqdm(pool.imap(_process, jobs, chunksize=32), **bar))
    else:
        _init_worker(cat_map)
        results = [_process(j) for j in tqdm(jobs, **bar)]

    labels: Dict[str, List[int]] = {}
    sizes: Dict[str, Tuple[int, int]] = {}
    kept: List[str] = []
    for stem, lab, h, w in results:
        sizes[stem] = (h, w)
        if lab:
            labels[stem] = lab
            kept.append(stem)
        else:
            skipped.append((stem, "only_crowd_or_hidden_objects"))
    with open(os.path.join(out_root, f"{split}.txt"), "w", encoding="utf-8") as f:
        f.write("".join(s + "\n" for s in kept))
    with open(os.path.join(out_root, f"{split}_skipped.txt"), "w", encoding="utf-8") as f:
        f.write("".join(f"{s} {why}\n" for s, why in sorted(skipped)))
    write_image_labels(os.path.join(out_root, f"cls_labels_{split}.txt"), labels)
    write_image_sizes(os.path.join(out_root, f"image_sizes_{split}.txt"), sizes)
    counts = {"kept": len(kept), "skipped": len(skipped)}
    print(f"[coco] {split}: {counts['kept']} images with labels, {counts['skipped']} skipped "
          f"(listed in {split}_skipped.txt).")  # fmt: skip
    return counts


def main(argv: Optional[Sequence[str]] = None) -> int:
    root = os.path.expanduser(os.environ.get("DETECTRON2_DATASETS", "datasets"))
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--coco-root", default=os.path.join(root, "coco"))
    p.add_argument("--splits", nargs="+", default=list(SPLITS), choices=SPLITS)
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    p.add_argument("--overwrite", action="store_true", help="re-render masks that exist")
    p.add_argument(
        "--no-train-masks",
        action="store_true",
        help="train2014: write labels and lists only (no masks for seed evaluation)",
    )
    args = p.parse_args(argv)  # fmt: skip
    try:
        check_inputs(args.coco_root, args.splits)
        for split in args.splits:
            build_split(
                args.coco_root, split, workers=args.workers, overwrite=args.overwrite,
                write_masks=not (args.no_train_masks and split == "train2014"),
            )  # fmt: skip
    except (FileNotFoundError, ValueError) as e:
        print(f"[coco] error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
