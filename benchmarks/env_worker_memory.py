"""Memory of one env worker process (robosuite and MuJoCo imported, one env built, stepped).

    python benchmarks/env_worker_memory.py [--tasks lift,square] [--workers 2] [--chunks 20]

For each task and observation kind (low-dim; two 84x84 cameras) it starts ``--workers`` worker
processes exactly as training does (zprl.env.vector_env.make_vector_env, forkserver, shared-memory
observations), resets and steps them, and prints per worker RSS, USS (memory only that process
holds) and PSS (RSS with shared pages split among the processes sharing them), median over workers,
in MiB, the PSS of all the row's workers together (what they cost the host), and the start-up time (workers started, envs built and reset, all in parallel). USS is what one more worker adds; RSS is what `top` shows. Rendering here is Mesa's
llvmpipe (CPU); with NVIDIA's EGL a worker also holds a GL context on the GPU, not measured here.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

SHAPES = {
    "lift": {"low_dim": {"object": [10]}, "action": 7},
    "square": {"low_dim": {"object": [14]}, "action": 7},
}


def shape_meta(task: str, obs: str) -> dict:
    meta = {"robot0_eef_pos": {"shape": [3], "type": "low_dim"},
            "robot0_eef_quat": {"shape": [4], "type": "low_dim"},
            "robot0_gripper_qpos": {"shape": [2], "type": "low_dim"}}
    if obs == "image":
        meta["agentview_image"] = {"shape": [3, 84, 84], "type": "rgb"}
        meta["robot0_eye_in_hand_image"] = {"shape": [3, 84, 84], "type": "rgb"}
    else:
        meta["object"] = {"shape": SHAPES[task]["low_dim"]["object"], "type": "low_dim"}
    return {"obs": meta, "action": {"shape": [SHAPES[task]["action"]]}}


def measure(task: str, obs: str, workers: int, chunks: int) -> dict:
    import psutil

    from zprl.env.robomimic_env import make_env_meta
    from zprl.env.vector_env import RolloutEnvConfig, make_vector_env

    meta = make_env_meta(task, obs="image" if obs == "image" else "low_dim", image_size=84, abs_action=False)
    cfg = RolloutEnvConfig(env_meta=meta, shape_meta=shape_meta(task, obs), n_obs_steps=1, n_action_steps=4,
                           max_steps=400, abs_action=False, render_size=None)
    start = time.perf_counter()
    venv = make_vector_env(cfg, workers, asynchronous=True)
    try:
        venv.reset(seed=list(range(workers)))
        startup = time.perf_counter() - start  # processes started, envs built, first episodes reset
        rng = np.random.default_rng(0)
        for _ in range(chunks):
            venv.step(rng.uniform(-0.2, 0.2, size=venv.action_space.shape).astype(np.float32))
        infos = [psutil.Process(proc.pid).memory_full_info() for proc in venv.processes]
    finally:
        venv.close()
    mib = 2 ** 20
    medians = {k: statistics.median(getattr(i, k) / mib for i in infos) for k in ("rss", "uss", "pss")}
    # what the workers hold together: PSS splits shared pages among the processes sharing them
    return medians | {"n": len(infos), "startup": startup, "total_pss": sum(i.pss for i in infos) / mib}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", default="lift,square")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--chunks", type=int, default=20)
    args = p.parse_args()
    print(f"# {' '.join([os.path.basename(sys.executable)] + sys.argv)}; {args.workers} workers per row, "
          f"{args.chunks} chunks of 4 steps after reset; MUJOCO_GL={os.environ.get('MUJOCO_GL')}")
    print("| task | observations | workers measured | RSS MiB | USS MiB | PSS MiB | all workers' PSS MiB | start-up s |")
    print("|---|---|---|---|---|---|---|---|")
    for task in args.tasks.split(","):
        for obs in ("low_dim", "image"):
            r = measure(task, obs, args.workers, args.chunks)
            label = "two 84x84 cameras + low-dim" if obs == "image" else "low-dim"
            print(f"| {task} | {label} | {r['n']} | {r['rss']:.0f} | {r['uss']:.0f} | {r['pss']:.0f} | {r['total_pss']:.0f} | {r['startup']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
