"""Generate robomimic-format demonstrations with scripted experts in robosuite.

    python -m zprl.data.generate_demos --task lift --num-demos 100 --quality mixed --obs low_dim \
        --seed 0 --output data_local/generated/lift_mh_low_dim.hdf5

Actions are stored as robomimic's delta OSC_POSE actions in [-1, 1] with the delta-action env
metadata, like robomimic's own releases; ``zprl.data.convert_abs`` turns them into absolute ones.
``--quality mixed`` imitates the multi-human sets with three operator tiers (see
``zprl/data/experts/tiers.py``); only successful episodes are kept.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

from zprl.common.errors import UserInputError, run_cli

GENERATOR = "zprl.data.generate_demos"
GENERATOR_VERSION = 1
QUALITIES = ("expert", "mixed")
# Per-task episode cap in control steps (robomimic's rollout horizons; can/square/transport as in the paper).
MAX_STEPS = {"lift": 400, "can": 500, "square": 400, "transport": 700}
# robomimic demos end shortly after the task is done.
STEPS_AFTER_SUCCESS = 5
VALID_FRACTION = 0.1


def obs_keys_for(task: str, obs: str) -> list[str]:
    from zprl.env.robomimic_env import CAMERAS, LOW_DIM_KEYS

    keys = list(LOW_DIM_KEYS)
    if task == "transport":
        keys += [k.replace("robot0_", "robot1_") for k in LOW_DIM_KEYS if k.startswith("robot0_")]
    if obs == "image":
        keys += [f"{cam}_image" for cam in CAMERAS[task]]
    return keys


def _check_args(task, num_demos, quality, obs, image_size, output, overwrite, max_attempts) -> str:
    from zprl.data.experts import EXPERTS
    from zprl.data.paths import TASKS

    if task not in TASKS:
        raise UserInputError(f"unknown task {task!r}: use --task one of {', '.join(TASKS)}")
    if task not in EXPERTS:
        raise UserInputError(f"--task {task}: no scripted expert yet; generate one of {', '.join(EXPERTS)}")
    if not isinstance(num_demos, int) or num_demos < 1:
        raise UserInputError(f"--num-demos {num_demos}: must be a positive integer")
    if quality not in QUALITIES:
        raise UserInputError(f"unknown quality {quality!r}: use --quality expert or mixed")
    if obs not in ("low_dim", "image"):
        raise UserInputError(f"unknown observation type {obs!r}: use --obs low_dim or image")
    if not isinstance(image_size, int) or image_size < 8:
        raise UserInputError(f"--image-size {image_size}: must be an integer >= 8 (84 is the paper's)")
    if max_attempts is not None and (not isinstance(max_attempts, int) or max_attempts < num_demos):
        raise UserInputError(f"--max-attempts {max_attempts}: must be an integer >= --num-demos ({num_demos})")
    if not output:
        raise UserInputError("no output path: pass --output PATH.hdf5")
    path = os.path.abspath(os.fspath(output))
    if os.path.isdir(path):
        raise UserInputError(f"--output {path} is a directory; give a file path ending in .hdf5")
    if os.path.exists(path) and not overwrite:
        raise UserInputError(f"--output {path} already exists; pass --overwrite to replace it or choose another path")
    return path


def _seed_int(*keys: int) -> int:
    return int(np.random.SeedSequence(list(keys)).generate_state(1)[0])


def run_episode(env, expert, obs: dict, obs_keys, max_steps: int,
                steps_after_success: int = STEPS_AFTER_SUCCESS) -> dict:
    """Roll the expert out from the env's just-reset state (``obs`` from ``env.reset()``) and
    record a robomimic demo: stops a few steps after success or at ``max_steps``."""
    sim = env.env.sim
    model_file = env.get_state()["model"]
    rec = {"states": [], "actions": [], "rewards": [], "obs": {k: [] for k in obs_keys},
           "next_obs": {k: [] for k in obs_keys}}
    success_step = None
    for t in range(max_steps):
        rec["states"].append(np.array(sim.get_state().flatten()))
        action = expert.act()
        next_obs, reward, _, _ = env.step(action)
        rec["actions"].append(action)
        rec["rewards"].append(float(reward))
        for k in obs_keys:
            rec["obs"][k].append(np.array(obs[k]))
            rec["next_obs"][k].append(np.array(next_obs[k]))
        obs = next_obs
        if success_step is None and env.is_success()["task"]:
            success_step = t
        if success_step is not None and t >= success_step + steps_after_success:
            break
    n = len(rec["actions"])
    rec["dones"] = np.zeros(n, dtype=np.int64)
    rec["dones"][-1] = 1
    rec["model_file"] = model_file
    rec["success"] = success_step is not None
    rec["length"] = n
    return rec


def recording_env(task: str, obs: str = "low_dim", image_size: int = 84, seed: int = 0):
    """(env, env_meta, obs_keys): the robomimic env demos of ``seed`` are recorded in (delta actions, no
    hard resets, so every episode keeps the model built here)."""
    from zprl.env.robomimic_env import create_env, make_env_meta

    meta = make_env_meta(task, obs, image_size, abs_action=False, hard_reset=False)
    obs_keys = obs_keys_for(task, obs)
    # robosuite draws model parameters (e.g. Lift's cube size) from np.random when it builds the
    # model, which hard_reset=False then keeps for every episode: seed that draw too.
    np.random.seed(_seed_int(seed, 0))
    return create_env(meta, obs_keys=obs_keys), meta, obs_keys


def operator_tiers(num_demos: int, quality: str, seed: int) -> list[str]:
    """The operator tier of each kept demo, in order (a failed attempt is retried with the same tier)."""
    from zprl.data.experts import tier_schedule

    if quality != "mixed":
        return ["expert"] * num_demos
    return tier_schedule(num_demos, np.random.default_rng(_seed_int(seed, 1)))


def record_attempt(env, task: str, obs_keys, seed: int, attempt: int, tier: str) -> dict:
    """Reset ``env`` for attempt number ``attempt`` of ``seed`` and record the scripted ``tier`` operator
    (``run_episode``'s record); the same arguments record the same episode."""
    from zprl.data.experts import make_expert

    np.random.seed(_seed_int(seed, 2, attempt))  # robosuite samples object poses from np.random
    first_obs = env.reset()
    for robot in env.env.robots:
        # OSC pulls the arm's null space toward the joints it saw at reset (noisy, and not
        # stored anywhere); robomimic's reset_to leaves that target at the noiseless
        # init_qpos, so use that here too and stored actions replay the same way.
        robot.controller.update_initial_joints(robot.init_qpos)
    expert = make_expert(task, env, np.random.default_rng(_seed_int(seed, 3, attempt)), tier)
    return run_episode(env, expert, first_obs, obs_keys, MAX_STEPS[task])


def generate_demos(task: str, num_demos: int, quality: str = "mixed", obs: str = "low_dim",
                   image_size: int = 84, seed: int = 0, output: str | None = None, overwrite: bool = False,
                   max_attempts: int | None = None, show_progress: bool = True) -> dict:
    """Generate ``num_demos`` successful demonstrations into a robomimic hdf5 file.

    Returns a summary dict: task, quality, obs, seed, attempts, successes, success_rate, kept,
    mean_length, tiers (counts per tier of kept demos), output. Raises UserInputError for bad
    arguments (before anything is written) and RuntimeError if ``max_attempts`` runs out.
    """
    path = _check_args(task, num_demos, quality, obs, image_size, output, overwrite, max_attempts)
    from tqdm import tqdm

    from zprl.data.robomimic_writer import RobomimicWriter

    if max_attempts is None:
        max_attempts = 3 * num_demos + 10
    env, meta, obs_keys = recording_env(task, obs, image_size, seed)
    tiers = operator_tiers(num_demos, quality, seed)
    info = {"generator": GENERATOR, "version": GENERATOR_VERSION, "task": task, "quality": quality,
            "seed": seed, "obs": obs, "image_size": image_size if obs == "image" else None,
            "action_space": "delta", "max_steps": MAX_STEPS[task]}
    attempts = successes = 0
    kept_tiers: dict[str, list[str]] = {}
    lengths = []
    bar = tqdm(total=max_attempts, desc=f"{task} {quality} {obs}", unit="ep", disable=not show_progress,
               dynamic_ncols=True)
    with RobomimicWriter(path, meta, {"zprl_generated": json.dumps(info)}) as writer:
        while len(lengths) < num_demos:
            if attempts >= max_attempts:
                raise RuntimeError(
                    f"{task} {quality}: only {len(lengths)}/{num_demos} successful demos in {attempts} attempts; "
                    "raise --max-attempts")
            tier = tiers[len(lengths)]  # a failed attempt is retried with the same operator tier
            rec = record_attempt(env, task, obs_keys, seed, attempts, tier)
            attempts += 1
            if rec["success"]:
                successes += 1
                name = writer.add_demo(rec["states"], rec["actions"], rec["rewards"], rec["dones"], rec["obs"],
                                       rec["next_obs"], rec["model_file"])
                kept_tiers.setdefault(tier, []).append(name)
                lengths.append(rec["length"])
            bar.update(1)
            bar.set_postfix(kept=len(lengths), success=f"{successes}/{attempts}")
        bar.close()
        names = list(writer.names)
        split_rng = np.random.default_rng(_seed_int(seed, 4))
        n_valid = max(1, int(round(VALID_FRACTION * len(names)))) if len(names) > 1 else 0
        valid = sorted(split_rng.choice(names, size=n_valid, replace=False).tolist()) if n_valid else []
        masks = {"train": [n for n in names if n not in valid], "valid": valid}
        if quality == "mixed":
            for tier_name in ("better", "okay", "worse"):
                masks[tier_name] = kept_tiers.get(tier_name, [])
        writer.finish(masks)
    env.env.close()
    summary = {
        "task": task, "quality": quality, "obs": obs, "seed": seed, "attempts": attempts,
        "successes": successes, "success_rate": successes / attempts, "kept": len(lengths),
        "mean_length": float(np.mean(lengths)),
        "tiers": {k: len(v) for k, v in kept_tiers.items()} if quality == "mixed" else {},
        "output": path,
    }
    return summary


def summary_line(s: dict) -> str:
    line = (f"{s['task']} {s['quality']} {s['obs']}: expert success {s['successes']}/{s['attempts']} "
            f"({100 * s['success_rate']:.1f}%), kept {s['kept']} demos, mean length {s['mean_length']:.1f} steps")
    if s["tiers"]:
        line += ", tiers " + " ".join(f"{k}={s['tiers'].get(k, 0)}" for k in ("better", "okay", "worse"))
    return line + f" -> {s['output']}"


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", required=True, help="lift, can, square or transport")
    p.add_argument("--num-demos", type=int, required=True)
    p.add_argument("--quality", default="mixed", help="expert or mixed (three operator tiers)")
    p.add_argument("--obs", default="low_dim", help="low_dim or image")
    p.add_argument("--image-size", type=int, default=84)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", required=True)
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--max-attempts", type=int, default=None)
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    s = generate_demos(a.task, a.num_demos, a.quality, a.obs, a.image_size, a.seed, a.output, a.overwrite,
                       a.max_attempts, show_progress=not a.no_progress)
    print(summary_line(s), flush=True)
    return s


if __name__ == "__main__":
    run_cli(main)
