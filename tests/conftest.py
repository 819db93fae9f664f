"""Shared pytest setup: deterministic, quiet, and never touching the user's dataset folders."""

import json
import logging
import os
import pickle
from types import SimpleNamespace

import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _private_datasets_root(tmp_path_factory):
    """Tests never read or write the user's $DETECTRON2_DATASETS: an empty root by default."""
    saved = os.environ.get("DETECTRON2_DATASETS")
    os.environ["DETECTRON2_DATASETS"] = str(tmp_path_factory.mktemp("no_datasets"))
    yield
    if saved is None:
        del os.environ["DETECTRON2_DATASETS"]
    else:
        os.environ["DETECTRON2_DATASETS"] = saved


def _all_loggers():
    named = [v for v in logging.root.manager.loggerDict.values() if isinstance(v, logging.Logger)]
    return [logging.root] + named


@pytest.fixture(autouse=True)
def _drop_log_handlers_added_by_the_test():
    """detectron2's ``setup_logger`` attaches handlers to the stream pytest captured for one test;
    left in place, a later test's logging writes to that closed stream."""
    before = {id(lg): set(lg.handlers) for lg in _all_loggers()}
    yield
    for lg in _all_loggers():
        for handler in set(lg.handlers) - before.get(id(lg), set()):
            lg.removeHandler(handler)


@pytest.fixture(autouse=True)
def _seed_everything():
    torch.manual_seed(0)
    yield


@pytest.fixture
def datasets_root(tmp_path, monkeypatch):
    """A private $DETECTRON2_DATASETS for tests that generate or register data."""
    root = tmp_path / "datasets"
    root.mkdir()
    monkeypatch.setenv("DETECTRON2_DATASETS", str(root))
    return root


class _Payload:
    """Unpickling this creates the folder ``marker``: a harmless stand-in for the code a crafted
    weight file runs when it is unpickled fully."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


@pytest.fixture
def crafted_weights(tmp_path):
    """``make(state)`` writes weight files that run code when unpickled fully: ``state`` (a state
    dict) under ``model`` next to a payload, as ``.pkl`` (pickle.dump, numpy arrays, detectron2's
    layout), ``.pth`` (torch.save) and ``legacy.pth`` (torch's pre-zip format). The payload
    creates ``.marker``, which a test checks for."""

    def make(state):
        folder = tmp_path / "crafted"
        folder.mkdir()
        marker = folder / "payload_ran"
        files = SimpleNamespace(
            pkl=folder / "weights.pkl",
            pth=folder / "weights.pth",
            legacy_pth=folder / "legacy.pth",
            marker=marker,
        )
        arrays = {k: v.numpy() for k, v in state.items()}
        with open(files.pkl, "wb") as f:
            pickle.dump({"model": arrays, "__author__": "x", "payload": _Payload(str(marker))}, f)
        torch.save({"model": dict(state), "payload": _Payload(str(marker))}, files.pth)
        torch.save(
            {"model": dict(state), "payload": _Payload(str(marker))},
            files.legacy_pth,
            _use_new_zipfile_serialization=False,
        )
        return files

    return make


@pytest.fixture
def cli_refuses_then_trusts(capsys):
    """``check(main, src, dst, marker)``: see :func:`_cli_refuses_then_trusts`."""
    return lambda main, src, dst, marker: _cli_refuses_then_trusts(main, src, dst, marker, capsys)


def _cli_refuses_then_trusts(main, src: str, dst, marker, capsys) -> None:
    """A converter's ``main`` refuses the crafted file ``src`` in one line without running it or
    writing ``dst``, and converts it with ``--unsafe-unpickle`` (then its payload runs)."""
    assert main([src, str(dst)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {src}: refused to unpickle")
    assert "'posix.mkdir'" in err and "--unsafe-unpickle" in err
    assert not marker.exists() and not dst.exists()
    assert main([src, str(dst), "--unsafe-unpickle"]) == 0  # the user trusts it
    assert marker.is_dir() and dst.exists()


# Own data (docs/own_data.md): two classes under COCO's own, non-contiguous ids.
OWN_CATEGORIES = [{"id": 17, "name": "cat"}, {"id": 18, "name": "dog"}]
_OWN_H, _OWN_W = 40, 48
# image -> objects (category id, (y0, y1, x0, x1), "poly" | "rle" | "crowd")
_OWN_IMAGES = {
    "train/t0.jpg": [(17, (4, 30, 6, 30), "poly")],
    "train/t1.jpg": [(18, (10, 36, 20, 44), "rle")],
    "train/t2.jpg": [(17, (2, 38, 2, 46), "poly"), (18, (12, 24, 14, 30), "poly")],
    "train/t3.jpg": [],
    "train/t4.jpg": [(18, (0, 12, 0, 48), "crowd"), (17, (16, 38, 10, 34), "poly")],
    "train/t5.jpg": [(18, (6, 34, 8, 40), "rle")],
    "val/v0.jpg": [(17, (6, 30, 10, 36), "poly")],
    "val/v1.jpg": [(18, (8, 32, 4, 28), "rle"), (17, (30, 40, 30, 48), "crowd")],
    "val/v2.jpg": [],
}


def _own_rle(box):
    """Compressed COCO RLE of a box, as a JSON file holds it (counts as a string)."""
    import pycocotools.mask as mask_util

    y0, y1, x0, x1 = box
    m = np.zeros((_OWN_H, _OWN_W), np.uint8)
    m[y0:y1, x0:x1] = 1
    rle = mask_util.encode(np.asfortranarray(m))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _own_mask(image: str) -> np.ndarray:
    """The semantic mask of one own-data image, by docs/own_data.md's rules (ids 1 cat, 2 dog)."""
    m = np.zeros((_OWN_H, _OWN_W), np.int64)
    objs = _OWN_IMAGES[image]
    for _, (y0, y1, x0, x1), kind in objs:
        if kind == "crowd":
            m[y0:y1, x0:x1] = 255
    plain = [o for o in objs if o[2] != "crowd"]
    for cat, (y0, y1, x0, x1), _ in sorted(
        plain, key=lambda o: -(o[1][1] - o[1][0]) * (o[1][3] - o[1][2])
    ):
        m[y0:y1, x0:x1] = cat - 16
    return m


@pytest.fixture
def own_data(tmp_path):
    """``tmp_path/my_data`` as docs/own_data.md lays it out: images, COCO JSON (polygons, RLE,
    crowd, an image without objects), masks and tags files, for the same nine photos."""
    from PIL import Image

    root = tmp_path / "my_data"
    rng = np.random.default_rng(0)
    coco = {
        s: {"images": [], "annotations": [], "categories": OWN_CATEGORIES} for s in ("train", "val")
    }
    tags = {"train": [], "val": []}
    for i, (image, objs) in enumerate(_OWN_IMAGES.items()):
        split = image.split("/")[0]
        mask = _own_mask(image)
        pixels = rng.integers(90, 140, size=(_OWN_H, _OWN_W, 3)).astype(np.uint8)
        pixels[mask == 1] = (200, 40, 40)
        pixels[mask == 2] = (40, 40, 200)
        for folder, data in (("images", pixels), ("masks", mask.astype(np.uint8))):
            path = root / folder / image.replace(".jpg", ".jpg" if folder == "images" else ".png")
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(data).save(path, quality=95)
        coco[split]["images"].append(
            {"id": i + 1, "file_name": image, "height": _OWN_H, "width": _OWN_W}
        )
        for j, (cat, (y0, y1, x0, x1), kind) in enumerate(objs):
            if kind == "poly":
                segm = [[x0, y0, x1, y0, x1, y1, x0, y1]]
            else:
                segm = _own_rle((y0, y1, x0, x1))
            coco[split]["annotations"].append({
                "id": 100 * (i + 1) + j, "image_id": i + 1, "category_id": cat,
                "segmentation": segm, "bbox": [x0, y0, x1 - x0, y1 - y0],
                "area": float((y1 - y0) * (x1 - x0)), "iscrowd": int(kind == "crowd"),
            })  # fmt: skip
        names = sorted({"cat" if c == 17 else "dog" for c, _, k in objs if k != "crowd"})
        line = (
            ",".join([image.split("/")[1]] + names)
            if i % 2
            else " ".join([image.split("/")[1]] + names)
        )
        tags[split].append(line)
    for split in ("train", "val"):
        (root / f"{split}.json").write_text(json.dumps(coco[split]))
        (root / f"tags_{split}.txt").write_text("# image tags\n" + "\n".join(tags[split]) + "\n")
    return root


@pytest.fixture
def own_data_masks():
    """Image (``train/t0.jpg``) -> its expected BMP mask (0 background, 1 cat, 2 dog, 255 crowd)."""
    return {image: _own_mask(image) for image in _OWN_IMAGES}
