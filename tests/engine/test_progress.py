"""Phase-aware ETA (pure estimate + training hook) and the evaluation progress bar."""

import logging

import pytest
from detectron2.utils.events import EventStorage

from bmp.engine.phase_eta import (
    PhaseEstimate,
    estimate_remaining,
    format_eta,
    name_phases,
    phase_boundaries,
    phase_of,
)
from bmp.engine.progress_hook import PhaseETAHook, text_bar
from bmp.evaluation.progress import EvalProgressBar, local_shard_size


def test_boundaries_and_phase_lookup():
    assert phase_boundaries([800, 800, 1200, 5000, 0], 2000) == [0, 800, 1200]
    assert phase_of(0, [0, 800, 1200]) == 0
    assert phase_of(799, [0, 800, 1200]) == 0
    assert phase_of(800, [0, 800, 1200]) == 800
    assert phase_of(1999, [0, 800, 1200]) == 1200
    assert name_phases({"c2s": 800, "s2c": 800, "aff": 800, "bsp": 1200}) == {
        800: "c2s+s2c+aff",
        1200: "bsp",
    }


def test_the_make_demo_case_is_no_longer_underestimated():
    """800 warm-up iterations at 0.12 s, then 139 at 0.45 s: 1061 left cost 0.45 s each."""
    times = {0: [0.12] * 20, 800: [0.45] * 20}
    est = estimate_remaining(times, done=939, max_iter=2000, boundaries=[0, 800])
    assert est.seconds == pytest.approx(1061 * 0.45)
    assert not est.lower_bound
    # What a running median over all 939 iterations says (detectron2's printer): 0.12 s/it.
    assert 1061 * 0.12 < est.seconds / 3


def test_untimed_future_phase_makes_a_lower_bound():
    est = estimate_remaining({0: [0.1, 0.3, 0.2]}, done=500, max_iter=2000, boundaries=[0, 800])
    # 300 warm-up iterations at the median 0.2 s, plus 1200 costed at least as much.
    assert est.seconds == pytest.approx(1500 * 0.2)
    assert est.lower_bound and est.untimed == [800]
    assert format_eta(est) == ">= 0:05:00 (iters from 800 not timed yet)"
    assert format_eta(PhaseEstimate(3725.4, False)) == "1:02:05"


def test_finished_phases_cost_nothing_and_nothing_timed_is_zero():
    times = {0: [9.0], 800: [0.5]}
    assert estimate_remaining(times, 1990, 2000, [0, 800]).seconds == pytest.approx(5.0)
    assert estimate_remaining(times, 2000, 2000, [0, 800]).seconds == 0.0
    est = estimate_remaining({}, 0, 100, [0])
    assert est.seconds == 0.0 and est.lower_bound


class _FakeTrainer:
    def __init__(self):
        self.iter = 0
        self.storage = EventStorage(0)


def test_hook_retimes_at_phase_start_and_logs(caplog, monkeypatch):
    clock = {"t": 0.0}
    monkeypatch.setattr("bmp.engine.progress_hook.time.perf_counter", lambda: clock["t"])
    hook = PhaseETAHook(max_iter=40, phases={10: "c2s"}, period=5, window=4)
    hook.trainer = _FakeTrainer()
    with caplog.at_level(logging.INFO, logger="bmp.engine.progress_hook"):
        for it in range(20):
            hook.trainer.iter = hook.trainer.storage.iter = it
            hook.before_step()
            clock["t"] += 0.25 if it < 10 else 1.0
            hook.after_step()
    lines = [r.getMessage() for r in caplog.records]
    assert any("phase 'c2s' starts at iteration 10" in m for m in lines)
    at5 = next(m for m in lines if " 5/40" in m)
    assert "phase 'warm-up' from 0: 0.250 s/it" in at5 and "eta >= 0:00:09" in at5
    at20 = next(m for m in lines if " 20/40" in m)
    assert "phase 'c2s' from 10: 1.000 s/it" in at20 and "eta 0:00:20" in at20
    assert text_bar(0.5) in at20
    assert hook.trainer.storage.latest()["bmp/eta_seconds"][0] == pytest.approx(20.0)


def test_text_bar():
    assert text_bar(0.0, 4) == "[----]"
    assert text_bar(0.5, 4) == "[##--]"
    assert text_bar(2.0, 4) == "[####]"


def test_hook_rejects_bad_period():
    with pytest.raises(ValueError, match="period"):
        PhaseETAHook(10, {}, period=0)


def test_eval_progress_bar_counts_and_reports_nothing():
    assert [local_shard_size(10, 3, r) for r in range(3)] == [4, 3, 3]
    bar = EvalProgressBar("some_split", 10, force=False)
    bar.reset()
    bar.process([{}, {}], [{}, {}])
    bar.process([{}], [{}])
    assert bar.count == 3
    assert bar.evaluate() == {}
    bar.reset()
    assert bar.count == 0


def test_trainer_phases_follow_the_config(tmp_path):
    from bmp.config import load_config
    from bmp.engine.progress_hook import training_phases

    cfg = load_config("configs/synthetic/bmp_mit_tiny.yaml", [])
    bmp = cfg.MODEL.BMP
    phases = training_phases(cfg)
    assert phases[bmp.BSP.START_ITER].endswith("bsp")
    assert "c2s" in phases[bmp.C2S.START_ITER]
    off = load_config("configs/synthetic/bmp_mit_tiny.yaml", ["MODEL.BMP.BSP.ENABLED", "False"])
    assert all("bsp" not in name for name in training_phases(off).values())
