#!/usr/bin/env bash
# CUDA against CPU for onnxpath: results must agree (relative error <= 5e-3; pathway maps Pearson >= 0.999); prints the
# speed-up. Takes under 3 minutes once the packages are at hand.
#
#   benchmarks/gpu_check.sh                      # installs from the package index
#   WHEELS=/path/to/wheels benchmarks/gpu_check.sh   # offline: pip --no-index --find-links
#
# onnxruntime-gpu and onnxruntime install into the same `onnxruntime/` package folder, so
# onnxruntime-gpu goes into its own virtual environment (without system site-packages), never
# next to onnxruntime. Set ONNXPATH_GPU_VENV to reuse a prepared one.
#
# Offline, with onnxruntime-gpu prepared in a folder (pip install --target DIR onnxruntime-gpu):
#
#   ONNXPATH_GPU_SITE=/tmp/site [WHEELS=/path/to/wheels] [PEERS=1] benchmarks/gpu_check.sh
#
# runs $PYTHON (python3) itself, no venv, with DIR first on PYTHONPATH so that it shadows a CPU
# onnxruntime installed in that Python; torch, numpy, onnx, typer and pillow come from that
# Python. What is missing (onnx-graphsurgeon; with PEERS=1 the peers of bench_peers.py, listed
# in benchmarks/peers-requirements.txt) is installed from WHEELS into DIR with --no-deps. PEERS=1
# then also runs benchmarks/bench_peers.py --device cuda.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

if [[ -n "${ONNXPATH_GPU_SITE:-}" ]]; then
    SITE="$(cd "$ONNXPATH_GPU_SITE" && pwd)"
    PYTHON="${PYTHON:-python3}"
    export PYTHONPATH="$SITE:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total \
        --format=csv,noheader || echo "note: nvidia-smi not found"
    if ! "$PYTHON" - "$SITE" <<'PY'
import sys
import onnxruntime
site = sys.argv[1]
where = onnxruntime.__file__
print(f"onnxruntime {onnxruntime.__version__} from {where}; providers "
      f"{', '.join(onnxruntime.get_available_providers())}")
if not where.startswith(site):
    sys.exit(f"error: onnxruntime is imported from {where}, not from {site}")
if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
    sys.exit(f"error: the onnxruntime in {site} has no CUDAExecutionProvider")
PY
    then
        exit 2
    fi
    install() {  # names... : from WHEELS into SITE, no dependencies (they are all listed)
        if [[ -z "${WHEELS:-}" ]]; then
            echo "error: $* missing; give WHEELS=/path/to/wheels to install it offline" >&2
            exit 2
        fi
        "$PYTHON" -m pip install -q --no-index --find-links "$WHEELS" --no-deps \
            --target "$SITE" "$@"
    }
    "$PYTHON" -c "import onnx_graphsurgeon" 2>/dev/null || install onnx-graphsurgeon
    cd "$ROOT"
    timeout 170 "$PYTHON" benchmarks/gpu_check.py "$@"
    if [[ -n "${PEERS:-}" ]]; then
        "$PYTHON" -c "import captum, ttach, dianna, xarray, skimage" 2>/dev/null \
            || install -r benchmarks/peers-requirements.txt
        timeout 400 "$PYTHON" benchmarks/bench_peers.py --device cuda --threads 4 --rounds 5
    fi
    exit 0
fi
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
