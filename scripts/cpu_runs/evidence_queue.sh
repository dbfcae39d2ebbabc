#!/bin/bash
# Every run the steering evidence still needs (issue "Evidence ..."), in two lanes that keep 2 cores busy,
# in one command that can be repeated: a run already collected under docs/results/ is skipped, an
# interrupted one continues from its last checkpoint (training.resume=true), a finished one is collected.
#   lane 1: can base (scripts/cpu_runs/can_base.sh, 100 epochs at lr 1e-3) -> can ZPRL seeds 1, 2
#           -> lift ZPRL at the authors' SAC settings (10 critics x UTD 5, 12,500 agent steps = 50k env steps)
#   lane 2: the lift base (base B, scripts/cpu_runs/offline_lift_evidence.sh) if it is missing -> lift
#           noise steering seeds 1, 2 -> lift embedding residual seeds 1-3 -> lift action residual at 10 critics x
#           UTD 5 (the pair's second half) (the lift runs only where the base's weights are base B's) ->
#           can action residual seeds 1, 2 (each waits for lane 1's can base)
# (Lift seeds 1-3 of ZPRL and the action residual at UTD 1: scripts/cpu_runs/seed_pair.sh lift SEED.)
#   usage: scripts/cpu_runs/evidence_queue.sh        (logs: data/logs/queue_lane{1,2}.log and one per run)
#          LANES=2 scripts/cpu_runs/evidence_queue.sh   (one lane, leaving a core for other work)
set -uo pipefail
cd "$(dirname "$0")/../.."
mkdir -p data/logs
source scripts/cpu_runs/bases.sh  # the bases' paths; build_lift_base, build_can_base

finished() {  # RUN_DIR ENV_STEPS: the run's log holds its last evaluation
  [ -f "$1/logs.json.txt" ] && .venv/bin/python - "$1/logs.json.txt" "$2" <<'EOF'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
sys.exit(0 if any("eval/success_rate" in r and r.get("env_steps") == int(sys.argv[2]) for r in rows) else 1)
EOF
}

run() {  # DEST TASK METHOD SEED BASE [OVERRIDES...]; AGENT_STEPS, CRITICS, UTD from the environment
  local dest=$1 task=$2 method=$3 seed=$4 base=$5; shift 5
  local steps=${AGENT_STEPS:-25000} tag
  tag=$(basename "$(dirname "$dest")")
  local out=data/runs/evidence/$task/${tag}_c${CRITICS:-10}u${UTD:-1}/$seed
  if [ -f "$dest/logs.json.txt" ]; then echo "$(date +%T) $dest: collected already"; return 0; fi
  if ! finished "$out" $((steps * 4)); then
    echo "$(date +%T) $dest: running $out"
    OUT=$out bash scripts/cpu_runs/evidence.sh "$task" "$method" "$seed" "$base" training.resume=true "$@" \
      >> "data/logs/queue_${task}_${tag}_${seed}.log" 2>&1 || { echo "$(date +%T) $out failed (see its log)"; return 1; }
  fi
  bash scripts/cpu_runs/collect_results.sh "$out" "$dest"
}

wait_for_can_base() {  # lane 1 builds it; gives up when lane 1 reports that it failed
  until [ -f "$CAN_BASE_EVAL" ]; do
    [ -f data/logs/can_base.failed ] && { echo "$(date +%T) can base failed: no can runs"; return 1; }
    sleep 60
  done
}

lane1() {
  rm -f data/logs/can_base.failed
  if [ ! -f "$CAN_BASE_EVAL" ]; then
    echo "$(date +%T) can base: $CAN_BASE_RUN"
    build_can_base 1 || { echo "can base failed"; touch data/logs/can_base.failed; return 1; }
  fi
  for seed in 1 2; do
    run docs/results/can/zprl_match/$seed can zprl $seed $CAN_BASE steering.res_scale=match_action_residual || return 1
  done
  CRITICS=10 UTD=5 AGENT_STEPS=12500 run docs/results/lift_utd5/zprl_lambda0.8/1 lift zprl 1 $LIFT_BASE \
    steering.res_scale=0.8
}

lift_base() {  # base B, rebuilt where a new machine lost it; its weights must be the committed runs' base
  if [ ! -f "$LIFT_BASE" ]; then
    echo "$(date +%T) lift base: $LIFT_BASE"
    build_lift_base || { echo "lift base failed (data/logs/lift_base.log)"; return 1; }
  fi
  local sha want
  sha=$(.venv/bin/python -m zprl.common.fingerprint "$LIFT_BASE" | awk '{print $3}')
  want=$(cat docs/results/lift/zprl_lambda0.8/1/base_policy.sha256)
  if [ "$sha" != "$want" ]; then  # another CPU vendor rebuilds other weights (docs/cpu_runs.md, "base C")
    echo "$(date +%T) lift base weights sha256 $sha are not the committed lift runs' ($want): lift runs skipped"
    return 1
  fi
}

lift_lane2() {
  lift_base || return 0  # not base B: its pages cannot take these runs; the can runs still can
  for seed in 1 2; do
    run docs/results/lift/noise/$seed lift noise $seed $LIFT_BASE || return 1
  done
  for seed in 1 2 3; do
    run docs/results/lift/embedding_residual/$seed lift embedding_residual $seed $LIFT_BASE || return 1
  done
  # last: the UTD 5 question already has a complete pair from base C (docs/results_lift_base_c_utd5.md)
  CRITICS=10 UTD=5 AGENT_STEPS=12500 run docs/results/lift_utd5/action_residual/1 lift action_residual 1 $LIFT_BASE
}

lane2() {
  lift_lane2 || return 1
  wait_for_can_base || return 1
  for seed in 1 2; do
    run docs/results/can/action_residual/$seed can action_residual $seed $CAN_BASE || return 1
  done
}

pids=()
for lane in ${LANES:-1 2}; do
  lane$lane >> "data/logs/queue_lane$lane.log" 2>&1 &
  pids+=($!)
done
RC=0
for pid in "${pids[@]}"; do wait "$pid" || RC=$?; done
exit $RC
