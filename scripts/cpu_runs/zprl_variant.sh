#!/bin/bash
# One ZPRL evidence run with extra overrides beside the committed pair (same base, same settings as
# seed_pair.sh's ZPRL run, lambda computed per base), collected as its own method in the task's page.
#   usage: scripts/cpu_runs/zprl_variant.sh TASK SEED NAME OVERRIDES...
#   e.g.   scripts/cpu_runs/zprl_variant.sh can 1 zprl_match_cap0 steering.posterior_logvar_max=0
#          (the posterior capped at the prior's width while collecting: docs/steering.md)
# The base must exist (seed_pair.sh builds it). Interrupted? The same command continues the run exactly
# from its latest checkpoint on a machine that kept data/. Logs: data/logs/TASK_NAME_SEED.log.
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/cpu_runs/bases.sh  # LIFT_BASE, CAN_BASE
TASK=$1; SEED=$2; NAME=$3; shift 3
case $TASK in
  lift) BASE=$LIFT_BASE ;;
  can)  BASE=$CAN_BASE ;;
  *) echo "zprl_variant.sh: unknown task '$TASK' (lift or can)" >&2; exit 2 ;;
esac
[ -f "$BASE" ] || { echo "zprl_variant.sh: no $TASK base at $BASE; build it with scripts/cpu_runs/seed_pair.sh $TASK $SEED" >&2; exit 2; }
SAC=c${CRITICS:-10}u${UTD:-1}
RUN=data/runs/evidence/$TASK/${NAME}_$SAC/$SEED
mkdir -p data/logs
OUT=$RUN bash scripts/cpu_runs/evidence.sh "$TASK" zprl "$SEED" "$BASE" steering.res_scale=match_action_residual \
  training.resume=true "$@" >> "data/logs/${TASK}_${NAME}_${SEED}.log" 2>&1
bash scripts/cpu_runs/collect_results.sh "$RUN" "${RESULTS:-docs/results/$TASK}/$NAME/$SEED"
