"""docs/own_data.md runs as written: each registration, the train, score and export commands.

The page's blocks are read from the page itself; the commands run with the page's arguments
first and, after them, overrides that make the run small (a few iterations at crop 64, random
weights), since the page's config is the VOC one.
"""

import json
import os
import re
import shlex
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGE = os.path.join(ROOT, "docs", "own_data.md")
SMALL = [
    "MODEL.WEIGHTS", "",
    "SOLVER.MAX_ITER", "4",
    "SOLVER.IMS_PER_BATCH", "2",
    "SOLVER.WARMUP_ITERS", "1",
    "SOLVER.CHECKPOINT_PERIOD", "100",
    "INPUT.CROP.SIZE", "[64,64]",
    "MODEL.BMP.PSEUDO.SCALES", "[1.0]",
    "MODEL.BMP.C2S.START_ITER", "2",
    "MODEL.BMP.S2C.START_ITER", "2",
    "MODEL.BMP.AFFINITY.START_ITER", "2",
    "MODEL.BMP.BSP.START_ITER", "3",
    "TEST.EVAL_PERIOD", "0",
    "TEST.BMP.EXTRA_OUTPUTS", "True",
    "DATALOADER.NUM_WORKERS", "0",
]  # fmt: skip


def _examples():
    text = open(PAGE, encoding="utf-8").read()
    blocks = re.findall(r"<!-- example: (\w+) -->\n```\w+\n(.*?)```", text, flags=re.S)
    return dict(blocks)


def _command(block):
    words = shlex.split(block.replace("\\\n", " "))
    assert words[0] == "python", block
    return [sys.executable] + words[1:]


def _run(cmd, cwd):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT)
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _metrics(out_dir):
    with open(os.path.join(out_dir, "metrics.json"), encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return {k: v for row in rows for k, v in row.items()}


def test_the_page_has_each_example_once():
    assert set(_examples()) == {"coco", "masks", "tags", "train", "score", "export"}
    for name in ("coco", "masks", "tags"):
        assert len(_examples()[name].strip().splitlines()) <= 10


@pytest.mark.parametrize("way", ["coco", "masks", "tags"])
def test_each_way_trains_and_is_scored_as_the_page_says(own_data, tmp_path, way):
    examples = _examples()
    for link in ("train_net.py", "configs", "tools"):
        os.symlink(os.path.join(ROOT, link), tmp_path / link)
    (tmp_path / "my_datasets.py").write_text(examples[way])
    _run(_command(examples["train"]) + SMALL, tmp_path)
    out = tmp_path / "output" / "my_data"
    assert (out / "model_final.pth").is_file()
    trained = _metrics(out)
    if way == "tags":  # image tags only: scored by label accuracy
        assert "classification/mAP" in trained and not any("mIoU" in k for k in trained)
        return
    assert "sem_seg/mIoU" in trained and "sem_seg/IoU-dog" in trained
    assert "seed_bsp/mIoU" in trained and "classification/mAP" in trained
    if way != "coco":
        return
    scored = _run(_command(examples["score"]), tmp_path)
    assert "mIoU" in scored.stdout + scored.stderr
    reports = list(out.glob("**/*per_class*")) + list(out.glob("**/*eval*"))
    assert reports, sorted(p.name for p in out.iterdir())
    _run(_command(examples["export"]), tmp_path)
    ids = out / "pseudo" / "SegmentationClassIds"
    assert sorted(p.name for p in ids.glob("*.png")) == [f"t{i}.png" for i in range(6)]
    empty = np.asarray(Image.open(ids / "t3.png"))  # no object: background or uncertain only
    assert set(np.unique(empty)) <= {0, 255}
