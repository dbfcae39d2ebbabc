#!/bin/bash
# One run of the steering comparison at an evidence budget (issue "Evidence ..."), CPU-sized.
#   usage: scripts/cpu_runs/evidence.sh TASK METHOD SEED BASE_CKPT [EXTRA_OVERRIDES...]
#   e.g.   scripts/cpu_runs/evidence.sh lift zprl 0 data/demo/offline/checkpoints/latest.ckpt
# Output: data/runs/evidence/<task>/<method>/<seed>/ (logs.json.txt, .hydra/, checkpoints/).
#
# The authors' online settings except where 2 CPU cores forbid them, identical for every interface:
# - SAC: CRITICS (default 10, the authors' REDQ ensemble) critics, UTD (default 1) updates per
#   transition, batch 256, 3x256 MLPs. One update costs ~73 ms with 10 critics and ~20 ms with 2 on one
#   idle core here, so the authors' UTD 5 would cost ~6 min of updates per 1,000 agent steps; UTD 1 keeps
#   the ensemble, which the measurements say matters more: from the same lift base (0.60), 2 critics x
#   UTD 2 overestimated (mean Q 0.46 -> 0.62 over 6k-18k env steps, eval 0.56 at 10k) while 10 critics x
#   UTD 1 held Q at ~0.46 and scored 0.74 at 10k (docs/cpu_runs.md).
# - 4 training envs, 25,000 agent steps = 100,000 env steps (AGENT_STEPS), rounds of 1,000
#   transitions, warm-up 1,000 agent steps (the authors' 2,000 is 1/125 of their 250k budget; this
#   keeps 1/25), evaluations every 2,500 agent steps on the 50 held-out seeds (100000-100049).
# - Episodes cut at MAX_STEPS env steps (lift 200: the demos take ~100; can 400).
# - lambda (zprl) is the task's online default (0.2, the authors' can/square value) unless an override
#   sets it: the lift evidence runs pass steering.res_scale=0.8, the reach of the action residual
#   (steering.res_scale=match_action_residual picks 0.825 for that base; docs/cpu_runs.md), e.g.
#     scripts/cpu_runs/evidence.sh lift zprl 1 BASE steering.res_scale=0.8
#   The action residual's progressive horizon H is 1/5 of the run after warm-up, as the authors' 50k is of 250k.
#   The embedding residual (no-bottleneck ablation) runs at the residual's reach too
#   (steering.res_scale=match_action_residual; the authors' 0.025 moves the lift chunk a tenth as far: docs/steering.md).
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/cpu_runs/isa_env.sh  # CPU kernels pinned to AVX2: numbers that reproduce across machines
TASK=$1; METHOD=$2; SEED=$3; BASE=$(realpath "$4"); shift 4
CRITICS=${CRITICS:-10}; UTD=${UTD:-1}; AGENT_STEPS=${AGENT_STEPS:-25000}; N_ENVS=${N_ENVS:-4}
case $TASK in lift) MAX_STEPS=${MAX_STEPS:-200} ;; *) MAX_STEPS=${MAX_STEPS:-400} ;; esac
WARMUP=${WARMUP:-1000}
OUT=${OUT:-data/runs/evidence/$TASK/$METHOD/$SEED}
extra=()
if [ "$METHOD" = action_residual ]; then extra+=(steering.progressive_steps=$(( (AGENT_STEPS - WARMUP) / 5 ))); fi
if [ "$METHOD" = embedding_residual ]; then extra+=(steering.res_scale=match_action_residual); fi
OMP_NUM_THREADS=1 exec .venv/bin/python train.py --config-name=train_online_vib_robomimic_workspace \
  online_task="${TASK}_lowdim_abs" online_task.base_ckpt="$BASE" steering="$METHOD" \
  training.seed="$SEED" training.device=cpu training.num_threads=1 exp_name="evidence_$METHOD" logging.mode=disabled \
  online_task.n_envs="$N_ENVS" online_task.n_eval_envs=2 online_task.n_eval_episodes=50 online_task.n_eval_vis=1 \
  online_task.max_steps="$MAX_STEPS" online_task.render_size=[128,128] \
  sac.n_critics="$CRITICS" training.utd="$UTD" training.total_agent_steps="$AGENT_STEPS" \
  training.warmup_agent_steps="$WARMUP" training.training_freq=1000 training.batch_size=256 \
  training.eval_every=2500 training.checkpoint_every=2500 training.log_every=500 \
  "${extra[@]}" hydra.run.dir="$OUT" "$@"
