#!/usr/bin/env bash
# The project's real entry points end to end on one GPU, at smoke sizes (training.debug), image
# observations: scripted lift demos rendered through EGL -> absolute actions -> offline training
# (ResNet18 encoders, VIB, flow U-Net) -> eval_base.py -> online steering with each interface
# (train.py, online workspace) -> eval_sum.py. Every torch step runs on DEVICE; the simulators run
# in CPU processes as always. No videos (ffmpeg does not travel to the GPU machine: --n_vis 0).
#
#   bash benchmarks/gpu_e2e.sh [DEVICE] [WORK_DIR]      (default cuda:0, a temp dir; ~3 min on one GPU)
#
# Needs robosuite, robomimic and the rest of the training stack importable (on the lent GPU machine,
# benchmarks/gpu_check_run.sh installs them from build/gpu_bundle first). Prints one line per step
# (ok/FAILED, seconds, the log's last lines on failure); the last line is `headline: gpu_e2e_steps_ok=<ok>/<steps>`.
# A step whose input a failed step should have made is skipped and counted as failed.
set -uo pipefail
cd "$(dirname "$0")/.."
DEVICE=${1:-cuda:0}
W=${2:-$(mktemp -d)}
mkdir -p "$W"
PY=${PYTHON:-python3}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-4} HYDRA_FULL_ERROR=1
ok=0; total=0

step() {  # step NAME NEEDS_FILE -- command...
    local name=$1 needs=$2; shift 3
    total=$((total + 1))
    if [ -n "$needs" ] && [ ! -e "$needs" ]; then
        printf '%-34s %-8s %6s  %s\n' "$name" skipped - "needs $needs"; return
    fi
    local t0=$SECONDS
    if "$@" >"$W/$name.log" 2>&1; then
        ok=$((ok + 1)); printf '%-34s %-8s %5ss\n' "$name" ok $((SECONDS - t0))
    else
        printf '%-34s %-8s %5ss  (its log, last lines:)\n' "$name" FAILED $((SECONDS - t0))
        grep -v '^\s*$' "$W/$name.log" | tail -n 15 | cut -c1-240 | sed 's/^/    | /'
    fi
}

echo "gpu_e2e: device $DEVICE, work dir $W"
DATA=$W/lift_image_abs.hdf5
BASE=$W/offline/checkpoints/latest.ckpt
step data_lift_image "" -- "$PY" -m zprl.data.prepare --task lift --obs image --num-demos 4 --seed 0 \
    --output "$DATA" --workers 2
step offline_image_debug "$DATA" -- "$PY" train.py --config-name=train_flow_match_vib_unet_image_workspace \
    task=lift_image_abs task.dataset_path="$DATA" training.debug=true training.device="$DEVICE" \
    logging.mode=disabled task.env_runner.n_train_vis=0 task.env_runner.n_test_vis=0 hydra.run.dir="$W/offline"
step eval_base "$BASE" -- "$PY" eval_base.py -c "$BASE" -o "$W/eval_base" -d "$DEVICE" -n 2 --n_vis 0 --n_envs 2
for method in zprl action_residual noise embedding_residual; do
    step "online_${method}_debug" "$BASE" -- "$PY" train.py --config-name=train_online_vib_robomimic_workspace \
        online_task=lift_image_abs online_task.base_ckpt="$BASE" steering="$method" training.debug=true \
        training.device="$DEVICE" logging.mode=disabled online_task.n_eval_vis=0 hydra.run.dir="$W/online_$method"
done
step eval_sum_zprl "$W/online_zprl/checkpoints/latest.ckpt" -- "$PY" eval_sum.py \
    -c "$W/online_zprl/checkpoints/latest.ckpt" -o "$W/eval_sum" -d "$DEVICE" -n 2 --n_vis 0 --n_envs 2
echo "headline: gpu_e2e_steps_ok=$ok/$total"
