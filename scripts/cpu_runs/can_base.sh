#!/bin/bash
# The low-dim can base for the steering evidence, from a fresh checkout, in one command:
#   1. the default can dataset if it is missing (python -m zprl.data.prepare: 100 scripted mixed-quality
#      demos, converted to absolute actions and replayed; ~27 min on 2 cores),
#   2. the CPU-sized base (scripts/cpu_runs/offline_can.sh, ~30-40 min; continued if a session's end cut it),
#   3. its score on the 50 held-out seeds (eval_base.py, seeds 100000-100049, ~6 min),
# with the CPU kernels pinned as for every evidence script (isa_env.sh). Then its weights hash, which the
# online runs from it write as base_policy.sha256, and its demos' hashes (zprl.common.fingerprint; compare across machines).
#   usage: scripts/cpu_runs/can_base.sh [OVERRIDES...]   (logs: data/logs/can_prepare.log, $NAME.log, ${NAME}_eval.log)
# Output: $RUN/checkpoints/latest.ckpt and ${RUN}_eval/eval_log.json (RUN=data/runs/offline_can_lowdim unless set).
# A variant: RUN=data/runs/offline_can_lowdim_lr1e-3 scripts/cpu_runs/can_base.sh optimizer.lr=1e-3
# (the overrides are offline_can.sh's; the last value of a key wins).
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/cpu_runs/isa_env.sh
export OMP_NUM_THREADS=1
PY=.venv/bin/python
mkdir -p data/logs
# prepare skips files that are complete (and says so)
$PY -m zprl.data.prepare --task can --obs low_dim --workers "${WORKERS:-1}" > data/logs/can_prepare.log 2>&1
RUN=${RUN:-data/runs/offline_can_lowdim}
NAME=$(basename "$RUN")
CKPT=$RUN/checkpoints/latest.ckpt
EVAL=${RUN}_eval
# resume: an interrupted base continues from its last checkpoint, a finished one is left as it is (no epochs left)
bash scripts/cpu_runs/offline_can.sh training.resume=True "$@" hydra.run.dir="$RUN" >> "data/logs/${NAME}.log" 2>&1
rm -rf "$EVAL"  # eval_base.py refuses to overwrite an evaluation; this one is redone from the weights
$PY eval_base.py -c "$CKPT" -o "$EVAL" -d cpu -n 50 --n_vis 1 --n_envs 2 > "data/logs/${NAME}_eval.log" 2>&1
$PY -m zprl.common.fingerprint "$CKPT" data_local/robomimicv030/can/mh/low_dim_v141_subset_abs.hdf5
grep -h 'mean score' "data/logs/${NAME}_eval.log"
