"""The ablation's verdict: full BMP minus c2s-only, paired by seed, with a 95 % t-interval."""

import importlib
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture
def ablation(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # the benchmarks import their shared `runs`
    yield importlib.import_module("ablation")
    for name in ("ablation", "runs"):
        sys.modules.pop(name, None)


@pytest.mark.parametrize(
    "diffs, interval, verdict",
    [
        # mean 2, sd 0: the interval is the point
        ([2.0, 2.0, 2.0], "[+2.0, +2.0]", "full BMP beats c2s-only"),
        # mean -2, sd 1, n 3: half width 4.303 / sqrt(3) = 2.48
        ([-1.0, -2.0, -3.0], "[-4.5, +0.5]", "neither is shown to be better"),
        # mean -3, sd 0.707, n 5: half width 2.776 * 0.316 = 0.88
        ([-2.0, -3.0, -4.0, -3.0, -3.0], "[-3.9, -2.1]", "full BMP scores below c2s-only"),
    ],
)
def test_paired_verdict(ablation, diffs, interval, verdict):
    line = ablation.paired_verdict(diffs)
    assert f"95 % t-interval {interval}" in line and line.endswith(f"{verdict} on this benchmark")
    assert f"over {len(diffs)} seeds" in line
    assert f"{sum(d > 0 for d in diffs)} of {len(diffs)} higher" in line
