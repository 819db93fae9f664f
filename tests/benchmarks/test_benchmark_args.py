"""Benchmark command lines: a run with overrides is never reported under a plain run's name."""

import importlib
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(params=["ablation", "real_coco_mini"])
def bench(request, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # the benchmarks import their shared `runs`
    module = importlib.import_module(request.param)
    yield module
    for name in (request.param, "runs"):
        sys.modules.pop(name, None)


def test_overrides_without_a_tag_are_refused(bench, capsys):
    with pytest.raises(SystemExit):
        bench.parse_args(
            ["--variants", "s2c", "--jobs", "2", "MODEL.BMP.S2C.GATE_AGREEMENT", "0.25"]
        )
    assert "overrides need a --tag" in capsys.readouterr().err


def test_a_tag_without_overrides_is_refused(bench):
    with pytest.raises(SystemExit):
        bench.parse_args(["--variants", "s2c", "--tag", "gate"])


def test_a_tagged_run_keeps_its_tag_and_overrides(bench):
    argv = ["--variants", "s2c", "--seeds", "0", "--tag", "gate"]
    args = bench.parse_args(argv + ["MODEL.BMP.S2C.GATE_AGREEMENT", "0.25"])
    assert (args.tag, args.opts, args.variants) == (
        "gate",
        ["MODEL.BMP.S2C.GATE_AGREEMENT", "0.25"],
        ["s2c"],
    )
