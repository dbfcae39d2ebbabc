#!/bin/bash
# One ZPRL evidence run with extra overrides beside the committed pair (same base, same settings as
# seed_pair.sh's ZPRL run, lambda computed per base), collected as its own method in the task's page.
#   usage: scripts/cpu_runs/zprl_variant.sh TASK SEED NAME OVERRIDES...
#   e.g.   scripts/cpu_runs/zprl_variant.sh can 1 zprl_match_cap0 steering.posterior_logvar_max=0
#          (the posterior capped at the prior's width while collecting: docs/steering.md)
# A missing base is built first, as seed_pair.sh does. Interrupted? The same command continues the base or
# the run exactly from its latest checkpoint on a machine that kept data/. Logs: data/logs/TASK_NAME_SEED.log.
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/cpu_runs/bases.sh  # the bases' paths; build_lift_base, build_can_base
TASK=$1; SEED=$2; NAME=$3; shift 3
mkdir -p data/logs
case $TASK in  # the base as seed_pair.sh builds it, where it is missing (logs: data/logs/lift_base.log, can_base_e100_driver.log)
  lift) BASE=$LIFT_BASE; [ -f "$BASE" ] || build_lift_base ;;
  can)  BASE=$CAN_BASE; [ -f "$CAN_BASE_EVAL" ] || build_can_base 2 ;;
  *) echo "zprl_variant.sh: unknown task '$TASK' (lift or can)" >&2; exit 2 ;;
esac
SAC=c${CRITICS:-10}u${UTD:-1}
RUN=data/runs/evidence/$TASK/${NAME}_$SAC/$SEED
OUT=$RUN bash scripts/cpu_runs/evidence.sh "$TASK" zprl "$SEED" "$BASE" steering.res_scale=match_action_residual \
  training.resume=true "$@" >> "data/logs/${TASK}_${NAME}_${SEED}.log" 2>&1
bash scripts/cpu_runs/collect_results.sh "$RUN" "${RESULTS:-docs/results/$TASK}/$NAME/$SEED"
