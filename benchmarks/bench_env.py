"""Simulation control steps per second per task: low-dim, and two 84x84 cameras with and without
the project's rendering patch (zprl/env/render_patch.py).

    python benchmarks/bench_env.py [--tasks lift,can,square,transport] [--steps 40]

One process, one env per variant, built through the rollout env class (RobomimicGymEnv: robomimic
env, obs converted to float CHW) with hard_reset=False. The render patch is chosen per env with
``fast_render(True/False)`` while the env (and its GL context) is built. Actions are delta OSC
commands that sweep the end effector slowly, so the arm moves and the gripper opens and closes.
Resets are not timed. Transport uses its first two cameras (shouldercamera0/1).
"""

from __future__ import annotations

import contextlib
import io
import math
import time

import numpy as np
from builders import REPO  # noqa: F401  (puts the repository on sys.path)
from timing import base_parser, interleaved, markdown_table, median, print_headline, setup, spread

from zprl.env.render_patch import fast_render
from zprl.env.robomimic_env import CAMERAS, LOW_DIM_KEYS, make_env_meta
from zprl.env.wrappers import RobomimicGymEnv

TASKS = ("lift", "can", "square", "transport")
IMAGE_SIZE = 84


def shape_meta_for(task: str, n_arms: int, image: bool) -> dict:
    obs = {"robot0_eef_pos": {"shape": [3], "type": "low_dim"}}
    if image:
        for cam in CAMERAS[task][:2]:
            obs[f"{cam}_image"] = {"shape": [3, IMAGE_SIZE, IMAGE_SIZE], "type": "rgb"}
    return {"obs": obs, "action": {"shape": [7 * n_arms]}}


def build_env(task: str, image: bool, fast: bool | None):
    meta = make_env_meta(task, obs="image" if image else "low_dim", image_size=IMAGE_SIZE, abs_action=False,
                         hard_reset=False)
    n_arms = 2 if task == "transport" else 1
    # robomimic prints a banner per env; keep the output to the tables
    with fast_render(fast), contextlib.redirect_stdout(io.StringIO()):
        env = RobomimicGymEnv(meta, shape_meta_for(task, n_arms, image), abs_action=False, render_size=None)
        env.reset(seed=0)  # the GL context exists from here on, made under the chosen switch
    return env


def sweep_action(t: int, n_arms: int) -> np.ndarray:
    arm = np.zeros(7)
    arm[:3] = 0.3 * np.array([math.sin(t / 15), math.cos(t / 20), math.sin(t / 25)])
    arm[6] = 1.0 if (t // 40) % 2 else -1.0
    return np.tile(arm, n_arms)


def stepper(env, steps: int, n_arms: int):
    state = {"t": 0}

    def run():
        t0 = time.perf_counter()
        for _ in range(steps):
            env.step(sweep_action(state["t"], n_arms))
            state["t"] += 1
        return (time.perf_counter() - t0) / steps

    return run


def main():
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--tasks", default=",".join(TASKS))
    p.add_argument("--steps", type=int, default=40, help="control steps per repetition")
    p.set_defaults(reps=3)
    args = p.parse_args()
    setup(args)
    tasks = ["lift"] if args.quick else args.tasks.split(",")
    reps, steps = (1, 3) if args.quick else (args.reps, args.steps)

    rows, speedups = [], []
    for task in tasks:
        n_arms = 2 if task == "transport" else 1
        t0 = time.perf_counter()
        envs = {"low-dim": build_env(task, False, None),
                "2 cams, patched": build_env(task, True, True),
                "2 cams, robosuite default": build_env(task, True, False)}
        build_s = time.perf_counter() - t0
        res = interleaved({k: stepper(e, steps, n_arms) for k, e in envs.items()}, reps)
        rate = {k: 1.0 / median(v) for k, v in res.items()}
        speedup = rate["2 cams, patched"] / rate["2 cams, robosuite default"]
        speedups.append(speedup)
        rows.append([task, *(f"{rate[k]:.1f} {spread(res[k])}" for k in envs), f"{speedup:.2f}",
                     f"{rate['2 cams, patched'] / rate['low-dim']:.2f}"])
        for env in envs.values():
            env.close()
        # one line per task as it finishes, so a long run that is stopped still leaves its numbers
        print(f"# {task}: built 3 envs in {build_s:.1f} s; reps={reps} steps/rep={steps}; steps/s "
              + ", ".join(f"{k} {v:.1f}" for k, v in rate.items()), flush=True)

    print("\ncontrol steps per second, one process (median of interleaved repetitions, ± half-range)")
    print(markdown_table(["task", "low-dim", "2 cams 84x84, patched", "2 cams 84x84, robosuite default",
                          "patched / default", "patched / low-dim"], rows))
    print_headline("render_patch_speedup_geomean", float(np.exp(np.mean(np.log(speedups)))))


if __name__ == "__main__":
    main()
