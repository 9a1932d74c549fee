#!/usr/bin/env bash
# The GPU check of the paper-scale run, one script, under 10 minutes on one GPU (bench/gpu.py has the
# details). Run from the repository root:
#
#   bash bench/gpu.sh                       # writes bench-gpu.json (the paper's shapes)
#   bash bench/gpu.sh --out my.json --inception /path/to/weights-inception-2015-12-05-6726825d.pth
#   bash bench/gpu.sh --tiny --device cpu   # the same code paths at toy sizes, on a CPU, in seconds
#
# It reads no data and needs no network: images are random, weights random (pretrained=False), and the
# Inception network runs with random weights unless --inception names the reference file (same speed).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-}"
if [[ -z "$PY" ]]; then
    if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python; fi
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1
args=("$@")
[[ " $* " == *" --out "* ]] || args+=(--out bench-gpu.json)
if command -v nvidia-smi > /dev/null; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi
# 570 s: the whole check stays under 10 minutes; the JSON is rewritten after each part, so a timeout keeps
# what finished.
exec timeout 570 "$PY" bench/gpu.py "${args[@]}"
