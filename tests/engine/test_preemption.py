"""Preemption and multi-machine launches through train_net.py, as a cluster runs them.

A signal (SIGTERM here, as SLURM sends) costs at most the step in progress: the run writes a
checkpoint there, exits with SOLVER.PREEMPTION.EXIT_CODE, and ``--resume`` ends with exactly the
weights of an uninterrupted run. Two "machines" on this host agree with one machine of two
processes.
"""

import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bmp.data.synthetic import ensure_synthetic_wsss

ROOT = Path(__file__).resolve().parents[2]
TRAIN_NET = str(ROOT / "train_net.py")
TINY = str(ROOT / "configs" / "synthetic" / "bmp_mit_tiny.yaml")
EXIT_PREEMPTED = 75
OPTS = [
    "SEED", "0", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.WARMUP_ITERS", "2",
    "SOLVER.CHECKPOINT_PERIOD", "1000", "INPUT.CROP.SIZE", "[64,64]",
    "MODEL.BMP.PSEUDO.SCALES", "[1.0]", "MODEL.BMP.C2S.START_ITER", "4",
    "MODEL.BMP.S2C.START_ITER", "4", "MODEL.BMP.AFFINITY.START_ITER", "4",
    "MODEL.BMP.BSP.START_ITER", "6", "MODEL.SEM_SEG_HEAD.DROPOUT", "0.5",
    "TEST.EVAL_PERIOD", "0", "DATASETS.TEST", "()",
]  # fmt: skip


@pytest.fixture
def datasets(tmp_path):
    root = tmp_path / "datasets"
    ensure_synthetic_wsss(str(root / "synthetic_wsss"), num_train=8, num_val=2)
    return root


def _cmd(out, max_iter, *extra, flags=()):
    return [sys.executable, TRAIN_NET, *flags, "--config-file", TINY, *OPTS,
            "SOLVER.MAX_ITER", str(max_iter), "OUTPUT_DIR", str(out), *extra]  # fmt: skip


def _env(datasets):
    return dict(os.environ, DETECTRON2_DATASETS=str(datasets), OMP_NUM_THREADS="1")


def _run(cmd, datasets, timeout=600):
    proc = subprocess.run(cmd, env=_env(datasets), capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _weights(out):
    return torch.load(out / "model_final.pth", map_location="cpu", weights_only=True)["model"]


def _assert_same_weights(a, b):
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    differ = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert differ == [], f"{len(differ)} tensors differ, e.g. {differ[:3]}"


def _wait_for_training(out, proc, timeout=300):
    """Until the main process logs its first iterations (the signal then lands mid-run)."""
    log = out / "log.txt"
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before the signal: {proc.returncode}")
        if log.is_file() and "Starting training from iteration" in log.read_text():
            return
        time.sleep(0.2)
    raise AssertionError("training did not start")


def _preempt(cmd, out, datasets, send):
    """Start ``cmd``, let it train a moment, ``send(proc)`` the signal, wait for it to stop."""
    proc = subprocess.Popen(cmd, env=_env(datasets), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip
    _wait_for_training(out, proc)
    time.sleep(random.uniform(0.5, 3.0))
    send(proc)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == EXIT_PREEMPTED, stderr[-3000:]
    stopped = re.findall(r"preempted at iteration (\d+): resume with --resume", stdout + stderr)
    assert stopped, stderr[-3000:]
    it = int(stopped[-1])
    assert (out / f"model_{it:07d}.pth").is_file()
    assert (out / "last_checkpoint").read_text().strip() == f"model_{it:07d}.pth"
    assert not (out / "model_final.pth").exists()
    return it


def _to_whole_group(sig):
    """As a cluster does: every process of the job (data loader workers included)."""
    return lambda proc: os.killpg(proc.pid, sig)


@pytest.mark.slow
def test_a_signal_costs_at_most_the_step_in_progress_and_resume_is_exact(datasets, tmp_path):
    max_iter = 300
    straight = tmp_path / "straight"
    _run(_cmd(straight, max_iter, "DATALOADER.NUM_WORKERS", "1"), datasets)
    out = tmp_path / "preempted"
    cmd = _cmd(out, max_iter, "DATALOADER.NUM_WORKERS", "1")
    it = _preempt(cmd, out, datasets, _to_whole_group(signal.SIGTERM))
    assert 0 <= it < max_iter - 1
    resumed = _run(_cmd(out, max_iter, "DATALOADER.NUM_WORKERS", "1", flags=["--resume"]), datasets)
    assert f"Starting training from iteration {it + 1}" in resumed.stdout + resumed.stderr
    _assert_same_weights(straight, out)


def _children(pid):
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(c) for c in f.read().split()]


@pytest.mark.slow
def test_two_processes_stop_together_when_one_gets_the_signal(datasets, tmp_path):
    max_iter = 120
    straight = tmp_path / "straight"
    _run(_cmd(straight, max_iter, flags=["--num-gpus", "2"]), datasets)
    out = tmp_path / "preempted"

    def to_one_rank(proc):
        ranks = [c for c in _children(proc.pid) if "resource_tracker" not in _cmdline(c)]
        os.kill(ranks[-1], signal.SIGUSR1)  # one rank only: the other learns it in the exchange

    it = _preempt(_cmd(out, max_iter, flags=["--num-gpus", "2"]), out, datasets, to_one_rank)
    assert 0 <= it < max_iter - 1
    _run(_cmd(out, max_iter, flags=["--num-gpus", "2", "--resume"]), datasets)
    _assert_same_weights(straight, out)


def _cmdline(pid):
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read().replace(b"\0", b" ").decode()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_machines_on_one_host_agree_with_one_machine(datasets, tmp_path):
    evaluate = ["DATASETS.TEST", "('synthetic_wsss_val_sem_seg',)", "TEST.EVAL_PERIOD", "12"]
    one = tmp_path / "one_machine"
    _run(_cmd(one, 12, *evaluate, flags=["--num-gpus", "2"]), datasets)
    url = f"tcp://127.0.0.1:{_free_port()}"
    outs = [tmp_path / "machine0", tmp_path / "machine1"]

    def machine(r):
        flags = ["--num-machines", "2", "--machine-rank", str(r), "--dist-url", url]
        flags += ["--dist-timeout", "120"]
        return subprocess.Popen(
            _cmd(outs[r], 12, *evaluate, flags=flags), env=_env(datasets),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip

    procs = [machine(0), machine(1)]
    results = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results[1][1][-3000:]
    _assert_same_weights(one, outs[0])
    # Only global rank 0 writes checkpoints and reports.
    assert not list(outs[1].glob("*.pth")) and not (outs[1] / "metrics.json").exists()
    miou = re.compile(r"\|\s*mIoU\s*\|\s*([\d.]+)")
    reports = [(o / "log.txt").read_text() for o in (one, outs[0])]
    assert miou.findall(reports[0]) and miou.findall(reports[0]) == miou.findall(reports[1])


def test_a_machine_that_never_joins_is_one_line_within_the_timeout(datasets, tmp_path):
    url = f"tcp://127.0.0.1:{_free_port()}"  # nobody listens: machine 0 never started
    start = time.time()
    flags = ["--num-machines", "2", "--machine-rank", "1", "--dist-url", url]
    flags += ["--dist-timeout", "5"]
    proc = subprocess.run(
        _cmd(tmp_path / "out", 4, flags=flags), env=_env(datasets), capture_output=True,
        text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 1
    err = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and "did not all join at " + url in err[0], proc.stderr[-2000:]
    assert time.time() - start < 120
