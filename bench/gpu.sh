#!/usr/bin/env bash
# GPU benchmark: bf16 scoring throughput at several batch sizes and one retraining epoch on real data.
#
#   pip install -e .        # torch with CUDA already installed on the machine
#   bench/gpu.sh            # from the repository root; a few minutes at most on a data-centre GPU
#   bench/gpu.sh --quick    # fewer texts: runs on a CPU-only machine too (slowly, CPU figures)
#
# Extra arguments go to bench/gpu_bench.py (--texts, --batch-sizes, --train-texts, --base, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 DO_NOT_TRACK=1 TOKENIZERS_PARALLELISM=false
if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi
exec python bench/gpu_bench.py "$@"
