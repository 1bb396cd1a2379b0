#!/usr/bin/env bash
# The GPU check of benchmarks/gpu_check.py (at most 8 minutes on one GPU): trial step vs a bare
# PyTorch loop, ResNet-18 CIFAR SimCLR samples/s and model FLOP utilisation at batch 512, and
# images/s of the ImageNet-size input path. Without a GPU it runs its CPU fallback (smaller sizes).
# The output is kept in benchmarks/results/<date>-<device>.txt.
#
#   bash benchmarks/gpu_check.sh            (from the repository root, after `make install`)
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
device=$("$python" -c 'import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu")' \
    | tr -cs 'A-Za-z0-9' '-' | sed 's/-*$//')
mkdir -p benchmarks/results
out="benchmarks/results/$(date +%Y-%m-%d)-$device.txt"
start=$(date +%s)
timeout 480 "$python" benchmarks/gpu_check.py "$@" 2>&1 | tee "$out"
echo "took $(( $(date +%s) - start )) s; load average $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine slows every figure); written to $out" | tee -a "$out"
