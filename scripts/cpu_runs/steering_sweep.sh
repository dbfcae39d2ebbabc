#!/bin/bash
# The steering comparison at CPU size: 4 interfaces x 3 seeds from one frozen base checkpoint.
#   usage: scripts/cpu_runs/steering_sweep.sh TASK BASE_CKPT OUT_DIR [LANE]   (TASK: lift | can | square)
# Two lanes run side by side (one core each), each a Hydra multirun per interface over seeds 0,1,2;
# then the report. LANE=a (zprl, action_residual) or b (noise, embedding_residual) runs one lane and
# no report, to share the machine with another job; the report command is the script's last line.
# Per run: 2 training envs, 4,000 agent steps (16,000 env steps; the first 400 agent steps are
# warm-up), UTD 1 in rounds of 100 transitions, evaluations at 0 / 2,000 / 4,000 agent steps on the
# same 50 held-out seeds (100000-100049) with episodes cut at MAX_STEPS (default 200) env steps.
set -euo pipefail
cd "$(dirname "$0")/../.."
TASK=$1; BASE=$(realpath "$2"); OUT=$3; LANE=${4:-both}
MAX_STEPS=${MAX_STEPS:-200}
mkdir -p "$OUT"

common=(--multirun --config-name=train_online_vib_robomimic_workspace
  online_task="${TASK}_lowdim_abs" online_task.base_ckpt="$BASE" training.device=cpu training.num_threads=1
  exp_name=steering_cpu logging.mode=disabled training.seed=0,1,2
  online_task.n_envs=2 online_task.n_eval_envs=2 online_task.n_eval_episodes=50 online_task.n_eval_vis=1
  online_task.max_steps="$MAX_STEPS" online_task.render_size=[128,128] online_task.res_scale=auto
  training.total_agent_steps=4000 training.warmup_agent_steps=400 training.training_freq=100
  training.eval_every=2000 training.checkpoint_every=2000 training.log_every=100 training.buffer_size=20000)

run() {  # run NAME EXTRA_OVERRIDES...: one interface over the three seeds
  local name=$1; shift
  OMP_NUM_THREADS=1 .venv/bin/python train.py "${common[@]}" hydra.sweep.dir="$OUT/$name" "$@" \
    > "$OUT/$name.log" 2>&1
}

# action_residual: reach full residual use 2,000 agent steps after warm-up, i.e. at 2,400 of 4,000 (the
# default H is 50,000 agent steps). noise needs no override: its actor's log-std range [-2, 2] starts it
# at std ~1, spread like the warm-up's N(0, I) noise (docs/steering.md).
lane_a() { run zprl steering=zprl && run action_residual steering=action_residual steering.progressive_steps=2000; }
lane_b() { run noise steering=noise && run embedding_residual steering=embedding_residual; }
case $LANE in
  a) lane_a; exit ;;
  b) lane_b; exit ;;
  both) lane_a & lane_b & wait ;;
  *) echo "error: LANE must be a, b or both, got '$LANE'" >&2; exit 2 ;;
esac
.venv/bin/python -m zprl.report "$OUT"/zprl "$OUT"/action_residual "$OUT"/noise "$OUT"/embedding_residual -o "$OUT/report"
