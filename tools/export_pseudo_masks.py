#!/usr/bin/env python
"""Export a trained BMP model's training seeds as pseudo masks for a whole registered split.

    python tools/export_pseudo_masks.py --config-file configs/voc/bmp_mit_b1_512_20k.yaml \
        --dataset voc_2012_train_aug_wsss --seed bsp --output-dir output/pseudo_masks/bsp \
        MODEL.WEIGHTS output/voc/bmp_mit_b1_512_20k/model_final.pth
    python tools/export_pseudo_masks.py ... --crf        # CRF-refined seeds (TEST.CRF.* settings)

For every image the seed is built from the split's image-level labels (as seeds are reported) and
written twice: ``SegmentationClass/<stem>.png`` (VOC palette) and
``SegmentationClassIds/<stem>.png`` (plain ids, for detectron2's DatasetMapper); 255 = uncertain.
Interrupted runs resume: PNGs already written and valid are skipped. When the split has
ground-truth masks (``*_sem_seg``), the seed's mIoU is printed, computed exactly as the seed
evaluator does. ``bmp.data.datasets.register_pseudo_masks.register_pseudo_masks`` then registers the
folder; ``tools/train_second_stage.py`` trains detectron2's DeepLab on it.
"""

import argparse
import hashlib
import json
import os
import shutil
import sys
import time
from collections import Counter
from typing import Any, Dict, List, Optional, Sequence

SEEDS = ("cam", "par", "bsp")


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config-file", required=True, metavar="FILE")
    p.add_argument("--dataset", required=True, help="registered split with image-level labels")
    p.add_argument(
        "--register", action="append", default=[], metavar="FILE",
        help="a Python file that registers your datasets (as train_net.py --register)",
    )  # fmt: skip
    p.add_argument("--seed", choices=SEEDS, default="bsp", help="which seed to export")
    p.add_argument("--crf", action="store_true", help="refine the seed with the TEST.CRF.* CRF")
    p.add_argument("--output-dir", required=True)
    p.add_argument("--overwrite", action="store_true", help="recompute every PNG")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    return p.parse_args(argv)


def export_settings(args: argparse.Namespace, cfg: Any, crf: Any) -> Dict[str, Any]:
    """What determines the PNGs; a resumed export must match it: the split, the seed kind, the
    CRF, the whole config (thresholds, scales, PAR) and the weights file's size and time."""
    weights = os.path.abspath(cfg.MODEL.WEIGHTS) if cfg.MODEL.WEIGHTS else ""
    stat = os.stat(weights) if weights and os.path.isfile(weights) else None
    return {
        "dataset": args.dataset,
        "seed": args.seed,
        "crf": None if crf is None else dict(vars(crf)),
        "weights": weights,
        "weights_file": None if stat is None else [stat.st_size, stat.st_mtime_ns],
        "config_sha1": hashlib.sha1(cfg.dump().encode()).hexdigest(),
    }


def check_resumable(output_dir: str, settings: Dict[str, Any], overwrite: bool) -> None:
    """Refuse to mix two different exports in one folder; ``overwrite`` empties it first."""
    from bmp.data.datasets.register_pseudo_masks import (
        IDS_DIR,
        INFO_FILE,
        PALETTE_DIR,
        read_export_info,
    )

    mask_dirs = [os.path.join(output_dir, sub) for sub in (PALETTE_DIR, IDS_DIR)]
    if overwrite:
        for folder in mask_dirs:  # no PNG of the previous export may count as done
            shutil.rmtree(folder, ignore_errors=True)
        return
    if not os.path.isfile(os.path.join(output_dir, INFO_FILE)):
        if any(os.path.isdir(f) and os.listdir(f) for f in mask_dirs):
            raise ValueError(
                f"'{output_dir}' holds masks but no {INFO_FILE}, so what made them is unknown; "
                "choose another --output-dir or pass --overwrite"
            )
        return
    old = read_export_info(output_dir)
    diff = [k for k, v in settings.items() if old.get(k) != v]
    if diff:
        shown = ", ".join(f"{k}: {old.get(k)!r} -> {settings[k]!r}" for k in diff)
        raise ValueError(
            f"'{output_dir}' holds a different export ({shown}); choose another --output-dir "
            "or pass --overwrite"
        )


def write_info(output_dir: str, settings: Dict, meta: Any, dicts: Sequence[Dict]) -> None:
    from bmp.data.datasets.register_pseudo_masks import INFO_FILE

    info = dict(settings)
    info.update(
        class_names=list(meta.stuff_classes),
        stuff_colors=[list(c) for c in meta.stuff_colors],
        ignore_label=int(meta.get("ignore_label", 255)),
        images=[
            {
                "stem": _stem(d),
                "file_name": os.path.abspath(d["file_name"]),
                "height": int(d["height"]),
                "width": int(d["width"]),
                "cls_labels": list(d["cls_labels"]),
            }
            for d in dicts
        ],
    )
    path = os.path.join(output_dir, INFO_FILE)
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(info, f, indent=1)
    os.replace(path + ".tmp", path)


def _stem(d: Dict) -> str:
    return os.path.splitext(os.path.basename(d["file_name"]))[0]


def export(
    model: Any,
    mapper: Any,
    dicts: Sequence[Dict],
    output_dir: str,
    seed: str,
    num_classes: int,
    palette: Sequence[int],
    crf: Any = None,
    overwrite: bool = False,
    progress: bool = True,
) -> Dict[str, int]:
    """Write both PNGs of every image not already done; returns written / skipped counts.

    ``model`` is an eval-mode BMP returning ``outputs["seeds"]`` (extra outputs on, seeds from
    the inputs' ``cls_label``); ``mapper`` is the evaluation mapper.
    """
    import torch
    from tqdm import tqdm

    from bmp.data.datasets.register_pseudo_masks import IDS_DIR, PALETTE_DIR
    from bmp.data.image_io import read_image_rgb
    from bmp.data.label_png import is_valid_label_png, write_label_png
    from bmp.evaluation.crf import crf_refine_labels

    def paths(d: Dict) -> List[str]:
        return [os.path.join(output_dir, sub, _stem(d) + ".png") for sub in (PALETTE_DIR, IDS_DIR)]

    def done(d: Dict) -> bool:
        size = (int(d["height"]), int(d["width"]))
        return all(is_valid_label_png(p, size, num_classes) for p in paths(d))

    todo = list(dicts) if overwrite else [d for d in dicts if not done(d)]
    skipped = len(dicts) - len(todo)
    if skipped:
        print(f"[export] {skipped} of {len(dicts)} images already exported and valid: skipped")
    bar = tqdm(todo, desc=f"export {seed}", unit="img", disable=not progress or not todo)
    with torch.no_grad():
        for d in bar:
            inp = mapper(d)
            labels = model([inp])[0]["seeds"][seed].cpu().numpy()
            if crf is not None:
                classes = [0] + [int(c) for c in d["cls_labels"]]
                labels = crf_refine_labels(read_image_rgb(d["file_name"]), labels, classes, crf)
            palette_png, ids_png = paths(d)
            write_label_png(palette_png, labels, palette)
            write_label_png(ids_png, labels)
    return {"written": len(todo), "skipped": skipped}


def seed_miou(dataset: str, output_dir: str, dicts: Sequence[Dict], seed: str) -> Dict[str, Any]:
    """The exported PNGs scored by :class:`bmp.evaluation.SeedEvaluator` against the split's
    ground truth (same accounting: uncertain pixels are misses)."""
    import numpy as np
    from PIL import Image

    from bmp.data.datasets.register_pseudo_masks import IDS_DIR
    from bmp.evaluation import SeedEvaluator

    evaluator = SeedEvaluator(dataset, seed_types=[seed], distributed=False)
    evaluator.reset()
    for d in dicts:
        labels = np.asarray(Image.open(os.path.join(output_dir, IDS_DIR, _stem(d) + ".png")))
        evaluator.process([{"file_name": d["file_name"]}], [{"seeds": {seed: labels}}])
    return evaluator.evaluate()[f"seed_{seed}"]


def build_model(cfg: Any) -> Any:
    """An eval-mode BMP that returns seeds built from the split's image-level labels."""
    from detectron2.modeling import build_model as d2_build_model

    from bmp.engine.checkpoint import AtomicCheckpointer

    cfg = cfg.clone()
    cfg.defrost()
    # Every image needs a mask, so a too-small image is enlarged, never skipped.
    cfg.INPUT.SMALL_TEST_IMAGE = "resize"
    cfg.TEST.BMP.EXTRA_OUTPUTS = True
    cfg.TEST.BMP.SEED_USE_GT_LABELS = True
    model = d2_build_model(cfg)
    AtomicCheckpointer(model, unsafe_unpickle=cfg.MODEL.WEIGHTS_UNSAFE_UNPICKLE).load(
        cfg.MODEL.WEIGHTS
    )
    model.eval()
    return model


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    import bmp  # noqa: F401  (registers the model and the datasets)
    from bmp.config import ConfigError, check_config, load_config
    from bmp.data import SemSegEvalMapper
    from bmp.data.datasets.user_registration import run_registration_files
    from bmp.data.registered import bmp_dataset_dicts, bmp_metadata, semantic_view
    from bmp.evaluation.crf import CRFParams, require_crf
    from bmp.utils.safe_load import RefusedPickleError
    from bmp.utils.weights import CheckpointFormatError

    try:
        run_registration_files(args.register)
        cfg = load_config(args.config_file, list(args.opts))
        check_config(cfg, eval_only=True, datasets=[("--dataset", args.dataset)])
        crf = None
        if args.crf:
            crf = CRFParams.from_config(_on(cfg))
            require_crf()
        dicts = bmp_dataset_dicts(args.dataset)  # any registered dataset, with its cls_labels
        if semantic_view(args.dataset).source == "none":
            raise ConfigError(
                f"--dataset {args.dataset} has no image-level labels (cls_labels, annotations or "
                "masks); seeds need them"
            )
        per_stem = Counter(_stem(d) for d in dicts)
        twice = sorted(s for s, n in per_stem.items() if n > 1)[:5]
        if twice:
            raise ConfigError(
                f"--dataset {args.dataset} has images with the same file name in different "
                f"folders (e.g. {twice}); their masks would overwrite each other"
            )
        meta = bmp_metadata(args.dataset)
        settings = export_settings(args, cfg, crf)
        check_resumable(args.output_dir, settings, args.overwrite)
    except (ConfigError, ImportError, KeyError, ValueError, FileNotFoundError) as e:
        print(f"error: {str(e).strip(chr(34))}", file=sys.stderr)
        return 2
    try:
        model = build_model(cfg)
    except (RefusedPickleError, CheckpointFormatError) as e:  # MODEL.WEIGHTS is read as data
        print(f"error: {e}", file=sys.stderr)
        return 2

    os.makedirs(args.output_dir, exist_ok=True)
    write_info(args.output_dir, settings, meta, dicts)
    palette = [v for rgb in _palette() for v in rgb]
    counts = export(
        model,
        SemSegEvalMapper(_resize_small(cfg), False, dataset_name=args.dataset),
        dicts,
        args.output_dir,
        args.seed,
        len(meta.stuff_classes) - 1,
        palette,
        crf=crf,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    minutes = (time.perf_counter() - start) / 60
    print(
        f"[export] {args.seed}{' + CRF' if crf else ''} seeds of {args.dataset}: "
        f"{counts['written']} written, {counts['skipped']} kept, in {minutes:.1f} min -> "
        f"{args.output_dir}"
    )
    if all("sem_seg_file_name" in d for d in dicts):
        res = seed_miou(args.dataset, args.output_dir, dicts, args.seed)
        print(
            f"[export] mIoU {res['mIoU']:.2f} (fg precision {res['fg_precision']:.1f}, recall "
            f"{res['fg_recall']:.1f}, uncertain {res['ignore_ratio']:.1f}% of pixels) "
            f"on {len(dicts)} images"
        )
    else:
        print(f"[export] {args.dataset} has no ground-truth masks: no mIoU")
    print(
        "[export] register it with bmp.data.datasets.register_pseudo_masks.register_pseudo_masks"
        f"(name, '{args.output_dir}'), or train DeepLab on it with tools/train_second_stage.py"
    )
    return 0


def _resize_small(cfg: Any) -> Any:
    """``cfg`` with ``INPUT.SMALL_TEST_IMAGE "resize"``: every image of the split gets a mask."""
    cfg = cfg.clone()
    cfg.defrost()
    cfg.INPUT.SMALL_TEST_IMAGE = "resize"
    return cfg


def _on(cfg: Any) -> Any:
    """``TEST.CRF`` with ``ENABLED`` forced on: ``--crf`` asks for it whatever the config says."""
    node = cfg.TEST.CRF.clone()
    node.defrost()
    node.ENABLED = True
    return node


def _palette() -> List[List[int]]:
    """The VOC colour map for all 256 ids (255, uncertain, gets VOC's light 'void' colour)."""
    from bmp.data.datasets.register_voc import voc_palette

    return voc_palette(256)


if __name__ == "__main__":
    sys.exit(main())
