"""tools/install_detectron2.py must never overwrite a detectron2 that the user already has."""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "tools" / "install_detectron2.py"


def _fake_detectron2(root: Path, broken: bool = False) -> Path:
    pkg = root / "detectron2"
    for sub in ("modeling", "data", "engine", "evaluation"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "evaluation" / "__init__.py").write_text("SemSegEvaluator = object\n")
    body = "raise ImportError('fake build is broken')\n" if broken else "__version__ = '9.9'\n"
    (pkg / "__init__.py").write_text(body)
    return pkg


def _digest(pkg: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(pkg.rglob("*")):
        if f.is_file():
            h.update(f.relative_to(pkg).as_posix().encode() + f.read_bytes())
    return h.hexdigest()


def _run(pythonpath: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(pythonpath), PIP_NO_INDEX="1")
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=120
    )


def test_existing_working_detectron2_is_left_untouched(tmp_path):
    pkg = _fake_detectron2(tmp_path)
    before = _digest(pkg)
    # Not a dry run: it must decide to do nothing, without downloading anything.
    proc = _run(tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "left untouched" in proc.stdout
    assert str(pkg) in proc.stdout
    assert _digest(pkg) == before


def test_existing_broken_foreign_detectron2_is_not_overwritten(tmp_path):
    pkg = _fake_detectron2(tmp_path, broken=True)
    before = _digest(pkg)
    proc = _run(tmp_path)
    assert proc.returncode != 0
    assert "not overwritten" in proc.stderr
    assert "fake build is broken" in proc.stderr
    assert _digest(pkg) == before


def test_our_own_install_is_recognised_as_current():
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--dry-run"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert "already installed" in proc.stdout or "left untouched" in proc.stdout


def test_unverified_sdist_is_refused(tmp_path):
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import install_detectron2 as inst
    finally:
        sys.path.pop(0)
    fake = tmp_path / "pb1-detectron2-0.6.tar.gz"
    fake.write_bytes(b"not the real sdist")
    with pytest.raises(SystemExit, match="Refusing to install an unverified detectron2"):
        inst.verify(fake)


def test_installed_distribution_reports_the_patched_version():
    from importlib.metadata import version

    import detectron2

    marker = Path(detectron2.__file__).parent / "_bmp_compat_marker.py"
    if not marker.is_file():
        pytest.skip("a user-provided detectron2 is in use")
    assert version("detectron2") == "0.6+bmpcompat"
    patch = REPO / "third_party" / "detectron2" / "v0.6-compat.patch"
    assert hashlib.sha256(patch.read_bytes()).hexdigest() in marker.read_text()
