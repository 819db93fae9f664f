"""The benchmark run grid: a run known from its committed record is reused, not retrained."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def runs():
    spec = importlib.util.spec_from_file_location("bench_runs", REPO / "benchmarks" / "runs.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def _record(path: Path, evals: dict) -> None:
    record = {"variant": "c2s", "seed": 3, "command": "python train_net.py ..."}
    record.update(commit="abc1234", minutes=12.5, evals=evals)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(record))


def test_records_live_beside_the_run_folders(runs, tmp_path):
    assert runs.records_dir(tmp_path / "ablation_runs") == tmp_path / "ablation_records"


def test_a_recorded_run_is_reused_without_training(runs, tmp_path, monkeypatch):
    variant = runs.Variant("c2s", "2. + c2s", "configs/ablation/c2s.yaml")
    evals = {"val": {"sem_seg": {"mIoU": 16.7}}, "train": {"sem_seg": {"mIoU": 17.0}}}
    _record(tmp_path / "ablation_records" / "c2s_seed3.json", evals)

    def never(*args, **kwargs):
        raise AssertionError("a recorded run was trained again")

    monkeypatch.setattr(runs, "train_and_evaluate", never)
    (run,) = runs.run_grid([(variant, 3)], tmp_path / "ablation_runs", ("val", "train"), jobs=1)
    assert run.evals == evals
    assert (run.commit, run.minutes, run.has_folder) == ("abc1234", 12.5, False)


def test_a_record_missing_a_dataset_is_not_used(runs, tmp_path, monkeypatch):
    variant = runs.Variant("c2s", "2. + c2s", "configs/ablation/c2s.yaml")
    _record(tmp_path / "ablation_records" / "c2s_seed3.json", {"val": {}})
    trained = []

    def fake_training(config, out_dir, datasets, opts, threads, label):
        trained.append(out_dir.name)
        out_dir.mkdir(parents=True)
        return {d: {"sem_seg": {"mIoU": 1.0}} for d in datasets}

    monkeypatch.setattr(runs, "train_and_evaluate", fake_training)
    (run,) = runs.run_grid([(variant, 3)], tmp_path / "ablation_runs", ("val", "train"), jobs=1)
    assert trained == ["c2s_seed3"]
    record = json.loads((tmp_path / "ablation_records" / "c2s_seed3.json").read_text())
    assert record["evals"] == {
        "val": {"sem_seg": {"mIoU": 1.0}},
        "train": {"sem_seg": {"mIoU": 1.0}},
    }
    assert record["seed"] == 3 and record["config"] == "configs/ablation/c2s.yaml"


def test_report_only_trains_nothing(runs, tmp_path, monkeypatch):
    variant = runs.Variant("c2s", "2. + c2s", "configs/ablation/c2s.yaml")
    evals = {"val": {"sem_seg": {"mIoU": 16.7}}}
    _record(tmp_path / "ablation_records" / "c2s_seed3.json", evals)

    def never(*args, **kwargs):
        raise AssertionError("a report-only grid trained a run")

    monkeypatch.setattr(runs, "train_and_evaluate", never)
    grid = [(variant, 3), (variant, 4)]
    done = runs.run_grid(grid, tmp_path / "ablation_runs", ("val",), jobs=1, train=False)
    assert [(r.seed, r.evals) for r in done] == [(3, evals)]


def test_ladder_line_gives_each_step_on_the_seeds_every_variant_ran(runs):
    def variant(label, by_seed):
        return {"label": label, "seeds": list(by_seed), "values": {"cam": list(by_seed.values())}}

    variants = {
        "c2s": variant("c2s", {0: 20.0, 1: 22.0, 2: 90.0}),
        "s2c": variant("+ s2c", {0: 21.0, 1: 25.0}),  # seed 2 missing: it drops out of all
        "full": variant("+ BSP", {0: 19.0, 1: 24.0}),
    }
    line = runs.ladder_line(variants, ["c2s", "s2c", "full"], "cam", "CAM seed")
    assert line == "CAM seed (seeds 0,1): c2s 21.0 → + s2c 23.0 (+2.0) → + BSP 21.5 (-1.5)"
    # "inter" did not run: "full" is not one step above "s2c", so the ladder stops there.
    line = runs.ladder_line(variants, ["c2s", "s2c", "inter", "full"], "cam", "CAM seed")
    assert line == "CAM seed (seeds 0,1): c2s 21.0 → + s2c 23.0 (+2.0)"
    assert runs.ladder_line({"c2s": variants["c2s"]}, ["c2s", "s2c"], "cam", "x") is None
    apart = {"c2s": variant("c2s", {0: 1.0}), "s2c": variant("+ s2c", {1: 2.0})}
    assert runs.ladder_line(apart, ["c2s", "s2c"], "cam", "x") is None  # no seed in common
    nan = {"c2s": variants["c2s"], "s2c": variant("+ s2c", {0: float("nan")})}
    assert runs.ladder_line(nan, ["c2s", "s2c"], "cam", "x") is None


def test_paired_line_compares_a_tagged_variant_with_its_plain_runs_seed_by_seed(runs):
    def variant(by_seed):
        return {"seeds": list(by_seed), "values": {"seg": list(by_seed.values())}}

    tagged = variant({0: 20.0, 1: 18.0, 3: 50.0})  # seed 3 has no plain run: left out
    plain = variant({0: 19.0, 1: 19.0, 2: 5.0})
    line = runs.paired_line(tagged, plain, "seg", "gate, seg")
    assert line == "gate, seg (seeds 0,1): 19.0 against 19.0 (+0.0; per seed +1.0 / -1.0)"
    assert runs.paired_line(variant({3: 1.0}), plain, "seg", "x") is None
    assert runs.paired_line(variant({0: float("nan")}), plain, "seg", "x") is None


def test_last_logged_gives_the_last_iteration_each_scalar_was_written(runs, tmp_path):
    lines = [
        {"iteration": 19, "gate": 0.1, "loss": 1.0},
        {"iteration": 39, "gate": 0.2, "loss": 0.9},
        {"iteration": 47, "gate": 0.3},  # the writer flushes the scalar's own last iteration
        {"iteration": 59, "loss": 0.8},
    ]
    (tmp_path / "metrics.json").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    found = runs.last_logged(tmp_path, ["gate", "loss", "never"])
    assert found == {"gate": 47, "loss": 59}
    assert runs.last_logged(tmp_path / "missing", ["gate"]) == {}


def test_a_record_keeps_the_tracked_scalars_last_iterations(runs, tmp_path, monkeypatch):
    variant = runs.Variant("s2c", "3. + s2c", "configs/ablation/s2c.yaml")
    name = next(iter(runs.TRACKED_SCALARS))

    def fake_training(config, out_dir, datasets, opts, threads, label):
        out_dir.mkdir(parents=True)
        (out_dir / "metrics.json").write_text(json.dumps({"iteration": 1053, name: 0.26}) + "\n")
        return {d: {"sem_seg": {"mIoU": 1.0}} for d in datasets}

    monkeypatch.setattr(runs, "train_and_evaluate", fake_training)
    root = tmp_path / "ablation_runs"
    (run,) = runs.run_grid([(variant, 1)], root, ("val",), jobs=1, tag="gate")
    assert run.last_logged == {name: 1053}
    record = json.loads((tmp_path / "ablation_records" / "s2c_gate_seed1.json").read_text())
    assert record["last_logged"] == {name: 1053}


def test_recorded_minutes_gives_the_range_of_what_each_run_took(runs, tmp_path):
    variant = runs.Variant("c2s", "2. + c2s", "configs/ablation/c2s.yaml")

    def run(minutes):
        return runs.Run(variant, 0, tmp_path, "cmd", {}, minutes=minutes)

    line = runs.recorded_minutes([run(15.2), run(46.8), run(22.0)], 2)
    assert line == "3 runs of 15-47 min each as recorded, 2 at a time"
    assert runs.recorded_minutes([run(9.6)], 1) == "1 run of 10 min each as recorded, 1 at a time"
    line = runs.recorded_minutes([run(0.0), run(45.4), run(46.8)], 2)
    assert line == "3 runs of 45-47 min each as recorded (1 without a recorded time), 2 at a time"
    assert runs.recorded_minutes([run(0.0)], 2) == "1 run (1 without a recorded time), 2 at a time"
