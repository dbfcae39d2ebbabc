#!/usr/bin/env bash
# On the lent GPU machine (no network), from the repository root, with build/gpu_bundle carried along:
# installs the bundle's wheels into a private folder (nothing of the machine's Python is changed) and runs
# the check on one GPU; the table also goes to $OUT/gpu_check.txt when $OUT is set.
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
timeout 470 "$PY" benchmarks/gpu_check.py --device cuda:0 --budget-s 360 "${scene[@]}" "$@" 2>"${OUT:-/tmp}/gpu_check.err" \
    | tee "${OUT:-/tmp}/gpu_check.txt"
