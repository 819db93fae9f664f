"""bmp/engine/trainer.py on the real BMP model and a tiny generated dataset."""

import itertools
import os

import pytest
import torch
from detectron2.evaluation import DatasetEvaluator, DatasetEvaluators
from detectron2.layers import NaiveSyncBatchNorm
from detectron2.utils import comm
from detectron2.utils.events import EventStorage

import bmp  # noqa: F401
from bmp.config import load_config
from bmp.data.synthetic import ensure_synthetic_wsss
from bmp.engine.trainer import BMPTrainer, GroupLRLogger
from bmp.evaluation import SeedEvaluator
from bmp.evaluation.build import OutputGatedEvaluator
from bmp.utils.safe_load import RefusedPickleError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = os.path.join(ROOT, "configs", "synthetic", "bmp_mit_tiny.yaml")


@pytest.fixture
def tiny_data(datasets_root):
    ensure_synthetic_wsss(str(datasets_root / "synthetic_wsss"), num_train=8, num_val=4)
    return datasets_root


def _cfg(tmp_path, *opts):
    return load_config(
        TINY,
        [
            "OUTPUT_DIR", str(tmp_path / "out"),
            "SOLVER.IMS_PER_BATCH", "2",
            "INPUT.CROP.SIZE", "[64,64]",
            "MODEL.BMP.PSEUDO.SCALES", "[1.0]",
            "TEST.EVAL_PERIOD", "0",
            "DATASETS.TEST", "()",  # detectron2 evaluates after training whatever the period
            "TEST.BMP.EXTRA_OUTPUTS", "False",
            *opts,
        ],
    )  # fmt: skip


def test_optimizer_groups_on_the_real_model(tmp_path):
    cfg = _cfg(tmp_path, "SOLVER.BASE_LR", "0.001")
    model = BMPTrainer.build_model(cfg)
    opt = BMPTrainer.build_optimizer(cfg, model)
    names = {id(p): n for n, p in model.named_parameters()}
    groups = {g["name"]: g for g in opt.param_groups}
    heads = sorted(names[id(p)] for p in groups["cls_aff_heads"]["params"])
    assert heads == [
        "affinity_head.attn_proj.bias", "affinity_head.attn_proj.weight",
        "cls_head.classifier.weight",
    ]  # fmt: skip
    norms = [names[id(p)] for p in groups["backbone_norm"]["params"]]
    assert norms and all(n.startswith("backbone.") and "norm" in n for n in norms)
    assert "backbone.block1.0.attn.norm.weight" in norms and "backbone.norm4.bias" in norms
    assert all(names[id(p)].startswith("sem_seg_head.") for p in groups["decoder"]["params"])
    assert groups["decoder"]["lr"] == pytest.approx(0.01)
    assert groups["backbone_norm"]["lr"] == 0.0
    assert sum(len(g["params"]) for g in opt.param_groups) == len(names)


def test_evaluators_follow_extra_outputs(tiny_data, tmp_path):
    plain = BMPTrainer.build_evaluator(_cfg(tmp_path), "synthetic_wsss_val_sem_seg")
    assert isinstance(plain._evaluators[-1], OutputGatedEvaluator)
    extra = BMPTrainer.build_evaluator(
        _cfg(tmp_path, "TEST.BMP.EXTRA_OUTPUTS", "True"), "synthetic_wsss_val_sem_seg"
    )
    assert isinstance(plain, DatasetEvaluators)
    assert not any(isinstance(e, SeedEvaluator) for e in plain._evaluators)
    assert any(isinstance(e, SeedEvaluator) for e in extra._evaluators)


class _Recorder(DatasetEvaluator):
    def reset(self):
        self.n = 0

    def process(self, inputs, outputs):
        self.n += len(outputs)

    def evaluate(self):
        return {"rec": {"n": self.n}}


def test_output_gated_evaluator():
    inner = _Recorder()
    gated = OutputGatedEvaluator("cls_score", inner)
    gated.reset()
    gated.process([{}], [{"sem_seg": 0}])
    assert gated.evaluate() == {}
    gated.process([{}, {}], [{"cls_score": 1}, {"cls_score": 2}])
    assert gated.evaluate() == {"rec": {"n": 2}}


def test_sync_bn_becomes_naive_sync_bn_for_multi_process_cpu(tmp_path, monkeypatch):
    if torch.cuda.is_available():
        pytest.skip("the fallback is for CPU")
    monkeypatch.setattr(comm, "get_world_size", lambda: 2)
    model = BMPTrainer.build_model(_cfg(tmp_path, "MODEL.SEM_SEG_HEAD.NORM", "SyncBN"))
    assert type(model.sem_seg_head.linear_fuse.norm) is NaiveSyncBatchNorm


def _all_padding_batch(n=2, size=64, k=10):
    batch = []
    for i in range(n):
        label = torch.zeros(k)
        label[i] = 1.0
        batch.append(
            {
                "image": torch.full((3, size, size), 120, dtype=torch.uint8),
                "cls_label": label,
                "valid_mask": torch.zeros(size, size, dtype=torch.bool),
            }
        )
    return batch


def test_entirely_ignored_crop_gives_zero_c2s_s2c_not_nan(tiny_data, tmp_path):
    cfg = _cfg(
        tmp_path,
        "SOLVER.MAX_ITER", "2",
        "MODEL.BMP.C2S.START_ITER", "0",
        "MODEL.BMP.S2C.START_ITER", "0",
        "MODEL.BMP.AFFINITY.START_ITER", "0",
        "MODEL.BMP.BSP.START_ITER", "1",
        "SOLVER.CHECKPOINT_PERIOD", "1000",
    )  # fmt: skip

    class _PaddingOnly(BMPTrainer):
        @classmethod
        def build_train_loader(cls, cfg):
            return itertools.repeat(_all_padding_batch())

    trainer = _PaddingOnly(cfg)
    trainer.train()  # raises FloatingPointError on any NaN loss
    hist = trainer.storage.histories()
    for it in (0, 1):  # PAR labels, then BSP labels
        values = {k: dict((i, v) for v, i in hist[k].values()) for k in ("loss_c2s", "loss_s2c")}
        assert values["loss_c2s"][it] == 0.0 and values["loss_s2c"][it] == 0.0
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


def test_group_lr_logger_writes_every_group(tiny_data, tmp_path):
    trainer = BMPTrainer(_cfg(tmp_path, "SOLVER.MAX_ITER", "10", "SOLVER.BASE_LR", "0.001"))
    hook = next(h for h in trainer._hooks if isinstance(h, GroupLRLogger))
    with EventStorage(3) as storage:
        trainer.storage = storage
        hook.after_step()
    latest = {k: v for k, (v, _) in storage.latest().items()}
    assert set(latest) == {"lr/backbone", "lr/backbone_norm", "lr/cls_aff_heads", "lr/decoder"}
    assert latest["lr/decoder"] == pytest.approx(10 * latest["lr/backbone"])
    assert latest["lr/backbone_norm"] == 0.0


def test_initial_weights_follow_seed_whatever_ran_before(tiny_data, tmp_path):
    """A trainer built outside train_net.py (no default_setup) starts from the weights of SEED."""

    def initial_weights(seed, disturb):
        torch.manual_seed(disturb)  # whatever an entry point drew before building the trainer
        trainer = BMPTrainer(_cfg(tmp_path, "SEED", str(seed)))
        return {k: v.clone() for k, v in trainer.model.state_dict().items()}

    first, again, other = initial_weights(3, 11), initial_weights(3, 12), initial_weights(4, 11)
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)


def test_model_weights_are_read_as_data_unless_the_config_opts_in(
    tiny_data, tmp_path, crafted_weights
):
    files = crafted_weights({"unused.weight": torch.ones(1)})
    trainer = BMPTrainer(_cfg(tmp_path, "MODEL.WEIGHTS", str(files.pkl)))
    with pytest.raises(RefusedPickleError, match="set MODEL.WEIGHTS_UNSAFE_UNPICKLE True"):
        trainer.resume_or_load(resume=False)
    assert not files.marker.exists()
    opt_in = ["MODEL.WEIGHTS", str(files.pkl), "MODEL.WEIGHTS_UNSAFE_UNPICKLE", "True"]
    BMPTrainer(_cfg(tmp_path, *opt_in)).resume_or_load(resume=False)
    assert files.marker.is_dir()
