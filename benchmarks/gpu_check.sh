#!/usr/bin/env bash
# CUDA against CPU for onnxpath: results must agree (relative error <= 1e-3); prints the
# speed-up. Takes under 3 minutes once the packages are at hand.
#
#   benchmarks/gpu_check.sh                      # installs from the package index
#   WHEELS=/path/to/wheels benchmarks/gpu_check.sh   # offline: pip --no-index --find-links
#
# onnxruntime-gpu and onnxruntime install into the same `onnxruntime/` package folder, so
# onnxruntime-gpu goes into its own virtual environment (without system site-packages), never
# next to onnxruntime. Set ONNXPATH_GPU_VENV to reuse a prepared one.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${ONNXPATH_GPU_VENV:-${TMPDIR:-/tmp}/onnxpath-gpu-venv}"
PYTHON="${PYTHON:-python3}"
PIP_FROM=()
if [[ -n "${WHEELS:-}" ]]; then
    PIP_FROM=(--no-index --find-links "$WHEELS")
fi

command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total \
    --format=csv,noheader || echo "note: nvidia-smi not found"

if [[ ! -x "$VENV/bin/python" ]]; then
    "$PYTHON" -m venv "$VENV"   # no --system-site-packages: the CPU onnxruntime stays outside
fi
if "$VENV/bin/python" -m pip show onnxruntime >/dev/null 2>&1; then
    echo "error: $VENV holds the CPU package onnxruntime; onnxruntime-gpu must not share an" \
         "environment with it (remove $VENV or pick another ONNXPATH_GPU_VENV)" >&2
    exit 2
fi
if ! "$VENV/bin/python" -c "import onnxruntime" 2>/dev/null; then
    # The [cuda,cudnn] extras bring CUDA 12 and cuDNN 9 as wheels where the system has none;
    # onnxruntime.preload_dlls() (called by onnxpath for --device cuda) loads them.
    "$VENV/bin/python" -m pip install -q "${PIP_FROM[@]}" "onnxruntime-gpu[cuda,cudnn]" \
        || "$VENV/bin/python" -m pip install -q "${PIP_FROM[@]}" onnxruntime-gpu
fi
"$VENV/bin/python" -m pip install -q "${PIP_FROM[@]}" onnx onnx-graphsurgeon numpy typer pillow
if "$VENV/bin/python" -m pip show onnxruntime >/dev/null 2>&1; then
    echo "error: a dependency pulled the CPU onnxruntime into $VENV next to onnxruntime-gpu;" \
         "uninstall both there and reinstall onnxruntime-gpu" >&2
    exit 2
fi

# onnxpath itself from this checkout, not installed (so nothing can pull onnxruntime in).
cd "$ROOT"
PYTHONPATH="$ROOT" timeout 170 "$VENV/bin/python" benchmarks/gpu_check.py "$@"
