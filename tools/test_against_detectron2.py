#!/usr/bin/env python
"""Run the test suite against another detectron2 source tree, leaving the installed one alone.

    python tools/test_against_detectron2.py ~/src/detectron2                 # whole suite
    python tools/test_against_detectron2.py ~/src/detectron2 -- -k ddp -x    # pytest arguments
    python tools/test_against_detectron2.py /path/to/detectron2.git --rev v0.6

The tree (a checkout, or a bare git repository with ``--rev``) is copied to a scratch folder,
its compiled ops are built there in place with this interpreter's torch (CPU ops unless
``FORCE_CUDA=1``), and pytest runs with that folder first on ``PYTHONPATH``, so ``import
detectron2`` finds it before the environment's own copy. Nothing is installed or uninstalled.
The exit status is pytest's.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def export_tree(src: Path, rev: str | None, dest: Path) -> str:
    """Copy the detectron2 sources at ``src`` into ``dest``; returns a description of them."""
    if (src / "detectron2" / "__init__.py").is_file() and rev is None:
        shutil.copytree(src, dest, ignore=shutil.ignore_patterns(".git", "build", "*.so"))
        return str(src)
    git = ["git", f"--git-dir={src / '.git' if (src / '.git').exists() else src}"]
    revision = rev or "HEAD"
    commit = subprocess.run(
        git + ["rev-parse", "--short", revision], capture_output=True, text=True
    )
    if commit.returncode != 0:
        raise SystemExit(
            f"error: {src} is neither a detectron2 checkout nor a git repository with revision "
            f"'{revision}' ({commit.stderr.strip()})."
        )
    archive = dest.parent / "detectron2.tar"
    subprocess.run(git + ["archive", "--output", str(archive), revision], check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="data")
    archive.unlink()
    if not (dest / "detectron2" / "__init__.py").is_file():
        raise SystemExit(f"error: revision '{revision}' of {src} holds no detectron2 package.")
    return f"{src} @ {commit.stdout.strip()}"


def build_in_place(tree: Path) -> None:
    """Compile detectron2's C++ ops next to its sources (``setup.py build_ext --inplace``)."""
    env = dict(os.environ, MAX_JOBS=os.environ.get("MAX_JOBS", str(os.cpu_count() or 1)))
    proc = subprocess.run(
        [sys.executable, "setup.py", "build_ext", "--inplace"], cwd=tree, env=env, text=True
    )
    if proc.returncode != 0:
        raise SystemExit(f"error: building detectron2's compiled ops in {tree} failed.")


def describe(tree: Path, env: dict) -> str:
    """Which detectron2 the test interpreter imports, asked in a fresh process."""
    probe = (
        "import detectron2, os; print(detectron2.__version__, os.path.dirname(detectron2.__file__))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, cwd=REPO_ROOT
    )
    if proc.returncode != 0:
        raise SystemExit(f"error: detectron2 from {tree} does not import:\n{proc.stderr[-2000:]}")
    version, location = proc.stdout.split()
    if Path(location).resolve() != (tree / "detectron2").resolve():
        raise SystemExit(f"error: the tests would import detectron2 from {location}, not {tree}.")
    return version


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog="Arguments after -- go to pytest."
    )
    parser.add_argument("source", type=Path, help="detectron2 checkout or git repository")
    parser.add_argument("--rev", help="git revision to test (default: the checkout as it is)")
    parser.add_argument("--work-dir", type=Path, help="scratch folder (default: a temporary one)")
    parser.add_argument("--no-build", action="store_true", help="skip compiling the C++ ops")
    argv = list(sys.argv[1:] if argv is None else argv)
    split = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:split])
    pytest_args = argv[split + 1 :] or ["tests", "-q"]

    scratch = Path(args.work_dir or tempfile.mkdtemp(prefix="bmp-d2-detectron2-"))
    tree = scratch / "detectron2"
    if tree.exists():
        shutil.rmtree(tree)
    scratch.mkdir(parents=True, exist_ok=True)
    origin = export_tree(args.source.resolve(), args.rev, tree)
    if not args.no_build:
        build_in_place(tree)
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, [str(tree), os.environ.get("PYTHONPATH")])),
    )
    version = describe(tree, env)
    print(f"Testing against detectron2 {version} from {origin} (copied to {tree})", flush=True)
    code = subprocess.run(
        [sys.executable, "-m", "pytest", *pytest_args], cwd=REPO_ROOT, env=env
    ).returncode
    print(f"detectron2 {version} ({origin}): pytest exit status {code}")
    return code


if __name__ == "__main__":
    sys.exit(main())
