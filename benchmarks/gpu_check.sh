#!/usr/bin/env bash
# The GPU check of BMP-D2, for one CUDA GPU, in about 5 minutes. Two steps:
#
#   bash benchmarks/gpu_check.sh prepare    # here (with the network to the package index): puts
#                                           # what the GPU machine lacks under .gpu/ (< 64 MiB)
#   bash benchmarks/gpu_check.sh run        # there: needs Python 3.12 + torch with CUDA; writes
#                                           # $OUT (or benchmarks/results/gpu_check/) and prints it
#
# `run` does, in this order (each step's log is kept):
#   1. the test suite on CUDA (tests build models on MODEL.DEVICE; CPU-only checks still run);
#   2. benchmarks/precision.py --device cuda: MiT-B1, crop 512, batch 2: step time and peak
#      memory in float32, float16 and bfloat16 side by side, the 20k-iteration estimate, label
#      agreement with float32, and the host syncs of one step (torch.cuda.set_sync_debug_mode);
#      with GPU_CHECK_WEIGHTS=<checkpoint> the agreement is measured on trained weights;
#   3. benchmarks/speed.py --device cuda --quick (the step split and inference).
# Tests that need 2 GPUs skip with a reason on one. Results to commit: benchmarks/results/
# precision_cuda.{md,json} and the logs.
set -euo pipefail
cd "$(dirname "$0")/.."
GPU=.gpu
PYVER=${GPU_CHECK_PYTHON_VERSION:-3.12}

prepare() {
    local py=.venv/bin/python
    rm -rf "$GPU" && mkdir -p "$GPU/whl" "$GPU/site"
    # pycocotools is compiled: a binary wheel for the GPU machine's Python.
    $py -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d "$GPU/whl" pycocotools==2.0.11
    # The rest is pure Python (several are sdists only): copied from .venv as installed,
    # detectron2 included (this project installs it without compiled ops).
    local site
    site=$($py -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    for pkg in detectron2 fvcore iopath yacs portalocker tabulate termcolor omegaconf hydra \
        antlr4 cloudpickle pytest _pytest pluggy iniconfig packaging pytest_timeout.py py.py; do
        cp -r "$site/$pkg" "$GPU/site/"
    done
    find "$GPU" -name "__pycache__" -prune -exec rm -rf {} +
    du -sh "$GPU"
    grep -qx "/$GPU/" .git/info/exclude 2>/dev/null || echo "/$GPU/" >> .git/info/exclude
    echo "carry $GPU in the device call, and run: bash benchmarks/gpu_check.sh run"
}

run() {
    local out=${OUT:-benchmarks/results/gpu_check}
    mkdir -p "$out"
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$GPU"/whl/*.whl
    export PYTHONPATH="$PWD/projects/BMP:$PWD/$GPU/site:/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
    export PYTHONUNBUFFERED=1
    python3 -c "import torch; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name())" \
        | tee "$out/device.txt"
    timeout 150 python3 -m pytest tests -q -x --timeout 60 -p no:cacheprovider \
        > "$out/tests_cuda.log" 2>&1 || echo "tests: exit $? (see tests_cuda.log)"
    tail -5 "$out/tests_cuda.log"
    local weights=()
    [[ -n "${GPU_CHECK_WEIGHTS:-}" ]] && weights=(--weights "$GPU_CHECK_WEIGHTS")
    timeout 120 python3 benchmarks/precision.py --device cuda --crops 512 --iters 5 \
        "${weights[@]}" --out "$out" > "$out/precision.log" 2>&1 || echo "precision: exit $?"
    cat "$out/precision_cuda.md" 2>/dev/null || tail -20 "$out/precision.log"
    timeout 60 python3 benchmarks/speed.py --device cuda --quick --crops 512 --sides 512 \
        --out "$out" > "$out/speed.log" 2>&1 || echo "speed: exit $?"
    tail -12 "$out/speed.log"
}

case "${1:-}" in
    prepare) prepare ;;
    run) run ;;
    *) echo "usage: bash benchmarks/gpu_check.sh prepare|run" >&2; exit 2 ;;
esac
