"""Pictures while training (bmp/engine/training_panels.py): VIS_PERIOD panels in TensorBoard."""

import os
from types import SimpleNamespace

import pytest
import torch
from detectron2.data import Metadata
from detectron2.utils.events import EventStorage

import bmp  # noqa: F401
import bmp.engine.training_panels as panels
from bmp.config import load_config
from bmp.data.synthetic import ensure_synthetic_wsss
from bmp.engine.trainer import BMPTrainer
from bmp.modeling.training_view import TrainingView

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = os.path.join(ROOT, "configs", "synthetic", "bmp_mit_tiny.yaml")


def _view(h=40, w=60, k=3):
    c2s = torch.zeros(h, w, dtype=torch.long)
    c2s[:, :20] = 2
    c2s[:5] = 255
    return TrainingView(
        iteration=7,
        image=torch.randint(0, 256, (3, h, w)).float(),
        cam_logits=torch.randn(k, h // 4, w // 4),
        cls_label=torch.tensor([0.0, 1.0, 0.0]),
        valid=torch.ones(h, w, dtype=torch.bool),
        seg_logits=torch.randn(k + 1, h, w),
        c2s=c2s,
        c2s_kind="PAR",
        s2c=None,
    )


def test_the_panel_has_five_tiles_at_a_legible_size():
    panel = panels.training_panel(_view(), Metadata(name="none"))
    tile_h = round(40 * 256 / 40)  # the short side is drawn at 256 px
    assert panel.dtype == "uint8" and panel.shape[2] == 3
    assert panel.shape[0] == tile_h and panel.shape[1] == 5 * round(60 * 256 / 40)


def test_only_the_main_process_writes_and_the_view_is_taken_once(monkeypatch):
    model = SimpleNamespace(view=_view())
    model.take_training_view = lambda: (model.__dict__.pop("view", None))
    hook = panels.TrainingPanels(1, Metadata(name="none"))
    with EventStorage(0) as storage:
        hook.trainer = SimpleNamespace(iter=0, model=model, storage=storage)
        monkeypatch.setattr(panels.comm, "is_main_process", lambda: False)
        hook.after_step()
        assert storage._vis_data == [] and "view" not in model.__dict__
        model.view = _view()
        monkeypatch.setattr(panels.comm, "is_main_process", lambda: True)
        hook.after_step()
        assert [name for name, _, _ in storage._vis_data] == [panels.PANEL_TAG]


@pytest.mark.slow
def test_training_writes_the_panels_to_tensorboard_from_the_step_itself(datasets_root, tmp_path):
    ensure_synthetic_wsss(str(datasets_root / "synthetic_wsss"), num_train=6, num_val=2)
    cfg = load_config(
        TINY,
        [
            "OUTPUT_DIR", str(tmp_path), "SEED", "0", "SOLVER.IMS_PER_BATCH", "2",
            "SOLVER.MAX_ITER", "4", "SOLVER.WARMUP_ITERS", "1", "INPUT.CROP.SIZE", "[64,64]",
            "MODEL.BMP.PSEUDO.SCALES", "[1.0]", "MODEL.BMP.C2S.START_ITER", "2",
            "MODEL.BMP.S2C.START_ITER", "2", "MODEL.BMP.AFFINITY.START_ITER", "2",
            "MODEL.BMP.BSP.START_ITER", "3", "TEST.EVAL_PERIOD", "0", "DATASETS.TEST", "()",
            "VIS_PERIOD", "2",
        ],
    )  # fmt: skip
    trainer = BMPTrainer(cfg)
    passes = []
    trainer.model.cls_head.register_forward_pre_hook(lambda *_: passes.append(1))
    trainer.resume_or_load(resume=False)
    trainer.train()
    # No extra pass for the pictures: 2 a step (the main pass and scale 1.0).
    assert len(passes) == 4 * 2
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path), size_guidance={"images": 0})
    events.Reload()
    assert panels.PANEL_TAG in events.Tags()["images"]
    steps = [e.step for e in events.Images(panels.PANEL_TAG)]
    assert steps == [0, 2]
