#!/bin/bash
# CPU base policy for low-dim can within 30 minutes on 2 cores: small U-Net, batch 128, lr 3e-4, 36 epochs
# (6,768 steps at ~0.2 s with one torch thread), rollouts on 20 test seeds after epochs 18 and 36.
# Extra arguments are Hydra overrides, e.g. training.resume=True to continue a stopped run.
cd "$(dirname "$0")/../.." && source scripts/cpu_runs/isa_env.sh && exec .venv/bin/python train.py --config-name=train_flow_match_vib_unet_image_workspace \
  task=can_lowdim_abs training.device=cpu training.num_threads=1 training.seed=0 task.dataset.seed=0 exp_name=cpu_base \
  policy.down_dims=[32,64,128] dataloader.batch_size=128 optimizer.lr=3e-4 training.lr_warmup_steps=50 \
  training.num_epochs=36 training.rollout_every=18 training.checkpoint_every=6 \
  training.val_every=6 dataloader.num_workers=0 val_dataloader.num_workers=0 dataloader.pin_memory=false \
  val_dataloader.pin_memory=false task.env_runner.n_train=0 task.env_runner.n_train_vis=0 \
  task.env_runner.n_test=20 task.env_runner.n_test_vis=2 logging.mode=disabled \
  hydra.run.dir=data/runs/offline_can_lowdim "$@"
