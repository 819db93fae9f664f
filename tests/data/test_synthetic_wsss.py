"""The synthetic dataset is deterministic, well-formed, and has both CAM failure modes."""

import json
import multiprocessing as mp
import os

import numpy as np
import pytest
from PIL import Image

from bmp.data import synthetic as gen
from bmp.data.label_files import read_image_labels
from bmp.data.synthetic import spec

N_RENDER = 150


@pytest.fixture(scope="module")
def samples():
    return [gen.render_sample(gen.sample_rng(0, "train", i)) for i in range(N_RENDER)]


def test_render_is_deterministic_and_seed_dependent():
    a = gen.render_sample(gen.sample_rng(0, "train", 5))
    b = gen.render_sample(gen.sample_rng(0, "train", 5))
    c = gen.render_sample(gen.sample_rng(1, "train", 5))
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.mask, b.mask)
    assert a.image.shape != c.image.shape or not np.array_equal(a.image, c.image)


def test_sample_format(samples):
    sides = []
    for s in samples:
        h, w = s.mask.shape
        sides += [h, w]
        assert s.image.shape == (h, w, 3) and s.image.dtype == np.uint8
        assert s.mask.dtype == np.uint8 and s.mask.max() <= gen.NUM_CLASSES
        assert 1 <= len(s.labels) <= 4
        assert s.labels == sorted(int(v) for v in np.unique(s.mask) if v)
    assert min(sides) >= spec.MIN_SIDE and max(sides) <= spec.MAX_SIDE and len(set(sides)) > 20
    seen = set(c for s in samples for c in s.labels)
    assert seen == set(range(1, gen.NUM_CLASSES + 1))
    assert any(len(np.unique(s.mask)) >= 4 for s in samples)  # multi-object images exist


def test_partial_activation_premise(samples):
    # Classes of a family share the body; parts are distinct within the family ...
    for fam in spec.FAMILIES:
        members = [c for c in gen.CLASSES if c.family == fam]
        assert len(members) >= 2
        assert len({(c.part_shape, c.part_color) for c in members}) == len(members)
    # ... and a part is a small fraction of the object the mask covers.
    ratios = []
    for s in samples:
        for c in s.labels:
            body = s.mask == c
            ratios.append((s.part_mask & body).sum() / body.sum())
    ratios = np.array(ratios)
    assert ratios.min() > 0  # every labelled object shows its part
    assert ratios.mean() < 0.12 and np.quantile(ratios, 0.95) < 0.2


def test_cooccurring_context_premise(samples):
    for kind, members in gen.CONTEXT_CLASSES.items():
        assert members
        with_cls = [s for s in samples if set(s.labels) & set(members)]
        without = [s for s in samples if not set(s.labels) & set(members)]
        rate = np.mean([kind in s.contexts for s in with_cls])
        base = np.mean([kind in s.contexts for s in without])
        assert rate > 0.8 and base < 0.15, (kind, rate, base)
        for s in with_cls:
            if kind not in s.contexts:
                continue
            # The strip is a large background region the objects touch.
            assert s.context_mask.mean() > 0.08
            assert (s.mask[s.context_mask] == 0).all()
        touching = []
        for s in with_cls:
            if kind in s.contexts:
                obj = np.isin(s.mask, members)
                grown = obj.copy()
                grown[1:] |= obj[:-1]
                grown[:-1] |= obj[1:]
                touching.append((grown & s.context_mask).any())
        assert np.mean(touching) > 0.8


def _tree_bytes(root):
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            if f != "info.json":  # holds the generation time
                p = os.path.join(dirpath, f)
                out[os.path.relpath(p, root)] = open(p, "rb").read()
    return out


def test_generate_writes_layout_and_is_byte_identical(tmp_path):
    a = gen.ensure_synthetic_wsss(str(tmp_path / "a" / "synthetic_wsss"), 5, 2, seed=3)
    b = gen.ensure_synthetic_wsss(str(tmp_path / "b" / "synthetic_wsss"), 5, 2, seed=3)
    ta, tb = _tree_bytes(a), _tree_bytes(b)
    assert ta == tb and len(ta) == 2 * 7 + 4
    labels = read_image_labels(os.path.join(a, "image_labels.txt"), gen.NUM_CLASSES)
    assert sorted(labels) == [f"train_{i:05d}" for i in range(5)] + ["val_00000", "val_00001"]
    mask = np.asarray(Image.open(os.path.join(a, "SegmentationClass", "train_00003.png")))
    assert labels["train_00003"] == sorted(int(v) for v in np.unique(mask) if v)
    ref = gen.render_sample(gen.sample_rng(3, "train", 3))
    np.testing.assert_array_equal(mask, ref.mask)  # the PNG holds ids, not colours
    assert open(os.path.join(a, "ImageSets/Segmentation/val.txt")).read().split() == [
        "val_00000",
        "val_00001",
    ]
    assert gen.is_complete(a)


def test_ensure_reuses_current_and_regenerates_stale(tmp_path):
    out = str(tmp_path / "synthetic_wsss")
    gen.ensure_synthetic_wsss(out, 3, 1)
    stamp = os.path.getmtime(os.path.join(out, "info.json"))
    gen.ensure_synthetic_wsss(out, 3, 1)  # complete and current: untouched
    assert os.path.getmtime(os.path.join(out, "info.json")) == stamp
    info = json.load(open(os.path.join(out, "info.json")))
    info["generator_hash"] = "stale"
    json.dump(info, open(os.path.join(out, "info.json"), "w"))
    assert not gen.is_complete(out)
    gen.ensure_synthetic_wsss(out, 2, 1)
    assert gen.is_complete(out)
    assert len(os.listdir(os.path.join(out, "JPEGImages"))) == 3
    # Only the dataset and iopath's lock file: no temporary folder is left behind.
    assert sorted(os.listdir(tmp_path)) == ["synthetic_wsss", "synthetic_wsss.lock"]


def _worker(out):
    gen.ensure_synthetic_wsss(out, 4, 2)


def test_concurrent_generation_is_safe(tmp_path):
    out = str(tmp_path / "synthetic_wsss")
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_worker, args=(out,)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    assert gen.is_complete(out)
    assert len(os.listdir(os.path.join(out, "SegmentationClass"))) == 6
    assert not [d for d in os.listdir(tmp_path) if "tmp" in d or "stale" in d]


def test_sample_sheet(tmp_path):
    path = tmp_path / "sheet.png"
    gen.save_sample_sheet(str(path), num=4, cols=2)
    im = Image.open(path)
    assert im.size[0] == 2 * (spec.MAX_SIDE + 8) and im.size[1] > 4 * (spec.MAX_SIDE + 8)
