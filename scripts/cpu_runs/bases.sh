# Sourced by the evidence scripts: where each task's base policy lives, so that every script steers the same one.
#   lift: scripts/cpu_runs/offline_lift_evidence.sh builds it (its output directory is the peer check's lr 1e-3 run)
#   can:  scripts/cpu_runs/can_base.sh at lr 1e-3 for 100 epochs (seed_pair.sh can SEED builds it); its 50-seed
#         evaluation lands beside it in ${CAN_BASE_RUN}_eval
LIFT_BASE=data/peer_check/ours_lr1e-3/checkpoints/latest.ckpt
CAN_BASE_RUN=data/runs/offline_can_lowdim_lr1e-3_e100
CAN_BASE=$CAN_BASE_RUN/checkpoints/latest.ckpt
