#!/usr/bin/env bash
# The GPU check in one command, from the source tree (nothing is installed):
#
#     bash benchmarks/gpu_check.sh OUT_DIR [more benchmarks/gpu_check.py options]
#
# Writes OUT_DIR/gpu_check.json, OUT_DIR/gpu_check.md (both rewritten after every section),
# OUT_DIR/gpu_check.log and OUT_DIR/nvidia-smi.txt. The Python script keeps to a 390 s budget
# (sections that would overrun are recorded as skipped); `timeout` stops it at 7 minutes
# whatever happens. Python: $PYTHON, else .venv/bin/python if present, else python3.
set -euo pipefail

if [ $# -lt 1 ] || [ "${1:0:1}" = "-" ]; then
    echo "usage: bash benchmarks/gpu_check.sh OUT_DIR [gpu_check.py options]" >&2
    exit 2
fi
out="$1"
shift
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="${PYTHON:-}"
if [ -z "$py" ]; then
    if [ -x "$root/.venv/bin/python" ]; then py="$root/.venv/bin/python"; else py=python3; fi
fi
mkdir -p "$out"
export PYTHONPATH="$root/src${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi > "$out/nvidia-smi.txt" 2>&1 || echo "nvidia-smi not available" > "$out/nvidia-smi.txt"
cd "$root"
timeout --signal=TERM --kill-after=10 415 \
    "$py" benchmarks/gpu_check.py --device cuda --out "$out" "$@" 2>&1 | tee "$out/gpu_check.log"
