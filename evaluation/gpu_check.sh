#!/usr/bin/env bash
# GPU check (issue 21). On a CUDA machine, from the repository root, with the [msdm] extra installed:
#   bash evaluation/gpu_check.sh [OUT]          (OUT defaults to evaluation/results/gpu_check: .json + .md)
# Prints device, torch version, host syncs per sampler step, NFE/s, peak GPU memory and the real-time factor of
# the full-size random-weight MSDM network on the bundled example; then `separate` sharded over every GPU with
# torchrun (bf16), rerun to check that it resumes. Without CUDA it says so and stops (exit 1).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-evaluation/results/gpu_check}"
python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || {
    echo "gpu_check: no CUDA device here; nothing to check." >&2; exit 1; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
# the tests that touch the MSDM network, the converter, the paper protocol and the samplers' GPU paths
python -m pytest -q -p no:xdist tests/test_msdm_convert.py tests/test_paper_audio.py tests/test_host_syncs.py \
    tests/test_sampler_daps.py tests/test_sampler_mgdm.py tests/test_separate_sharded.py
PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" python evaluation/gpu_check.py --device cuda --out "$out"
# `separate` sharded over every GPU (one process per GPU: cuda:LOCAL_RANK), bf16, the example's five files with the
# shipped prior; rank 0 writes job.json (with 2+ GPUs). The rerun with --skip-existing must skip all five tracks.
ngpu="$(python -c 'import torch; print(torch.cuda.device_count())')"
sep="$(mktemp -d)"
run_sharded() {
    PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" python -m torch.distributed.run --standalone \
        --nproc_per_node "$ngpu" -m mgdm_audio \
        separate examples/bach_bwv269 -n slakh-style-small --preset fast --bf16 --no-progress -o "$sep" "$@"
}
SECONDS=0
run_sharded
echo "sharded separate: $ngpu process(es), 5 files, ${SECONDS} s wall"
[ -f "$sep/slakh-style-small/job.json" ] && python -c "import json, sys; j = json.load(open(sys.argv[1])); \
print('job.json:', {k: j[k] for k in ('world_size', 'separated', 'skipped', 'audio_seconds', 'nfe', 'rank_seconds')})" \
    "$sep/slakh-style-small/job.json"
skipped="$(run_sharded --skip-existing | grep -c ', skipped$' || true)"
echo "resume: $skipped of 5 tracks skipped as finished"
[ "$skipped" = 5 ]
