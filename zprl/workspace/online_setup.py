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


def read_base_eval_log(path: str, base_policy_sha256: str, evaluator, n_action_steps: int) -> dict:
    """eval_base.py's eval_log.json (training.base_eval_log), checked to be the evaluation the online
    loop would run at step 0: the same weights, seeds, episode count, episode cut, chunk length, env
    processes (eval_base.py --n_envs: each batch of episodes seeds the base's flow noise) and the
    base's own N(0, I) flow start (not an eval_base.py --noise_scale probe).
    Then the loop logs it as that evaluation instead of rolling the base out a second time."""
    import json
    import os

    key = f"training.base_eval_log={path}"
    if not os.path.isfile(path):
        raise UserInputError(f"{key}: no such file; pass the eval_log.json eval_base.py wrote for this base, "
                             "or null to evaluate the base in the online run")
    try:
        with open(path) as f:
            got = json.load(f)
    except ValueError as e:
        raise UserInputError(f"{key}: not an eval_log.json written by eval_base.py (not JSON: {e})") from e
    # the fields every eval_log.json has
    missing = [k for k in ("mean_score", "episodes") if not isinstance(got, dict) or k not in got]
    if missing:
        raise UserInputError(f"{key}: not an eval_log.json written by eval_base.py (no {', '.join(missing)})")
    from zprl.env.runner import effective_n_envs

    n = int(evaluator.n_test)
    want = {"base_policy_sha256": base_policy_sha256, "n_episodes": n,
            "test_start_seed": int(evaluator.test_start_seed), "max_steps": int(evaluator.max_steps),
            "n_action_steps": int(n_action_steps), "n_envs": effective_n_envs(evaluator.n_envs, n),
            "noise_scale": 1.0}
    got = {"noise_scale": 1.0, **got}  # logs written before eval_base.py --noise_scale started from N(0, I)
    diff = [f"{k} {got.get(k)!r} (this run: {v!r})" for k, v in want.items() if got.get(k) != v]
    if diff:
        raise UserInputError(f"{key} is not the evaluation this run would make at step 0: {'; '.join(diff)}; "
                             "rerun eval_base.py with this run's base and settings, or set it to null")
    return got
