#!/bin/bash
# One lift evidence seed for both interfaces, from a fresh checkout, in one command: builds the lift base
# if it is missing (scripts/cpu_runs/offline_lift_evidence.sh, ~22 min on 2 cores), then runs ZPRL
# (lambda 0.8) and the action residual side by side (scripts/cpu_runs/evidence.sh, 100k env steps each,
# ~130-180 min for the pair on 2 cores), and collects both runs' logs into docs/results/lift/ (RESULTS):
# runs from the base as the AVX2-pinned scripts build it ("base B": weights sha256 703181020ae4..., 0.76 on
# the held-out seeds; docs/cpu_runs.md, "The lift base depends on the machine"). Check the new runs'
# base_policy.sha256 against the committed ones before pooling: the report refuses other bases.
# Interrupted (a session's end)? Run the same command again on a machine that kept data/: each run
# continues exactly from its latest checkpoint (training.resume=true; a run without one starts afresh).
#   usage: scripts/cpu_runs/lift_seed_pair.sh SEED        (logs: data/logs/lift_pair_SEED_*.log)
set -euo pipefail
cd "$(dirname "$0")/../.."
SEED=$1
RESULTS=${RESULTS:-docs/results/lift}
BASE=data/peer_check/ours_lr1e-3/checkpoints/latest.ckpt
mkdir -p data/logs
[ -f "$BASE" ] || bash scripts/cpu_runs/offline_lift_evidence.sh > data/logs/lift_base.log 2>&1
Z=data/runs/evidence/lift/zprl_lam08_c10u1/$SEED
A=data/runs/evidence/lift/action_residual_c10u1/$SEED
OUT=$Z bash scripts/cpu_runs/evidence.sh lift zprl "$SEED" "$BASE" steering.res_scale=0.8 training.resume=true \
  >> "data/logs/lift_pair_${SEED}_zprl.log" 2>&1 &
OUT=$A bash scripts/cpu_runs/evidence.sh lift action_residual "$SEED" "$BASE" training.resume=true \
  >> "data/logs/lift_pair_${SEED}_ar.log" 2>&1 &
wait
bash scripts/cpu_runs/collect_results.sh "$Z" "$RESULTS/zprl_lambda0.8/$SEED"
bash scripts/cpu_runs/collect_results.sh "$A" "$RESULTS/action_residual/$SEED"
