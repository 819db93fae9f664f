#!/usr/bin/env python
"""Install detectron2 into the current Python environment, unless one already works there.

detectron2 is not published on PyPI. The only faithful copy on the registry is the sdist
``pb1-detectron2==0.6``: upstream v0.6's Python sources without the C++/CUDA sources. This script

1. leaves any detectron2 that already imports untouched (a user's own CUDA build, say);
2. otherwise downloads that sdist from the package index, verifies its sha256, applies
   ``third_party/detectron2/v0.6-compat.patch`` and installs it without compiled ops.

Run it with the interpreter of the target environment. ``--dry-run`` only reports the decision.
"""

from __future__ import annotations

import argparse
import hashlib
import html.parser
import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
PATCH = REPO_ROOT / "third_party" / "detectron2" / "v0.6-compat.patch"
SDIST_NAME = "pb1-detectron2"
SDIST_VERSION = "0.6"
SDIST_FILES = ("pb1-detectron2-0.6.tar.gz", "pb1_detectron2-0.6.tar.gz")
SDIST_SHA256 = "5d2e9e51e523ec72f6a31cca04b0a515492e9514b773a3d134cedc0677170b29"
LOCAL_VERSION = "0.6+bmpcompat"
# A .py file, so that setuptools installs it with the package (data files need package_data).
MARKER = "_bmp_compat_marker.py"
CACHE_DIR = Path(os.environ.get("BMP_CACHE_DIR", Path.home() / ".cache" / "bmp-d2"))


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def inspect_existing() -> dict:
    """Describe the detectron2 visible to this interpreter, importing it in a fresh process."""
    spec = importlib.util.find_spec("detectron2")
    if spec is None:
        return {"present": False}
    probe = (
        "import detectron2, detectron2.modeling, detectron2.data, detectron2.engine;"
        "from detectron2.evaluation import SemSegEvaluator;"
        "print(detectron2.__file__)"
    )
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    location = Path(spec.origin or next(iter(spec.submodule_search_locations or []), "")).parent
    try:
        version = importlib.metadata.version("detectron2")
    except importlib.metadata.PackageNotFoundError:
        version = None
    marker = location / MARKER
    return {
        "present": True,
        "imports": proc.returncode == 0,
        "error": proc.stderr.strip().splitlines()[-1] if proc.returncode else "",
        "location": str(location),
        "version": version,
        # Ours if it carries our marker, or our local version label (an older install of ours).
        "ours": marker.is_file() or (version or "").endswith("+bmpcompat") and _dist_at(location),
        "patch_sha": _read_marker(marker),
    }


def _dist_at(location: Path) -> bool:
    """Whether the installed "detectron2" distribution owns the package found at ``location``."""
    try:
        files = importlib.metadata.distribution("detectron2").files or []
    except importlib.metadata.PackageNotFoundError:
        return False
    return any(Path(f.locate()).resolve().parent == location.resolve() for f in files)


def _read_marker(marker: Path) -> str | None:
    if not marker.is_file():
        return None
    text = marker.read_text()
    return text.split('"')[1] if text.startswith("PATCH_SHA256 = ") else None


def index_url() -> str:
    """The package index pip would use: PIP_INDEX_URL, pip's config, or PyPI."""
    url = os.environ.get("PIP_INDEX_URL")
    if not url:
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "config", "get", "global.index-url"],
            capture_output=True,
            text=True,
        )
        url = proc.stdout.strip() if proc.returncode == 0 else ""
    return (url or "https://pypi.org/simple").rstrip("/")


class _Links(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            self.hrefs.extend(v for k, v in attrs if k == "href" and v)


def download_sdist(dest: Path) -> Path:
    """Fetch the sdist into ``dest`` (cached) and verify its sha256."""
    cached = CACHE_DIR / SDIST_FILES[0]
    if cached.is_file() and sha256_of(cached) == SDIST_SHA256:
        print(f"[detectron2] using cached sdist {cached}")
        return cached
    page_url = f"{index_url()}/{SDIST_NAME}/"
    print(f"[detectron2] looking up {SDIST_NAME}=={SDIST_VERSION} on {page_url}")
    with urllib.request.urlopen(page_url, timeout=60) as resp:
        parser = _Links()
        parser.feed(resp.read().decode("utf-8", "replace"))
    links = [h for h in parser.hrefs if urllib.parse.urlsplit(h).path.endswith(SDIST_FILES)]
    if not links:
        raise SystemExit(
            f"[detectron2] error: {page_url} lists no {SDIST_FILES[0]}. Download it by hand and "
            "pass it with --sdist PATH (or BMP_DETECTRON2_SDIST=PATH)."
        )
    url = urllib.parse.urljoin(page_url, links[0]).split("#")[0]
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / SDIST_FILES[0]
    print(f"[detectron2] downloading {url}")
    with urllib.request.urlopen(url, timeout=300) as resp, open(target, "wb") as out:
        shutil.copyfileobj(resp, out)
    verify(target)
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    shutil.copy2(target, cached)
    return target


def verify(sdist: Path) -> None:
    got = sha256_of(sdist)
    if got != SDIST_SHA256:
        raise SystemExit(
            f"[detectron2] error: {sdist} has sha256 {got}, expected {SDIST_SHA256}. "
            "Refusing to install an unverified detectron2; delete the file and retry."
        )
    print(f"[detectron2] sha256 verified: {SDIST_SHA256}")


def apply_patch(src: Path) -> None:
    if shutil.which("git"):
        cmd = ["git", "apply", "--whitespace=nowarn", str(PATCH)]
    elif shutil.which("patch"):
        cmd = ["patch", "-p1", "--batch", "--forward", "-i", str(PATCH)]
    else:
        raise SystemExit("[detectron2] error: need `git` or `patch` to apply the compat patch.")
    # GIT_DIR points git at nothing, so `git apply` treats src as a plain directory.
    env = dict(os.environ, GIT_DIR=str(src / ".no-git"))
    subprocess.run(cmd, cwd=src, check=True, env=env)
    (src / "detectron2" / MARKER).write_text(f'PATCH_SHA256 = "{sha256_of(PATCH)}"\n')


def ensure_wheel_building() -> None:
    """``--no-build-isolation`` builds with this environment's setuptools: one older than 70.1
    (what a Python 3.11 venv starts with, when torch does not bring a newer one, as torch 2.11
    does not) has no ``bdist_wheel`` without the ``wheel`` package, so that is added then."""
    probe = "import setuptools.command.bdist_wheel"
    if subprocess.run([sys.executable, "-c", probe], capture_output=True).returncode == 0:
        return
    if subprocess.run([sys.executable, "-c", "import wheel"], capture_output=True).returncode == 0:
        return
    print("[detectron2] this setuptools cannot build wheels alone: installing `wheel`")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "wheel"], check=True)


def install(sdist: Path) -> None:
    verify(sdist)
    with tempfile.TemporaryDirectory(prefix="bmp-d2-") as tmp:
        with tarfile.open(sdist) as tar:
            tar.extractall(tmp, filter="data")
        src = next(p for p in Path(tmp).iterdir() if p.is_dir())
        shutil.rmtree(src / "pb1_detectron2.egg-info", ignore_errors=True)
        apply_patch(src)
        print(f"[detectron2] patched with {PATCH.relative_to(REPO_ROOT)}; installing (no _C)")
        ensure_wheel_building()
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--no-build-isolation", str(src)],
            check=True,
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sdist", default=os.environ.get("BMP_DETECTRON2_SDIST"))
    parser.add_argument("--dry-run", action="store_true", help="report the decision only")
    args = parser.parse_args(argv)

    state = inspect_existing()
    patch_sha = sha256_of(PATCH)
    if state["present"] and not state["ours"]:
        if state["imports"]:
            print(
                f"[detectron2] found an existing detectron2 {state['version'] or '(unknown)'} at "
                f"{state['location']}; it imports, so it is left untouched."
            )
            return 0
        raise SystemExit(
            f"[detectron2] error: a detectron2 at {state['location']} is installed but fails to "
            f"import ({state['error']}). It is not ours, so it is not overwritten: fix it, or "
            "`pip uninstall detectron2` and run `make install` again."
        )
    if state["present"] and state["imports"] and state["patch_sha"] == patch_sha:
        print(f"[detectron2] {LOCAL_VERSION} (patched sdist) already installed; nothing to do.")
        return 0
    action = "reinstall (patch changed or broken)" if state["present"] else "install"
    print(f"[detectron2] will {action} {SDIST_NAME}=={SDIST_VERSION} as {LOCAL_VERSION}")
    if args.dry_run:
        return 0
    with tempfile.TemporaryDirectory(prefix="bmp-d2-dl-") as tmp:
        sdist = Path(args.sdist) if args.sdist else download_sdist(Path(tmp))
        install(sdist)
    after = inspect_existing()
    if not after.get("imports"):
        raise SystemExit(f"[detectron2] error: installed, but import fails: {after.get('error')}")
    print(f"[detectron2] installed {after['version']} at {after['location']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
