"""What ``make demo`` runs (zprl/demo.py): the sizes of every stage and where each stage's output goes.

``DemoPlan()`` is the default, sized for ~30 minutes on 2 CPU cores; ``FAST`` a smoke version of every
stage (``python -m zprl.demo --fast``, and the slow end-to-end test).
"""

from __future__ import annotations

import dataclasses
import os

TASK = "lift"
EVAL_START_SEED = 100000  # the held-out seeds of eval_base.py / eval_sum.py


@dataclasses.dataclass(frozen=True)
class DemoPlan:
    """Sizes of every stage. The default fits ~30 minutes on 2 CPU cores."""

    num_demos: int = 40
    # offline: the brief's CPU-sized U-Net; ~25 steps per epoch on 40 demos
    down_dims: tuple = (32, 64, 128)
    batch_size: int = 128
    lr: float = 1e-3          # 3e-4 scored 0.38 and 1e-3 0.60 at the same 3,000 steps (docs/peer_check.md)
    num_epochs: int = 80
    # One torch thread: the choice that is never slow. Two threads with sleeping idle threads (_run's
    # OMP_WAIT_POLICY=PASSIVE) were 1.4x faster on one 2-core machine and 0.73x on another; spinning ones
    # 1.56x on idle cores but 0.33x beside one busy core (benchmarks/bench_threads.py, docs/performance.md).
    offline_threads: int = 1
    max_train_steps: int | None = None  # per epoch; None = the whole dataset
    checkpoint_every: int = 10          # epochs; what an interrupted run resumes from
    encoder_dims: tuple = (256, 256)
    # evaluation: held-out seeds from 100000, episodes cut at max_steps (lift demos take ~100)
    eval_episodes: int = 50            # the held-out protocol's 50 seeds: +-0.06 binomial s.e. at 25%
    eval_vis: int = 4
    max_steps: int = 200
    n_eval_envs: int = 2
    # online ZPRL: one agent step = one chunk of 4 env steps
    n_envs: int = 4
    total_agent_steps: int = 3200
    warmup_agent_steps: int = 200
    training_freq: int = 100
    rl_batch_size: int = 256
    eval_every: int = 1600       # agent steps: evaluations at 0, 1600, 3200
    sac_hidden: tuple = (256, 256, 256)
    # CPU-sized SAC (the config defaults are the authors' GPU settings, 10 critics x UTD 5: one update at
    # batch 256 costs ~70 ms with 10 critics and ~17 ms with 2 on one core here)
    n_critics: int = 2
    utd: float = 1
    device: str = "cpu"  # training and evaluation (python -m zprl.demo --device cuda:0); sims stay on CPU

    def offline_overrides(self, dataset_path: str, run_dir: str) -> list[str]:
        o = {
            "task": f"{TASK}_lowdim_abs", "task.dataset_path": dataset_path, "training.device": self.device,
            "training.num_threads": self.offline_threads,
            "training.seed": 0, "task.dataset.seed": 0, "exp_name": "demo", "logging.mode": "disabled",
            "policy.down_dims": _list(self.down_dims), "dataloader.batch_size": self.batch_size,
            "val_dataloader.batch_size": self.batch_size, "optimizer.lr": self.lr,
            "training.lr_warmup_steps": 50, "training.num_epochs": self.num_epochs,
            "training.max_train_steps": "null" if self.max_train_steps is None else self.max_train_steps,
            "training.max_val_steps": 4,
            # the held-out evaluation is its own stage: roll out once, at the end, briefly
            "training.rollout_every": self.num_epochs, "training.checkpoint_every": self.checkpoint_every,
            "training.val_every": self.checkpoint_every, "training.resume": "true",
            "task.obs_encoder.hidden_dims": _list(self.encoder_dims),
            "dataloader.num_workers": 0, "val_dataloader.num_workers": 0,
            "dataloader.pin_memory": "false", "val_dataloader.pin_memory": "false",
            "task.env_runner.n_train": 0, "task.env_runner.n_train_vis": 0, "task.env_runner.n_test": 2,
            "task.env_runner.n_test_vis": 1, "task.env_runner.n_envs": 2,
            "task.env_runner.max_steps": self.max_steps, "task.env_runner.render_size": "[128,128]",
            "hydra.run.dir": run_dir,
        }
        return [f"{k}={v}" for k, v in o.items()]

    def online_overrides(self, base_ckpt: str, run_dir: str, base_eval_log: str | None = None) -> list[str]:
        o = {
            "online_task": f"{TASK}_lowdim_abs", "online_task.base_ckpt": base_ckpt, "training.device": self.device,
            "training.num_threads": 1,  # the sim workers need the other core
            "training.seed": 0, "exp_name": "demo", "logging.mode": "disabled", "training.resume": "true",
            "online_task.n_envs": self.n_envs, "online_task.n_eval_envs": self.n_eval_envs,
            "online_task.n_eval_episodes": self.eval_episodes, "online_task.n_eval_vis": min(2, self.eval_vis),
            "online_task.max_steps": self.max_steps, "online_task.render_size": "[128,128]",
            "training.total_agent_steps": self.total_agent_steps,
            "training.warmup_agent_steps": self.warmup_agent_steps,
            "training.training_freq": self.training_freq, "training.batch_size": self.rl_batch_size,
            "training.buffer_size": max(10 * self.total_agent_steps, 1000),
            "training.eval_every": self.eval_every, "training.checkpoint_every": self.eval_every,
            # the eval-ZPRL stage (eval_sum.py) scores the final checkpoint on the same 50 seeds: not twice
            "training.eval_at_end": "false",
            "training.log_every": self.training_freq,
            "sac.actor_hidden": _list(self.sac_hidden), "sac.critic_hidden": _list(self.sac_hidden),
            "sac.n_critics": self.n_critics, "training.utd": self.utd,
            # the eval-base stage's 50 episodes are the online run's step-0 evaluation: not rolled out twice
            "training.base_eval_log": base_eval_log or "null",
            "hydra.run.dir": run_dir,
        }
        return [f"{k}={v}" for k, v in o.items()]


# A smoke version of every stage (a few minutes): the slow end-to-end test runs it.
FAST = DemoPlan(num_demos=4, down_dims=(16, 32), batch_size=16, num_epochs=2, max_train_steps=3,
                checkpoint_every=1, encoder_dims=(32,), eval_episodes=2, eval_vis=1, max_steps=40,
                n_eval_envs=1, n_envs=2, total_agent_steps=32, warmup_agent_steps=8, training_freq=8,
                rl_batch_size=16, eval_every=16, sac_hidden=(32, 32))


def _list(values) -> str:
    return "[" + ",".join(str(v) for v in values) + "]"


class DemoPaths:
    def __init__(self, out: str):
        self.out = os.path.abspath(out)
        self.dataset = os.path.join(self.out, "data", "low_dim_v141_subset_abs.hdf5")
        self.offline = os.path.join(self.out, "offline")
        self.base_ckpt = os.path.join(self.offline, "checkpoints", "latest.ckpt")
        self.eval_base = os.path.join(self.out, "eval_base")
        self.online = os.path.join(self.out, "online")
        self.eval_zprl = os.path.join(self.out, "eval_zprl")
        self.curve = os.path.join(self.out, "learning_curve.png")
        self.timings = os.path.join(self.out, "timings.json")
        self.summary = os.path.join(self.out, "summary.json")

    def online_ckpt(self, agent_steps: int) -> str:
        return os.path.join(self.online, "checkpoints", f"step_{agent_steps:06d}.ckpt")
