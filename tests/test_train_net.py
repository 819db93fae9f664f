"""train_net.py as users run it: config errors, kill -9 and --resume, --eval-only."""

import glob
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

from bmp.data.synthetic import ensure_synthetic_wsss
from bmp.solver import build_warmup_poly_multiplier

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_NET = os.path.join(ROOT, "train_net.py")
TINY = os.path.join(ROOT, "configs", "synthetic", "bmp_mit_tiny.yaml")

_spec = importlib.util.spec_from_file_location("train_net", TRAIN_NET)
train_net = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(train_net)

MAX_ITER, BASE_LR, WARMUP = 10, 0.001, 4
FAST = [
    "SOLVER.IMS_PER_BATCH", "2",
    "SOLVER.BASE_LR", str(BASE_LR),
    "SOLVER.MAX_ITER", str(MAX_ITER),
    "SOLVER.WARMUP_ITERS", str(WARMUP),
    "SOLVER.CHECKPOINT_PERIOD", "2",
    "INPUT.CROP.SIZE", "[64,64]",
    "MODEL.BMP.PSEUDO.SCALES", "[1.0]",
    "MODEL.BMP.C2S.START_ITER", "6",
    "MODEL.BMP.S2C.START_ITER", "6",
    "MODEL.BMP.AFFINITY.START_ITER", "6",
    "MODEL.BMP.BSP.START_ITER", "8",
    "TEST.EVAL_PERIOD", str(MAX_ITER),
    "DATASETS.TEST", "('synthetic_wsss_val_sem_seg',)",
    "TEST.BMP.EXTRA_OUTPUTS", "False",
]  # fmt: skip


def _run_cli(argv, capsys):
    with pytest.raises(SystemExit) as e:
        train_net.cli(argv)
    return e.value.code, capsys.readouterr().err.strip().splitlines()


@pytest.mark.parametrize(
    "opts, expected",
    [
        (["MODEL.BMP.LAMBDA_C2Z", "0.5"], "unknown config key 'MODEL.BMP.LAMBDA_C2Z'"),
        (["MODEL.WEIGHTS", "/no/such/model.pth"], "MODEL.WEIGHTS file '/no/such/model.pth'"),
        (["DATASETS.TEST", "('synthetic_val',)"], "dataset 'synthetic_val' in DATASETS.TEST"),
        (
            ["MODEL.BMP.NUM_CLASSES", "5"],
            "MODEL.BMP.NUM_CLASSES is 5, but dataset 'synthetic_wsss_train' in DATASETS.TRAIN "
            "has 10 foreground classes",
        ),
    ],
)
def test_config_errors_are_one_line(opts, expected, capsys):
    code, err = _run_cli(["--config-file", TINY, *opts], capsys)
    assert code == 2
    assert len(err) == 1 and err[0].startswith("error: ") and expected in err[0]


def test_one_machine_picks_a_free_port_and_several_must_name_machine_0(capsys):
    # detectron2's default --dist-url is one fixed port per user: two jobs of one user on one
    # machine collided there (EADDRINUSE). One machine now lets launch() pick a free port.
    assert train_net._parser().parse_args(["--config-file", TINY]).dist_url == "auto"
    code, err = _run_cli(["--config-file", TINY, "--num-machines", "2"], capsys)
    assert code == 2 and len(err) == 1 and "--num-machines > 1 needs --dist-url" in err[0]


def _env(datasets):
    env = dict(os.environ, DETECTRON2_DATASETS=str(datasets))
    env.setdefault("OMP_NUM_THREADS", "2")
    return env


def test_cli_exit_code_for_a_bad_key(tmp_path):
    proc = subprocess.run(
        [sys.executable, TRAIN_NET, "--config-file", TINY, "SOLVER.MAX_ITR", "5"],
        capture_output=True,
        text=True,
        timeout=120,
        env=_env(tmp_path),
    )
    assert proc.returncode == 2
    err = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert err == [
        "error: command-line opts: unknown config key 'SOLVER.MAX_ITR' (did you mean "
        "'SOLVER.MAX_ITER'?); every key is defined in projects/BMP/bmp/config/keys.py or "
        "detectron2's defaults."
    ]


def _tagged_iteration(out) -> int:
    """Iteration of the checkpoint ``last_checkpoint`` names (-1 before the first one)."""
    match = re.fullmatch(r"model_(\d+)\.pth", _read_or_empty(out / "last_checkpoint"))
    return int(match.group(1)) if match else -1


def _read_or_empty(path) -> str:
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        return ""


@pytest.fixture(scope="module")
def killed_and_resumed(tmp_path_factory):
    """Train, SIGKILL after the checkpoint of iteration 3, resume to the end, then --eval-only."""
    base = tmp_path_factory.mktemp("resume")
    datasets = base / "datasets"
    ensure_synthetic_wsss(str(datasets / "synthetic_wsss"), num_train=8, num_val=4)
    out = base / "out"
    cmd = [sys.executable, TRAIN_NET, "--config-file", TINY]
    opts = [*FAST, "OUTPUT_DIR", str(out)]
    env = _env(datasets)

    first = subprocess.Popen(
        cmd + opts, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 240
    # Kill once the tag names a checkpoint of iteration 3 or later: the checkpoint file appears
    # a moment before its tag is written, and a kill in between would resume from iteration 1.
    while _tagged_iteration(out) < 3:
        assert first.poll() is None, "training ended before it could be killed"
        assert time.time() < deadline, "no checkpoint within 240 s"
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait()
    with open(out / "last_checkpoint") as f:
        killed_at = torch.load(out / f.read().strip(), weights_only=False)["iteration"]
    log_before = (out / "log.txt").read_text()

    resumed = subprocess.run(
        cmd + ["--resume"] + opts, env=env, capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    weights = out / "model_final.pth"
    evaluated = subprocess.run(
        [sys.executable, TRAIN_NET, "--config-file", TINY, "--eval-only", *FAST,
         "OUTPUT_DIR", str(out / "eval"), "MODEL.WEIGHTS", str(weights)],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    return {
        "out": out,
        "killed_at": killed_at,
        "log_resumed": (out / "log.txt").read_text()[len(log_before) :],
        "metrics": [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()],
    }


@pytest.mark.slow
def test_resume_continues_iteration_lr_and_phase(killed_and_resumed):
    r = killed_and_resumed
    assert r["killed_at"] >= 3
    start = r["killed_at"] + 1
    assert f"Starting training from iteration {start}" in r["log_resumed"]
    final = torch.load(r["out"] / "model_final.pth", weights_only=False)
    assert final["iteration"] == MAX_ITER - 1
    last = [m for m in r["metrics"] if "loss_cls" in m][-1]
    assert last["iteration"] == MAX_ITER - 1
    # The LR of the last step follows the schedule of the whole run, not a restarted one.
    expected = BASE_LR * build_warmup_poly_multiplier(MAX_ITER, WARMUP, 1e-6)(
        (MAX_ITER - 1) / MAX_ITER
    )
    assert last["lr/backbone"] == pytest.approx(expected, rel=1e-6)
    assert last["lr/decoder"] == pytest.approx(10 * expected, rel=1e-6)
    # Iteration 9 is past the c2s / s2c / aff warm-up (6): the pseudo-label phase followed.
    assert last["loss_c2s"] > 0 and last["loss_s2c"] != 0 and last["loss_aff"] > 0
    assert "bmp/pseudo_ignore_ratio" in last
    # The optimizer state came back too (AdamW moments for every parameter).
    n_params = sum(
        len(g["params"]) for g in final["trainer"]["_trainer"]["optimizer"]["param_groups"]
    )
    assert len(final["trainer"]["_trainer"]["optimizer"]["state"]) == n_params


@pytest.mark.slow
def test_eval_only_reproduces_the_final_logged_miou(killed_and_resumed):
    r = killed_and_resumed
    logged = [m for m in r["metrics"] if "sem_seg/mIoU" in m][-1]
    assert logged["iteration"] == MAX_ITER
    with open(r["out"] / "eval" / "eval_synthetic_wsss_val_sem_seg_eval_only.json") as f:
        again = json.load(f)
    assert again["sem_seg"]["mIoU"] == pytest.approx(logged["sem_seg/mIoU"], abs=1e-9)
    assert again["sem_seg"]["pACC"] == pytest.approx(logged["sem_seg/pACC"], abs=1e-9)
    table = (r["out"] / f"eval_synthetic_wsss_val_sem_seg_iter{MAX_ITER:07d}.md").read_text()
    assert re.search(r"\|\s*mIoU\s*\|", table)


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 1])
def test_a_data_error_ends_with_one_line(tmp_path, workers):
    datasets = tmp_path / "datasets"
    root = ensure_synthetic_wsss(str(datasets / "synthetic_wsss"), num_train=4, num_val=2)
    broken = sorted(glob.glob(os.path.join(root, "**", "*.jpg"), recursive=True))
    for path in broken:  # every image, whichever the sampler draws first
        with open(path, "wb") as f:
            f.write(b"not a jpeg")
    proc = subprocess.run(
        [sys.executable, TRAIN_NET, "--config-file", TINY, *FAST,
         "DATALOADER.NUM_WORKERS", str(workers), "OUTPUT_DIR", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300, env=_env(datasets),
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr[-3000:]
    err = proc.stderr.strip().splitlines()
    assert err[-1].startswith("error: Cannot read image file '"), err[-5:]
    assert any(path in err[-1] for path in broken)
    assert sum("error:" in line for line in err) == 1
    # The trainer logs the traceback once; it is not printed a second time on exit.
    assert (proc.stdout + proc.stderr).count("ValueError: Cannot read image file") == 1


def test_eval_only_refuses_weights_that_name_code(tmp_path, crafted_weights, capsys):
    files = crafted_weights({"unused.weight": torch.ones(1)})
    argv = ["--config-file", TINY, "--eval-only", "OUTPUT_DIR", str(tmp_path / "out"),
            "MODEL.WEIGHTS", str(files.pkl)]  # fmt: skip
    code, err = _run_cli(argv, capsys)
    errors = [line for line in err if line.startswith("error:")]  # not torch's CUDA warnings
    assert code == 1 and len(errors) == 1, err
    assert errors[0].startswith(f"error: {files.pkl}: refused to unpickle 'posix.mkdir'")
    assert "set MODEL.WEIGHTS_UNSAFE_UNPICKLE True" in errors[0]
    assert not files.marker.exists()
