"""The run grid and report shared by the quality benchmarks (ablation, coco_mini).

A benchmark is a list of variants, each a config file, crossed with seeds. Every run is
``train_net.py`` in its own output folder, several at a time, each in its own process. A folder
that already holds ``model_final.pth`` and the final evaluation of every requested dataset is
reused, so a benchmark that was interrupted continues where it stopped.

Run folders hold checkpoints and are not committed. What a finished run measured is also written
to a small *record*, ``<name>_records/<run>.json`` beside ``<name>_runs/`` (its evaluations, the
command, the commit it was trained at and its minutes), which is committed. A run with a record
and no folder is not trained again: a grid larger than one working session is measured over
several, and its report always covers every run measured so far. Delete a record to measure
that run again. The report is one markdown table (mean ± std over seeds) and a JSON file beside
it that records, for every run, its numbers, commit and the exact command that reproduces it.
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from statistics import mean, stdev
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
NAN = float("nan")
COMMAND_FILE = "command.txt"  # in each run folder: the command that trained it
COMMIT_FILE = "commit.txt"  # in each run folder: the commit of the code that trained it
# Scalars a run logs on every iteration until something happens, and what that is; the record
# keeps the last iteration each was logged at. The s2c gate logs its agreement until it opens.
TRACKED_SCALARS = {"bmp/s2c_gate_agreement_smoothed": "the s2c gate opened"}

__all__ = [
    "REPO",
    "RESULTS",
    "Variant",
    "Column",
    "Run",
    "final_eval",
    "train_command",
    "train_and_evaluate",
    "skip_reason",
    "seed_columns",
    "quick_overrides",
    "run_grid",
    "column_values",
    "results_table",
    "write_report",
    "mean_std",
    "ladder_line",
    "paired_line",
    "paired_columns",
    "against_plain",
    "tracked_lines",
    "last_logged",
    "TRACKED_SCALARS",
    "run_minutes",
    "recorded_minutes",
    "records_dir",
    "code_commit",
]


@dataclass(frozen=True)
class Variant:
    """One row of a benchmark: a config file (relative to the repository) and its label."""

    key: str
    label: str
    config: str


@dataclass(frozen=True)
class Column:
    """One metric of the table: ``results[dataset][task][metric]`` of a run's final evaluation.

    ``needs_seg`` marks metrics of the segmentation branch: n/a for a variant that never
    trains it (its decoder output is not a result).
    """

    key: str
    header: str
    dataset: str
    task: str
    metric: str = "mIoU"
    needs_seg: bool = False


@dataclass
class Run:
    """A finished run: its variant, seed, folder (absent for a run known from its record only),
    command, final evaluations per dataset, the commit it was trained at, its minutes and the
    last iteration each of the :data:`TRACKED_SCALARS` it logged was logged at."""

    variant: Variant
    seed: int
    out_dir: Path
    command: str
    evals: dict[str, dict[str, Any]]
    commit: str = "unknown"
    minutes: float = 0.0
    last_logged: dict[str, int] = field(default_factory=dict)

    @property
    def has_folder(self) -> bool:
        """Whether the checkpoint is here (panels and per-class tables need it)."""
        return (self.out_dir / "model_final.pth").is_file()


def final_eval(out_dir: Path, dataset: str) -> dict[str, Any] | None:
    """The last evaluation of ``dataset`` a finished run wrote, or None."""
    files = sorted(Path(out_dir).glob(f"eval_{dataset}_iter*.json"))
    if not files or not (Path(out_dir) / "model_final.pth").exists():
        return None
    return json.loads(files[-1].read_text())


def train_command(config: Path, out_dir: Path, opts: Sequence[str]) -> list[str]:
    """``train_net.py`` with the config, the overrides and the output folder."""
    cmd = [sys.executable, str(REPO / "train_net.py"), "--config-file", str(config)]
    return cmd + list(opts) + ["OUTPUT_DIR", str(out_dir)]


def _relative(path: str | Path) -> str:
    """``path`` relative to the repository root when it lies inside it (as a reader pastes it);
    any other word unchanged."""
    path = str(path)
    return os.path.relpath(path, REPO) if path.startswith(str(REPO)) else path


def _shell_line(cmd: Sequence[str], threads: int) -> str:
    """``cmd`` as one shell line to paste in the repository root, with its thread count."""
    words = ["python"] + [_relative(w) for w in cmd[1:]]
    return f"OMP_NUM_THREADS={threads} " + " ".join(shlex.quote(w) for w in words)


def train_and_evaluate(
    config: Path,
    out_dir: Path,
    datasets: Sequence[str],
    opts: list[str],
    threads: int,
    label: str,
) -> dict[str, dict[str, Any]]:
    """Train (unless finished already) and return ``{dataset: final evaluation results}``."""
    results = {d: final_eval(out_dir, d) for d in datasets}
    if any(r is None for r in results.values()):
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        out_dir.mkdir(parents=True, exist_ok=True)
        cmd = train_command(config, out_dir, opts)
        (out_dir / COMMAND_FILE).write_text(_shell_line(cmd, threads) + "\n")
        (out_dir / COMMIT_FILE).write_text(code_commit() + "\n")
        start = time.perf_counter()
        with open(out_dir / "stdout.log", "w") as log:
            proc = subprocess.run(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=REPO,
            )
        if proc.returncode != 0:
            raise RuntimeError(f"{label} failed (exit {proc.returncode}); see {out_dir}/stdout.log")
        minutes = (time.perf_counter() - start) / 60
        print(f"  {label}: trained and evaluated in {minutes:.1f} min", flush=True)
        results = {d: final_eval(out_dir, d) for d in datasets}
        missing = [d for d, r in results.items() if r is None]
        if missing:
            raise RuntimeError(f"{label} finished without evaluating {missing}: {out_dir}")
    return results  # type: ignore[return-value]


# The task name of a column that reads, for each variant, the seed it trains its segmentation
# branch with (CAM, PAR or BSP), as its config says.
TRAINING_SEED = "training_seed"


def _load(variant: Variant):
    from bmp.config import load_config

    return load_config(str(REPO / variant.config))


def skip_reason(variant: Variant) -> str | None:
    """Why a variant cannot run here (no config file, or a meta-architecture not registered yet),
    or None. Lets a benchmark list a row whose config or model is still to come."""
    if not (REPO / variant.config).is_file():
        return f"{variant.config} does not exist yet"
    import bmp  # noqa: F401  (first: it imports detectron2 quietly and registers BMP's models)

    # isort: split
    from detectron2.modeling import META_ARCH_REGISTRY

    try:
        arch = _load(variant).MODEL.META_ARCHITECTURE
    except ValueError as e:  # ConfigError: e.g. keys of a model that is not in this checkout
        return f"{variant.config} does not load: {e}"
    if arch not in META_ARCH_REGISTRY:
        return f"meta-architecture {arch!r} of {variant.config} is not registered"
    return None


def variant_facts(variant: Variant) -> dict[str, Any]:
    """What the config says about a variant's results: whether it trains the segmentation
    branch (BMP only does with c2s on) and which seed that branch learns from."""
    cfg = _load(variant)
    if cfg.MODEL.META_ARCHITECTURE != "BMP":
        return {"trains_seg": True, "training_seed": None}
    bmp = cfg.MODEL.BMP
    seed = ("bsp" if bmp.BSP.ENABLED else "par") if bmp.C2S.ENABLED else "cam"
    return {"trains_seg": bool(bmp.C2S.ENABLED), "training_seed": seed}


def seed_columns(dataset: str) -> list[Column]:
    """CAM / PAR / BSP seed mIoU on ``dataset``, then the share of pixels each leaves uncertain
    (the SeedEvaluator's ``ignore_ratio``)."""
    kinds = ("cam", "par", "bsp")
    columns = [Column(f"seed_{k}", f"{k.upper()} seed", dataset, f"seed_{k}") for k in kinds]
    return columns + [
        Column(f"ignored_{k}", f"{k.upper()} ignored %", dataset, f"seed_{k}", "ignore_ratio")
        for k in kinds
    ]


def paired_columns(columns: Sequence[Column], keys: Sequence[str]) -> list[tuple[str, str]]:
    """``(key, title)`` of the columns ``keys`` names, in that order, for the lines comparing a
    tagged variant with its plain runs; the title says the split where the header does not."""
    by_key = {c.key: c for c in columns}
    out = []
    for key in keys:
        c = by_key[key]
        split = "train" if "train" in c.dataset else "val"
        out.append((key, c.header if "(" in c.header else f"{c.header} ({split})"))
    return out


def quick_overrides(iters: int, crop: int) -> list[str]:
    """Overrides that run a benchmark's whole pipeline (every warm-up, BSP, the evaluation) in
    ``iters`` iterations: a check that it works, not a result."""
    start, bsp = str(max(1, iters // 4)), str(max(2, iters // 2))
    return [
        "SOLVER.MAX_ITER", str(iters), "SOLVER.IMS_PER_BATCH", "2", "SOLVER.WARMUP_ITERS", "2",
        "INPUT.CROP.SIZE", f"[{crop},{crop}]", "MODEL.BMP.C2S.START_ITER", start,
        "MODEL.BMP.S2C.START_ITER", start, "MODEL.BMP.AFFINITY.START_ITER", start,
        "MODEL.BMP.BSP.START_ITER", bsp, "TEST.EVAL_PERIOD", str(iters),
        "SOLVER.CHECKPOINT_PERIOD", "100000",
    ]  # fmt: skip


def run_dir(run_root: Path, key: str, seed: int, tag: str = "") -> Path:
    return run_root / (f"{key}_{tag}_seed{seed}" if tag else f"{key}_seed{seed}")


def records_dir(run_root: Path) -> Path:
    """Where the committed records of the runs under ``run_root`` live:
    ``ablation_runs`` → ``ablation_records``, beside it."""
    return run_root.with_name(run_root.name.removesuffix("_runs") + "_records")


def code_commit() -> str:
    """The commit the code here is at, ``+dirty`` when the model, configs or entry point have
    uncommitted changes (a run trained then is not exactly that commit)."""

    def git(*args: str) -> str:
        proc = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True)
        return proc.stdout.strip() if proc.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--", "projects", "configs", "train_net.py")
    return commit + ("+dirty" if dirty else "")


def _read_record(path: Path, datasets: Sequence[str]) -> dict[str, Any] | None:
    """A run's record, or None when there is none or it lacks a requested dataset."""
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    return record if all(d in record["evals"] for d in datasets) else None


def _write_record(path: Path, run: Run) -> None:
    record = {
        "variant": run.variant.key,
        "config": run.variant.config,
        "seed": run.seed,
        "command": run.command,
        "commit": run.commit,
        "minutes": round(run.minutes, 1),
        "last_logged": run.last_logged,
        "evals": run.evals,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1, default=float) + "\n")


def run_grid(
    grid: Sequence[tuple[Variant, int]],
    run_root: Path,
    datasets: Sequence[str],
    opts: Sequence[str] = (),
    jobs: int = 2,
    tag: str = "",
    train: bool = True,
) -> list[Run]:
    """Train and evaluate every (variant, seed) ``jobs`` at a time; finished runs are reused.

    Variants with a :func:`skip_reason` are left out with one message each. ``opts`` are extra
    overrides for every run; ``tag`` keeps such runs apart from the plain ones. With ``train``
    False nothing is trained: the runs measured so far (folders or records) are returned and
    each missing one is named.
    """
    skipped = {v.key: skip_reason(v) for v, _ in grid}
    for v in {v for v, _ in grid if skipped[v.key]}:
        print(f"skipping '{v.label}': {skipped[v.key]}", flush=True)
    todo = [(v, s) for v, s in grid if not skipped[v.key]]
    threads = max(1, (os.cpu_count() or 2) // jobs)
    print(f"{len(todo)} runs, {jobs} at a time with {threads} thread(s) each", flush=True)

    def one(variant: Variant, seed: int) -> Run | None:
        out = run_dir(run_root, variant.key, seed, tag)
        record_file = records_dir(run_root) / f"{out.name}.json"
        record = _read_record(record_file, datasets)
        if record is not None and any(final_eval(out, d) is None for d in datasets):
            print(f"  {variant.label} seed {seed}: from its record ({record['commit']})")
            evals = {d: record["evals"][d] for d in datasets}
            return Run(
                variant, seed, out, record["command"], evals, record["commit"], record["minutes"],
                record.get("last_logged", {}),
            )  # fmt: skip
        label = f"{variant.label} seed {seed}"
        if not train and any(final_eval(out, d) is None for d in datasets):
            print(f"  {label}: not measured yet")
            return None
        run_opts = ["SEED", str(seed)] + list(opts)
        config = REPO / variant.config
        evals = train_and_evaluate(config, out, datasets, run_opts, threads, label)
        # The command and commit as the run was trained (not necessarily this call's).
        command = _read_line(out / COMMAND_FILE)
        command = command or _shell_line(train_command(config, out, run_opts), threads)
        commit = _read_line(out / COMMIT_FILE) or "unknown"
        logged = last_logged(out, TRACKED_SCALARS)
        run = Run(variant, seed, out, command, evals, commit, run_minutes(out), logged)
        _write_record(record_file, run)
        return run

    with ThreadPoolExecutor(jobs) as pool:
        futures = [pool.submit(one, v, s) for v, s in todo]
        return [run for run in (f.result() for f in futures) if run is not None]


def _read_line(path: Path) -> str | None:
    return path.read_text().strip() or None if path.is_file() else None


def column_values(runs: Sequence[Run], column: Column, facts: dict[str, Any]) -> list[float]:
    """A column's value for each run of one variant; NaN where the run has no such result."""
    if column.needs_seg and not facts["trains_seg"]:
        return [NAN] * len(runs)
    task = column.task
    if task == TRAINING_SEED:
        if facts["training_seed"] is None:
            return [NAN] * len(runs)
        task = f"seed_{facts['training_seed']}"
    return [r.evals[column.dataset].get(task, {}).get(column.metric, NAN) for r in runs]


def results_table(
    variants: Sequence[Variant],
    runs: Sequence[Run],
    columns: Sequence[Column],
    baselines: Sequence[tuple[str, dict[str, float]]] = (),
) -> tuple[str, dict[str, Any]]:
    """The markdown table (one row per baseline, then per variant that ran) and its JSON.

    Baselines are rows measured without training (e.g. all background): ``{column key: value}``.
    Variants that did not run are listed under the table with the reason. The last column names
    the commits of the code each row's runs were trained at.
    """
    header = ["variant", "seeds"] + [c.header for c in columns] + ["code"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    summary: dict[str, Any] = {"baselines": dict(baselines), "variants": {}, "not_run": {}}
    for label, values in baselines:
        cells = [f"{values[c.key]:.1f}" if c.key in values else "-" for c in columns]
        lines.append(f"| {label} | - | " + " | ".join(cells) + " | - |")
    for v in variants:
        mine = sorted((r for r in runs if r.variant.key == v.key), key=lambda r: r.seed)
        if not mine:
            summary["not_run"][v.key] = skip_reason(v) or "no run measured yet"
            continue
        facts = variant_facts(v)
        values = {c.key: column_values(mine, c, facts) for c in columns}
        seeds = [r.seed for r in mine]
        cells = [mean_std(values[c.key]) for c in columns]
        code = ", ".join(dict.fromkeys(r.commit for r in mine))
        lines.append(
            f"| {v.label} | {','.join(map(str, seeds))} | " + " | ".join(cells) + f" | {code} |"
        )
        summary["variants"][v.key] = {
            "label": v.label,
            "config": v.config,
            "seeds": seeds,
            "values": values,
            "mean_std": dict(zip((c.key for c in columns), cells)),
            "runs": [
                {
                    "seed": r.seed,
                    "dir": _relative(r.out_dir),
                    "commit": r.commit,
                    "minutes": round(r.minutes, 1),
                    "command": r.command,
                }
                for r in mine
            ],
        }
    notes = [f"* not run: {k}: {why}" for k, why in summary["not_run"].items()]
    return "\n".join(lines + ([""] + notes if notes else [])), summary


def write_report(out: Path, stem: str, markdown: str, payload: dict[str, Any]) -> None:
    """``<out>/<stem>.md`` and, beside it, ``<stem>.json``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.md").write_text(markdown)
    (out / f"{stem}.json").write_text(json.dumps(payload, indent=2, default=float))


def mean_std(values: Sequence[float]) -> str:
    """``"m ± s"`` over seeds, or just the value for a single run; ``"n/a"`` if any is missing.

    A NaN marks a metric a run does not have (e.g. no trained segmentation branch): averaging it
    with real values would hide that.
    """
    if not values or any(math.isnan(v) for v in values):
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{mean(values):.1f} ± {stdev(values):.1f}"


def ladder_line(
    variants: dict[str, Any], keys: Sequence[str], column: str, title: str
) -> str | None:
    """``title``: each variant of ``keys`` (in order, each adding one mechanism to the one before)
    with its mean of ``column`` and the change that mechanism made, on the seeds they all ran.

    Only shared seeds count: with the same training code, runs of one seed are identical until
    the mechanisms start, so a step's change is measured without the seed's luck. The ladder
    stops before the first variant that did not run (the next step would add two mechanisms).
    None if fewer than two steps ran.
    """
    present = []
    for k in keys:
        if k not in variants:
            break
        present.append(k)
    if len(present) < 2:
        return None
    shared = set.intersection(*(set(variants[k]["seeds"]) for k in present))
    if not shared:
        return None
    means = []
    for k in present:
        by_seed = dict(zip(variants[k]["seeds"], variants[k]["values"][column]))
        means.append(mean(by_seed[s] for s in shared))
    if any(math.isnan(m) for m in means):
        return None
    steps = [f"{variants[present[0]]['label']} {means[0]:.1f}"]
    for k, before, after in zip(present[1:], means, means[1:]):
        steps.append(f"{variants[k]['label']} {after:.1f} ({after - before:+.1f})")
    seeds = ("seeds " if len(shared) > 1 else "seed ") + ",".join(map(str, sorted(shared)))
    return f"{title} ({seeds}): " + " → ".join(steps)


def paired_line(
    tagged: dict[str, Any], plain: dict[str, Any], column: str, title: str
) -> str | None:
    """``title``: a variant run with extra overrides against its plain runs on the seeds both
    ran, with the difference per seed (runs of one seed are identical until the overrides act).
    ``tagged`` and ``plain`` are one variant's summaries from :func:`results_table`. None without
    a shared seed or where a value is missing."""
    a = dict(zip(tagged["seeds"], tagged["values"][column]))
    b = dict(zip(plain["seeds"], plain["values"][column]))
    shared = sorted(set(a) & set(b))
    if not shared or any(math.isnan(a[s]) or math.isnan(b[s]) for s in shared):
        return None
    each = " / ".join(f"{a[s] - b[s]:+.1f}" for s in shared)
    seeds = ("seeds " if len(shared) > 1 else "seed ") + ",".join(map(str, shared))
    ma, mb = mean(a[s] for s in shared), mean(b[s] for s in shared)
    return f"{title} ({seeds}): {ma:.1f} against {mb:.1f} ({ma - mb:+.1f}; per seed {each})"


def against_plain(
    tagged: dict[str, Any], plain: dict[str, Any], tag: str, columns: Sequence[tuple[str, str]]
) -> list[str]:
    """Each variant run with the overrides of ``tag`` against its plain runs, paired by seed:
    one :func:`paired_line` per ``(column key, title)``. Both are ``results_table`` variants."""
    lines = []
    for key in tagged:
        if key not in plain:
            continue
        for column, title in columns:
            line = paired_line(
                tagged[key], plain[key], column, f"'{tag}' against plain {key}, {title}"
            )
            if line:
                lines.append(line)
    return lines


def tracked_lines(done: Sequence[Run]) -> list[str]:
    """For each run, when each of the :data:`TRACKED_SCALARS` it logged stopped being logged."""
    lines = []
    for run in sorted(done, key=lambda r: (r.variant.key, r.seed)):
        for name, event in TRACKED_SCALARS.items():
            last = run.last_logged.get(name)
            if last is not None:
                lines.append(
                    f"{run.variant.key} seed {run.seed}: {event} at iteration {last} (the last one "
                    f"that logged {name}; at the last iteration of training it may never have)"
                )
    return lines


def last_logged(out_dir: Path, names: Iterable[str]) -> dict[str, int]:
    """The last iteration at which each of ``names`` appears in the run's ``metrics.json``
    (names never logged are left out)."""
    path = Path(out_dir) / "metrics.json"
    found: dict[str, int] = {}
    if not path.is_file():
        return found
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        entry = json.loads(line)
        for name in names:
            if name in entry:
                found[name] = max(found.get(name, -1), int(entry["iteration"]))
    return found


def recorded_minutes(done: Sequence[Run], jobs: int) -> str:
    """What the runs took, for a report's first line: each run's recorded minutes as a range.

    Runs may come from records of other sessions, on a machine as busy as it was then, so one
    wall time summed over them would mix sessions. A record without a time (0 minutes: its log
    was gone when it was written) is counted apart."""
    known = [r.minutes for r in done if r.minutes > 0]
    line = f"{len(done)} run" + ("" if len(done) == 1 else "s")
    if known:
        low, high = f"{min(known):.0f}", f"{max(known):.0f}"
        line += f" of {low if low == high else f'{low}-{high}'} min each as recorded"
    if len(known) < len(done):
        line += f" ({len(done) - len(known)} without a recorded time)"
    return f"{line}, {jobs} at a time"


def run_minutes(out_dir: Path) -> float:
    """Wall-clock minutes of a run, from the first and last timestamps of its ``log.txt``."""
    log = Path(out_dir) / "log.txt"
    if not log.is_file():
        return 0.0
    stamps = re.findall(r"^\[(\d\d/\d\d \d\d:\d\d:\d\d)\]", log.read_text(), re.M)
    if len(stamps) < 2:
        return 0.0
    first, last = (datetime.strptime(s, "%m/%d %H:%M:%S") for s in (stamps[0], stamps[-1]))
    return (last - first).total_seconds() / 60
