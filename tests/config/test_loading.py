"""bmp/config/loading.py: config mistakes become one clear ConfigError."""

import os

import pytest
import torch

import bmp  # noqa: F401  (registers datasets)
from bmp.config import (
    ConfigError,
    adapt_config_to_machine,
    check_config,
    load_config,
    resolve_sync_norm,
)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = os.path.join(ROOT, "configs", "synthetic", "bmp_mit_tiny.yaml")


def test_loads_and_freezes():
    cfg = load_config(TINY, ["SOLVER.MAX_ITER", "7", "MODEL.BMP.LAMBDA_S2C", "0.2"])
    assert cfg.is_frozen()
    assert cfg.SOLVER.MAX_ITER == 7 and cfg.MODEL.BMP.LAMBDA_S2C == 0.2


def test_unknown_key_in_opts_names_it_and_suggests():
    with pytest.raises(
        ConfigError, match=r"unknown config key 'SOLVER.MAX_ITR'.*'SOLVER.MAX_ITER'"
    ):
        load_config(TINY, ["SOLVER.MAX_ITR", "7"])


def test_unknown_key_in_file_names_file_and_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f'_BASE_: "{TINY}"\nMODEL:\n  BMP:\n    LAMBDA_C2Z: 0.5\n')
    with pytest.raises(ConfigError) as e:
        load_config(str(bad))
    msg = str(e.value)
    assert str(bad) in msg and "MODEL.BMP.LAMBDA_C2Z" in msg and "\n" not in msg


def test_type_mismatch_and_odd_opts():
    with pytest.raises(ConfigError, match="SOLVER.MAX_ITER"):
        load_config(TINY, ["SOLVER.MAX_ITER", "'many'"])
    with pytest.raises(ConfigError, match="KEY VALUE"):
        load_config(TINY, ["SOLVER.MAX_ITER"])


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(str(tmp_path / "nope.yaml"))
    broken = tmp_path / "broken.yaml"
    broken.write_text("MODEL: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(str(broken))


def test_missing_weights(tmp_path):
    cfg = load_config(TINY, ["MODEL.WEIGHTS", str(tmp_path / "nope.pth")])
    with pytest.raises(ConfigError, match=r"MODEL.WEIGHTS file '.*nope.pth' does not exist"):
        check_config(cfg)
    # --resume with a checkpoint in OUTPUT_DIR does not need MODEL.WEIGHTS.
    (tmp_path / "last_checkpoint").write_text("model_0000009.pth")
    cfg = load_config(
        TINY, ["MODEL.WEIGHTS", str(tmp_path / "nope.pth"), "OUTPUT_DIR", str(tmp_path)]
    )
    check_config(cfg, resume=True)
    with pytest.raises(ConfigError):
        check_config(cfg, resume=False)


def test_eval_only_needs_weights():
    with pytest.raises(ConfigError, match="--eval-only needs MODEL.WEIGHTS"):
        check_config(load_config(TINY), eval_only=True)


def test_unregistered_datasets(tmp_path):
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"")
    cfg = load_config(TINY, ["DATASETS.TEST", "('synthetic_wsss_vall_sem_seg',)"])
    with pytest.raises(ConfigError) as e:
        check_config(cfg)
    assert "'synthetic_wsss_vall_sem_seg' in DATASETS.TEST is not registered" in str(e.value)
    assert "synthetic_wsss_val_sem_seg" in str(e.value)  # the suggestion
    cfg = load_config(
        TINY, ["DATASETS.TRAIN", "('nothing_like_it',)", "MODEL.WEIGHTS", str(weights)]
    )
    with pytest.raises(ConfigError, match="'nothing_like_it' in DATASETS.TRAIN"):
        check_config(cfg)
    check_config(cfg, eval_only=True)  # eval-only ignores DATASETS.TRAIN...
    cfg = load_config(TINY, ["DATASETS.TEST", "('x',)", "MODEL.WEIGHTS", str(weights)])
    with pytest.raises(ConfigError, match="'x' in DATASETS.TEST"):  # ...but not DATASETS.TEST
        check_config(cfg, eval_only=True)


def test_sync_norm_resolution():
    assert resolve_sync_norm("SyncBN", world_size=2, cuda=False) == "naiveSyncBN"
    assert resolve_sync_norm("SyncBN", world_size=2, cuda=True) == "SyncBN"
    assert resolve_sync_norm("SyncBN", world_size=1, cuda=False) == "SyncBN"
    assert resolve_sync_norm("BN", world_size=2, cuda=False) == "BN"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU fallback")
def test_cpu_device_fallback():
    cfg = load_config(TINY, freeze=False)
    cfg.MODEL.DEVICE = "cuda"
    assert adapt_config_to_machine(cfg).MODEL.DEVICE == "cpu"


def test_num_classes_checked_against_every_dataset():
    check_config(load_config(TINY))  # the shipped config agrees with its datasets
    with pytest.raises(ConfigError, match=r"NUM_CLASSES is 5.*'synthetic_wsss_train'.* 10 "):
        check_config(load_config(TINY, ["MODEL.BMP.NUM_CLASSES", "5"]))
    with pytest.raises(ConfigError, match=r"'synthetic_wsss_val_sem_seg' in DATASETS.TEST"):
        check_config(
            load_config(TINY, ["MODEL.BMP.NUM_CLASSES", "5"]),
            datasets=[("DATASETS.TEST", "synthetic_wsss_val_sem_seg")],
        )
