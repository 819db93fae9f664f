"""tools/install_crf.py: the Cython 3 fallback, and a warning that names the real cause."""

import importlib.util
import os
import re
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_spec = importlib.util.spec_from_file_location(
    "install_crf", os.path.join(ROOT, "tools", "install_crf.py")
)
install_crf = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(install_crf)


def _fake_run(answers, calls):
    """subprocess.run answering each pip install (keyed by its last argument) and the import
    probe ("import") from queues of ``(exit code, output)``; anything else succeeds."""

    def run(cmd, capture_output=True, text=False):
        key = "import" if "-c" in cmd else cmd[-1]
        calls.append(key)
        queue = answers.get(key) or [(0, "")]
        code, out = queue.pop(0) if len(queue) > 1 else queue[0]
        return subprocess.CompletedProcess(cmd, code, stdout=out, stderr="")

    return run


FAIL_PINNED = [(1, ""), (0, "")]  # the extra fails with its pinned Cython, then installs
BUILD_ERROR = "x\neigen.cpp:1: error: '_PyList_Extend' was not declared\n"


@pytest.mark.parametrize(
    "answers, compiler, expected",
    [
        ({}, "/usr/bin/c++", None),  # the normal install works
        ({".[crf]": FAIL_PINNED}, "/usr/bin/c++", None),  # Cython 3 builds it
        ({".[crf]": [(1, "")], "pydensecrf2==1.1": [(1, "error: x")]}, None, "no C\\+\\+ compiler"),
        (
            {".[crf]": [(1, "")], "pydensecrf2==1.1": [(1, BUILD_ERROR)]},
            "/usr/bin/c++",
            "did not compile with c\\+\\+ .*_PyList_Extend",
        ),
    ],
)
def test_fallback_and_reason(monkeypatch, answers, compiler, expected):
    calls = []
    monkeypatch.setattr(install_crf.subprocess, "run", _fake_run(answers, calls))
    monkeypatch.setattr(install_crf.shutil, "which", lambda name: compiler)
    reason = install_crf.install()
    if expected is None:
        assert reason is None
    else:
        assert reason is not None and re.search(expected, reason), reason
    # The Cython 3 build is tried exactly when the normal install fails.
    assert ("pydensecrf2==1.1" in calls) == bool(answers)


def test_main_exits_zero_unless_strict(monkeypatch, capsys):
    monkeypatch.setattr(install_crf, "install", lambda: "no C++ compiler")
    assert install_crf.main([]) == 0
    assert "CRF tests will skip: no C++ compiler" in capsys.readouterr().out
    assert install_crf.main(["--strict"]) == 1
