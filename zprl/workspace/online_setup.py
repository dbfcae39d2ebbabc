"""Online-run setup that is not the loop: the debug sizes and the check that a base fits its task."""

from __future__ import annotations

from omegaconf import DictConfig, open_dict

from zprl.common.errors import UserInputError


def apply_debug_overrides(cfg: DictConfig) -> None:
    """training.debug=True: 2 training envs, a few hundred env steps, one 2-episode evaluation."""
    with open_dict(cfg):
        t, o = cfg.training, cfg.online_task
        o.n_envs, o.n_eval_envs, o.n_eval_episodes = 2, 2, 2
        o.n_eval_vis = min(o.n_eval_vis, 1)  # 0 stays 0 (a machine without ffmpeg, or no videos wanted)
        o.max_steps = min(o.max_steps, 80)
        if "evaluator" in cfg:  # its keys follow online_task's, also when the config was resolved already
            e = cfg.evaluator
            e.n_envs, e.n_test, e.n_test_vis, e.max_steps = o.n_eval_envs, o.n_eval_episodes, o.n_eval_vis, o.max_steps
        t.total_agent_steps, t.warmup_agent_steps, t.training_freq = 64, 16, 16
        t.batch_size, t.buffer_size = 32, 1000
        t.eval_every = t.checkpoint_every = 64
        t.log_every = 16
        if "progressive_steps" in cfg.steering:  # action residual: full residual use within the run
            # (the ramp counts from the end of warm-up)
            cfg.steering.progressive_steps = min(cfg.steering.progressive_steps,
                                                 t.total_agent_steps - t.warmup_agent_steps)


def check_base_fits_task(online_task, base_cfg, env_meta: dict, base_ckpt: str) -> None:
    """The base policy must have been trained on this online task's robosuite env and observation
    type (a lift base cannot be steered on can, nor a low-dim base on image observations)."""
    from zprl.env.robomimic_env import ENV_NAMES

    want_env = ENV_NAMES.get(str(online_task.task))
    have_env = env_meta.get("env_name")
    trained = base_cfg.get("task", {}).get("name", have_env)
    if want_env is not None and have_env != want_env:
        raise UserInputError(f"online_task.base_ckpt={base_ckpt} was trained on {trained} (robosuite {have_env}), "
                             f"but online_task={online_task.name} runs {want_env}; pass a base checkpoint of "
                             f"{online_task.task} or the online_task of {trained}")
    images = any(m.get("type") == "rgb" for m in base_cfg.shape_meta.obs.values())
    if images != ("image" in str(online_task.name)):
        raise UserInputError(f"online_task.base_ckpt={base_ckpt} uses {'image' if images else 'low-dim'} "
                             f"observations ({trained}) but online_task={online_task.name} does not; pass the "
                             f"matching online_task (..._{'image' if images else 'lowdim'}_abs)")
