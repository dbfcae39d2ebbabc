#!/usr/bin/env bash
# On the lent GPU machine (no network), from the repository root, with build/gpu_bundle carried along:
# installs the bundle's wheels and slim robosuite into a private folder (nothing of the machine's Python is
# changed), runs the entry points end to end on cuda:0 (benchmarks/gpu_e2e.sh; GPU_E2E=0 skips it) and then
# the check's table; both also go to $OUT/gpu_e2e.txt and $OUT/gpu_check.txt when $OUT is set.
#   bash benchmarks/gpu_check_run.sh [BUNDLE] [extra gpu_check.py arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
BUNDLE=${1:-build/gpu_bundle}
shift || true
PY=${PYTHON:-python3}
SITE=$(mktemp -d)
"$PY" -m pip install --quiet --no-index --no-deps --target "$SITE" "$BUNDLE"/wheels/*.whl
export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}" MUJOCO_GL=egl PYOPENGL_PLATFORM=egl
nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv || true
scene=()
if [ -f "$BUNDLE/lift_scene.tgz" ]; then
    tar xzf "$BUNDLE/lift_scene.tgz" -C "$SITE" && scene=(--scene "$SITE/lift_scene")
fi
budget=360
if [ -f "$BUNDLE/sim_lite.txz" ] && [ "${GPU_E2E:-1}" != 0 ]; then
    # first the entry points end to end (~3 min), then the table with what is left of ~8 min
    tar xJf "$BUNDLE/sim_lite.txz" -C "$SITE"
    timeout 240 bash benchmarks/gpu_e2e.sh cuda:0 "$(mktemp -d)" 2>&1 | tee "${OUT:-/tmp}/gpu_e2e.txt" || true
    budget=170
fi
timeout $((budget + 100)) "$PY" benchmarks/gpu_check.py --device cuda:0 --budget-s $budget "${scene[@]}" "$@" \
    2>"${OUT:-/tmp}/gpu_check.err" | tee "${OUT:-/tmp}/gpu_check.txt"
