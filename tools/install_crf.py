#!/usr/bin/env python
"""Install the ``crf`` extra (``pydensecrf2``, compiled from its sdist), on every Python we test.

``pydensecrf2`` 1.1's sdist pins ``Cython==0.29.36`` for its isolated build; the C++ that Cython
generates does not compile against Python 3.13's C API (``_PyList_Extend``,
``_PyLong_AsByteArray``). So the install goes:

1. ``pip install -e '.[crf]'``, the normal way (works up to Python 3.12);
2. if that fails, the same sdist built with Cython 3 from this environment
   (``--no-build-isolation``), then the extra again;
3. if that fails too, one warning naming the cause it can see: no C++ compiler, or the compiler's
   own last error lines. The CRF tests then skip; nothing else depends on the extra.

Exit status 0 in every case (the extra is optional); ``--strict`` exits 1 when it is missing.
"""

import argparse
import shutil
import subprocess
import sys
from typing import List, Optional, Sequence

PACKAGE = "pydensecrf2==1.1"
BUILD_TOOLS = ["cython>=3", "setuptools", "wheel", "numpy"]


def _pip(args: Sequence[str]) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", "install", "-q", *args]
    return subprocess.run(cmd, capture_output=True, text=True)


def _importable() -> bool:
    probe = [sys.executable, "-c", "import pydensecrf.densecrf"]
    return subprocess.run(probe, capture_output=True).returncode == 0


def _compiler() -> Optional[str]:
    for name in ("c++", "g++", "clang++"):
        if shutil.which(name):
            return name
    return None


def _error_lines(output: str, n: int = 3) -> List[str]:
    lines = [ln.strip() for ln in output.splitlines() if "error" in ln.lower() and ln.strip()]
    return lines[-n:]


def install() -> Optional[str]:
    """None once ``pydensecrf`` imports, else the reason it does not."""
    first = _pip(["-e", ".[crf]"])
    if first.returncode == 0 and _importable():
        return None
    tools = _pip(BUILD_TOOLS)
    second = _pip(["--no-build-isolation", PACKAGE]) if tools.returncode == 0 else tools
    if second.returncode == 0 and _pip(["-e", ".[crf]"]).returncode == 0 and _importable():
        print(f"[crf] {PACKAGE} built with Cython 3 (its pinned Cython 0.29 failed on this Python)")
        return None
    compiler = _compiler()
    if compiler is None:
        return "no C++ compiler (c++, g++ or clang++) is on PATH; install one and re-run"
    detail = "; ".join(_error_lines(second.stdout + second.stderr)) or "see pip's output"
    return (
        f"{PACKAGE} did not compile with {compiler} and Python "
        f"{sys.version_info.major}.{sys.version_info.minor}, with its pinned Cython nor with "
        f"Cython 3: {detail}"
    )


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--strict", action="store_true", help="exit 1 if the extra is missing")
    args = parser.parse_args(argv)
    reason = install()
    if reason is None:
        return 0
    print(f"warning: the crf extra is not installed, so the CRF tests will skip: {reason}")
    return 1 if args.strict else 0


if __name__ == "__main__":
    sys.exit(main())
