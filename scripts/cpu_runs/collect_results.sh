#!/bin/bash
# Copy one online run's small raw logs into the repository so results pages regenerate from it alone:
# logs.json.txt, .hydra/config.yaml, base_policy.sha256 (the base's weights, which the page names),
# machine.json (the CPU and kernel pins of each start) and any diagnostics_*.json (never checkpoints or videos).
#   usage: scripts/cpu_runs/collect_results.sh RUN_DIR DEST_DIR
#   e.g.   scripts/cpu_runs/collect_results.sh data/runs/evidence/lift/zprl_c10u1/0 docs/results/lift/zprl_lambda0.8/3
#   then   python -m zprl.report docs/results/lift/* -o docs --name results_lift
set -euo pipefail
RUN=$1; DEST=$2
for f in "$RUN/logs.json.txt" "$RUN/.hydra/config.yaml"; do
  [ -f "$f" ] || { echo "collect_results: $f is missing; is $RUN an online run directory?" >&2; exit 2; }
done
mkdir -p "$DEST/.hydra"
cp "$RUN/logs.json.txt" "$DEST/"
cp "$RUN/.hydra/config.yaml" "$DEST/.hydra/"
shopt -s nullglob
for f in "$RUN"/base_policy.sha256 "$RUN"/machine.json "$RUN"/diagnostics_*.json; do
  if [ -f "$f" ]; then cp "$f" "$DEST/"; fi  # runs from before machine.json have none
done
echo "-> $DEST ($(wc -l < "$DEST/logs.json.txt") log records)"
