#!/usr/bin/env bash
# GPU check (issue 21). On a CUDA machine, from the repository root, with the [msdm] extra installed:
#   bash evaluation/gpu_check.sh [OUT]          (OUT defaults to evaluation/results/gpu_check: .json + .md)
# Prints device, torch version, host syncs per sampler step, NFE/s, peak GPU memory and the real-time factor of
# the full-size random-weight MSDM network on the bundled example. Without CUDA it says so and stops (exit 1).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-evaluation/results/gpu_check}"
python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || {
    echo "gpu_check: no CUDA device here; nothing to check." >&2; exit 1; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
# the tests that touch the MSDM network, the converter, the paper protocol and the samplers' GPU paths
python -m pytest -q -p no:xdist tests/test_msdm_convert.py tests/test_paper_audio.py tests/test_host_syncs.py \
    tests/test_sampler_daps.py tests/test_sampler_mgdm.py
PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" python evaluation/gpu_check.py --device cuda --out "$out"
