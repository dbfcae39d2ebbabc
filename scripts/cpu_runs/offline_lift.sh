#!/bin/bash
# CPU base policy for low-dim lift: small U-Net, batch 128, lr 3e-4, rollouts every 5 epochs on 20 test seeds.
cd "$(dirname "$0")/../.." && exec .venv/bin/python train.py --config-name=train_flow_match_vib_unet_image_workspace \
  task=lift_lowdim_abs training.device=cpu training.seed=0 task.dataset.seed=0 exp_name=cpu_base \
  policy.down_dims=[32,64,128] dataloader.batch_size=128 optimizer.lr=3e-4 training.lr_warmup_steps=50 \
  training.num_epochs=15 training.rollout_every=5 training.checkpoint_every=5 \
  training.val_every=5 dataloader.num_workers=0 val_dataloader.num_workers=0 dataloader.pin_memory=false \
  val_dataloader.pin_memory=false task.env_runner.n_train=0 task.env_runner.n_train_vis=0 \
  task.env_runner.n_test=20 task.env_runner.n_test_vis=2 logging.mode=disabled \
  hydra.run.dir=data/runs/offline_lift_lowdim
