#!/bin/bash
# ZPRL online from the CPU lift base: 4 train envs, 4 eval envs (memory: ~1 GB RSS per env worker), 50 held-out eval episodes (seeds 100000+).
cd "$(dirname "$0")/../.." && exec .venv/bin/python train.py --config-name=train_online_vib_robomimic_workspace \
  training.seed=0 exp_name=cpu_zprl training.device=cpu online_task=lift_lowdim_abs \
  online_task.base_ckpt=data/runs/offline_lift_lowdim/checkpoints/latest.ckpt \
  online_task.n_envs=4 online_task.n_eval_envs=4 online_task.n_eval_episodes=50 online_task.n_eval_vis=2 \
  online_task.render_size=[128,128] training.total_agent_steps=20000 training.eval_every=10000 \
  training.checkpoint_every=5000 logging.mode=disabled hydra.run.dir=data/runs/online_lift_zprl
