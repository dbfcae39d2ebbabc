"""Held-out evaluation shared by eval_base.py and eval_sum.py: same seeds, same eval_log.json."""

from __future__ import annotations

import json
import os

import hydra
from omegaconf import OmegaConf

from zprl.common.errors import UserInputError


def check_output_dir(output_dir: str) -> None:
    """Refuse to overwrite an earlier evaluation (before anything is written)."""
    if os.path.exists(os.path.join(output_dir, "eval_log.json")):
        raise UserInputError(f"{output_dir}/eval_log.json exists; choose another -o directory or remove it")


def evaluate(policy, runner_cfg, env_meta: dict, output_dir: str, n_episodes: int, n_vis: int = 10,
             extra: dict | None = None, **runner_overrides) -> dict:
    """Roll out ``policy`` on test seeds from the runner's test_start_seed and write eval_log.json."""
    os.makedirs(output_dir, exist_ok=True)
    runner_cfg = OmegaConf.merge(runner_cfg, {
        "n_train": 0, "n_train_vis": 0, "n_test": n_episodes, "n_test_vis": min(n_vis, n_episodes),
        **runner_overrides})
    runner = hydra.utils.instantiate(runner_cfg, output_dir=output_dir, env_meta=env_meta)
    result = runner.run(policy)
    episodes = [e for e in result["episodes"] if str(e.get("prefix", "test")).startswith("test")]
    log = {
        "mean_score": float(result["test/mean_score"]),
        "n_episodes": len(episodes),
        # smoothness of the executed actions, pooled over episodes (zprl/rl/smoothness.py)
        "action_delta": result.get("test/action_delta"),
        "action_jerk": result.get("test/action_jerk"),
        "test_start_seed": int(runner_cfg.test_start_seed),
        "max_steps": int(runner_cfg.max_steps),
        "n_envs": int(runner.n_envs),  # each batch of n_envs episodes seeds the policy's noise
        "episodes": episodes,
        "videos": [os.path.relpath(p, output_dir) for p in result.get("videos", [])],
        **(extra or {}),
    }
    tmp = os.path.join(output_dir, ".eval_log.json.tmp")
    with open(tmp, "w") as f:
        json.dump(log, f, indent=2)
    os.replace(tmp, os.path.join(output_dir, "eval_log.json"))
    return log
