# Sourced by the evidence scripts: where each task's base policy lives, so that every script steers the same one.
#   lift: scripts/cpu_runs/offline_lift_evidence.sh builds it (its output directory is the peer check's lr 1e-3 run)
#   can:  scripts/cpu_runs/can_base.sh at lr 1e-3 for 100 epochs (seed_pair.sh can SEED builds it); its 50-seed
#         evaluation lands beside it in ${CAN_BASE_RUN}_eval
LIFT_BASE=data/peer_check/ours_lr1e-3/checkpoints/latest.ckpt
CAN_BASE_RUN=data/runs/offline_can_lowdim_lr1e-3_e100
CAN_BASE=$CAN_BASE_RUN/checkpoints/latest.ckpt
CAN_BASE_EVAL=${CAN_BASE_RUN}_eval/eval_log.json

# The can base as the can evidence runs steer it (docs/cpu_runs.md): 100 epochs at lr 1e-3, then its score on
# the 50 held-out seeds beside it; an interrupted build continues from its last 5-epoch checkpoint.
#   build_can_base THREADS   (torch threads, and as many workers for the data: 2 on otherwise idle cores, ~50 min
#                             there; 1 beside another run, as evidence_queue.sh's second lane)
build_can_base() {
  WORKERS=$1 RUN=$CAN_BASE_RUN bash scripts/cpu_runs/can_base.sh optimizer.lr=1e-3 training.num_epochs=100 \
    training.rollout_every=100 training.checkpoint_every=5 training.val_every=5 "training.num_threads=$1" \
    > data/logs/can_base_e100_driver.log 2>&1
}

# The lift base (base B on AVX2-only machines, docs/cpu_runs.md), ~22 min on 2 cores.
build_lift_base() {
  bash scripts/cpu_runs/offline_lift_evidence.sh > data/logs/lift_base.log 2>&1
}
