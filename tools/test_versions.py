#!/usr/bin/env python
"""Prove a version claim: build a venv with a given Python (and torch), install, run the suite.

    python tools/test_versions.py --python ~/.pyenv/versions/3.13.0/bin/python
    python tools/test_versions.py --python python3.11 --torch 2.11.0 --torchvision 0.26.0

Each run builds its own venv (default ``.venvs/py<X.Y>-torch<V>``) the way ``make test`` builds
``.venv``: ``requirements.txt`` (with the torch pair replaced when given), detectron2 through
``tools/install_detectron2.py``, this package, the three extras (``tools/install_crf.py`` for
``crf``), then ``pytest tests``. It prints one result row and appends it to
``benchmarks/results/versions.md`` with the CPU model, the commit and the date, which
``docs/installation.md`` quotes.
"""

import argparse
import datetime
import os
import platform
import re
import subprocess
import sys
import time
from typing import List, Optional, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results", "versions.md")
HEADER = (
    "| Python | torch / torchvision | detectron2 | pytest | CRF extra | minutes | CPU | commit "
    "| date |\n|---|---|---|---|---|---|---|---|---|\n"
)


def _run(cmd: Sequence[str], log, env=None, check: bool = True) -> subprocess.CompletedProcess:
    log.write(f"$ {' '.join(cmd)}\n")
    log.flush()
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    log.write(done.stdout + done.stderr)
    log.flush()
    if check and done.returncode != 0:
        raise SystemExit(f"failed ({done.returncode}): {' '.join(cmd)}; see {log.name}")
    return done


def requirements(torch: Optional[str], torchvision: Optional[str]) -> List[str]:
    """``requirements.txt``'s pins, with the torch pair replaced when given."""
    if bool(torch) != bool(torchvision):
        raise SystemExit("give --torch and --torchvision together (a matched pair)")
    out = []
    for line in open(os.path.join(ROOT, "requirements.txt"), encoding="utf-8"):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name = re.split(r"[=<>!~ ]", line, 1)[0]
        if torch and name == "torch":
            line = f"torch=={torch}"
        elif torchvision and name == "torchvision":
            line = f"torchvision=={torchvision}"
        out.append(line)
    return out


def _cpu_model() -> str:
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        model = re.search(r"Model name:\s*(.+)", text)
        return f"{model.group(1).strip()}, {os.cpu_count()} cores" if model else platform.machine()
    except OSError:
        return platform.machine()


def _commit() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True)
    return done.stdout.decode().strip() or "?"


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--python", required=True, help="the interpreter to build the venv with")
    p.add_argument("--torch", help="torch version instead of requirements.txt's pin")
    p.add_argument("--torchvision", help="torchvision version matching --torch")
    p.add_argument("--venv", help="where to build it (default .venvs/py<X.Y>-torch<V>)")
    p.add_argument("--no-record", action="store_true", help="do not append to versions.md")
    args = p.parse_args(argv)

    pins = requirements(args.torch, args.torchvision)
    version = subprocess.run(
        [args.python, "-c", "import platform; print(platform.python_version())"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    torch_pin = next(x.split("==")[1] for x in pins if x.startswith("torch=="))
    tv_pin = next(x.split("==")[1] for x in pins if x.startswith("torchvision=="))
    venv = args.venv or os.path.join(ROOT, ".venvs", f"py{version}-torch{torch_pin}")
    os.makedirs(os.path.dirname(venv) or ".", exist_ok=True)
    py = os.path.join(venv, "bin", "python")
    start = time.time()
    with open(venv.rstrip("/") + ".log", "w", encoding="utf-8") as log:
        print(f"[versions] Python {version}, torch {torch_pin}: log {log.name}", flush=True)
        if not os.path.exists(py):
            _run([args.python, "-m", "venv", venv], log)
        pip = [py, "-m", "pip", "--disable-pip-version-check", "install", "-q"]
        req = venv.rstrip("/") + ".requirements.txt"
        with open(req, "w", encoding="utf-8") as f:
            f.write("\n".join(pins) + "\n")
        _run(pip + ["-r", req], log)
        _run([py, "tools/check_env.py", "--torch-only"], log)
        _run([py, "tools/install_detectron2.py"], log)
        _run(pip + ["--no-deps", "--no-build-isolation", "-e", "."], log)
        _run(pip + ["-e", ".[pretrained,voc]"], log)
        crf = _run([py, "tools/install_crf.py"], log)
        crf_state = "not built" if "warning" in crf.stdout else "built"
        if "Cython 3" in crf.stdout:
            crf_state = "built with Cython 3"
        d2 = _run([py, "tools/check_env.py"], log).stdout.strip().splitlines()
        d2_version = next((re.search(r"detectron2 (\S+)", ln) for ln in d2 if "detectron2" in ln))
        env = dict(os.environ, PYTHONPATH="")
        tests = _run([py, "-m", "pytest", "-q", "-p", "no:warnings", "tests"], log, env, False)
    summary = (tests.stdout.strip().splitlines() or ["?"])[-1].strip("= ")
    minutes = (time.time() - start) / 60
    row = (
        f"| {version} | {torch_pin} / {tv_pin} | {d2_version.group(1) if d2_version else '?'} | "
        f"{summary} | {crf_state} | {minutes:.0f} | {_cpu_model()} | {_commit()} | "
        f"{datetime.date.today().isoformat()} |"
    )
    print(row)
    if not args.no_record:
        record_row(RESULTS, row)
    return 0 if tests.returncode == 0 else 1


def record_row(path: str, row: str) -> None:
    """Add ``row`` under the last row of the file's first table (the table and a title are
    created when the file is missing or empty), so notes written below it stay below it."""
    text = ""
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            text = f.read()
    if not text.strip():
        text = "# Versions run (tools/test_versions.py)\n\n" + HEADER
    lines = text.splitlines()
    rule = next((i for i, line in enumerate(lines) if line.startswith("|---")), None)
    if rule is None:
        lines += ["", *HEADER.splitlines()]
        rule = len(lines) - 1
    last = rule
    while last + 1 < len(lines) and lines[last + 1].startswith("|"):
        last += 1
    lines.insert(last + 1, row)
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
