"""Soak test of the online loop (issue 11, item 7): a long CPU run with evaluations, checkpoints, one
injected env-worker kill and one kill -9 + resume of the whole run, with the memory of the main
process and of every worker sampled throughout.

    python benchmarks/soak_online.py --minutes 30 [--base-ckpt path/to/offline/latest.ckpt] [--out DIR]

The run (train.py, low-dim lift, 2 training envs, evaluation in the main process) is started with a
budget it cannot finish; at --kill-worker-at of the time one training env worker is SIGKILLed (the
run must replace it and count one env fault); at the deadline the run itself is SIGKILLed and
resumed with training.resume=True and a budget of one more checkpoint, so it ends cleanly. Then:

- nothing lost: a train record at every log_every, an evaluation at every eval_every (and at 0), a
  step checkpoint at every checkpoint_every, counters that add up (agent steps = replay rows + the
  transitions lost to faults), exactly one env fault, records strictly ordered;
- memory: after the first evaluation, the main process may grow by the replay rows it writes
  (bytes per row x rows) plus --bound-mb, each training worker by --bound-mb.

Prints a table of the figures and ends with ``headline: soak_ok=1.000`` (0.000 if a check failed).
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

ONLINE = {"online_task": "lift_lowdim_abs", "training.device": "cpu", "training.num_threads": 1,
          "logging.mode": "disabled", "online_task.n_envs": 2, "online_task.n_eval_envs": 1,
          "online_task.n_eval_episodes": 4, "online_task.n_eval_vis": 0, "online_task.max_steps": 80,
          "training.warmup_agent_steps": 100, "training.training_freq": 50, "training.batch_size": 64,
          "training.buffer_size": 200000, "training.eval_every": 200, "training.checkpoint_every": 200,
          "training.log_every": 50, "sac.actor_hidden": "[64,64]", "sac.critic_hidden": "[64,64]",
          "sac.n_critics": 2, "training.utd": 1, "training.env_step_timeout_s": 120}


def make_base(workdir: str) -> str:
    """A small base policy: scripted lift demos and a minutes-long offline debug run."""
    from benchmarks.builders import ensure_lowdim_dataset

    data = ensure_lowdim_dataset()
    run_dir = os.path.join(workdir, "base")
    ckpt = os.path.join(run_dir, "checkpoints", "latest.ckpt")
    if not os.path.exists(ckpt):
        cmd = [sys.executable, os.path.join(REPO, "train.py"), "--config-name=train_flow_match_vib_unet_image_workspace",
               "task=lift_lowdim_abs", f"task.dataset_path={data}", "training.debug=true", "training.device=cpu",
               "logging.mode=disabled", "policy.down_dims=[16,32]", "policy.diffusion_step_embed_dim=16",
               "task.obs_encoder.hidden_dims=[32]", "task.obs_encoder.output_dim=32", f"hydra.run.dir={run_dir}"]
        subprocess.run(cmd, check=True, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return ckpt


def launch(run_dir: str, base: str, agent_steps: int, resume: bool) -> subprocess.Popen:
    overrides = {**ONLINE, "online_task.base_ckpt": base, "training.total_agent_steps": agent_steps,
                 "training.resume": str(resume).lower()}
    cmd = [sys.executable, os.path.join(REPO, "train.py"), "--config-name=train_online_vib_robomimic_workspace",
           *[f"{k}={v}" for k, v in overrides.items()], f"hydra.run.dir={run_dir}"]
    log = open(run_dir + ".out", "ab")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": REPO, "WANDB_MODE": "disabled"}
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def training_workers(proc) -> list:
    """The training env workers: the forkserver's children (evaluation runs in the main process)."""
    import psutil

    main = psutil.Process(proc.pid)
    servers = [c for c in main.children() if "forkserver" in " ".join(c.cmdline())]
    return [w for s in servers for w in s.children()]


def sample(proc, segment: int, run_dir: str) -> dict | None:
    import psutil

    try:
        main = psutil.Process(proc.pid)
        workers = training_workers(proc)
        return {"t": time.time(), "segment": segment, "main_mb": main.memory_info().rss / 2 ** 20,
                "evals": sum("eval/success_rate" in r for r in records(run_dir)),
                "workers_mb": {w.pid: w.memory_info().rss / 2 ** 20 for w in workers},
                "workers_age": {w.pid: time.time() - w.create_time() for w in workers}}
    except psutil.Error:
        return None


def records(run_dir: str) -> list[dict]:
    from zprl.common.logging import read_json_lines

    path = os.path.join(run_dir, "logs.json.txt")
    return read_json_lines(path) if os.path.exists(path) else []


def latest_steps(run_dir: str) -> int:
    from zprl.common.checkpoint import load_checkpoint

    path = os.path.join(run_dir, "checkpoints", "latest.ckpt")
    return int(load_checkpoint(path)["state"]["counters"]["agent_steps"]) if os.path.exists(path) else 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=30.0, help="time before the run is killed and finished")
    p.add_argument("--base-ckpt", default=None, help="offline checkpoint to steer (default: a small one made here)")
    p.add_argument("--out", default=None, help="work directory (default: a temp dir)")
    p.add_argument("--kill-worker-at", type=float, default=0.4, help="fraction of --minutes")
    p.add_argument("--sample-every", type=float, default=10.0, help="seconds between memory samples")
    p.add_argument("--bound-mb", type=float, default=64.0, help="allowed growth beyond the replay rows")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    work = args.out or tempfile.mkdtemp(prefix="zprl_soak_")
    os.makedirs(work, exist_ok=True)
    base = args.base_ckpt or make_base(work)
    run_dir = os.path.join(work, "online")
    if os.path.exists(run_dir):
        raise SystemExit(f"{run_dir} exists; pass a new --out")
    rng = random.Random(args.seed)
    t0 = time.time()
    deadline, kill_worker_at = t0 + 60 * args.minutes, t0 + 60 * args.minutes * args.kill_worker_at
    proc, samples, killed_worker = launch(run_dir, base, 10 ** 7, resume=False), [], None
    while time.time() < deadline and proc.poll() is None:
        s = sample(proc, 0, run_dir)
        if s is not None:
            samples.append(s)
        if killed_worker is None and time.time() >= kill_worker_at:
            workers = training_workers(proc)
            if workers:
                victim = rng.choice(workers)
                killed_worker = victim.pid
                victim.send_signal(signal.SIGKILL)
                print(f"# {time.time() - t0:.0f} s: SIGKILL training env worker {victim.pid}", flush=True)
        time.sleep(args.sample_every)
    if proc.poll() is not None:
        raise SystemExit(f"the run stopped early (status {proc.returncode}); see {run_dir}.out")
    proc.send_signal(signal.SIGKILL)  # the run itself, at an arbitrary moment
    proc.wait()
    os.killpg(proc.pid, signal.SIGKILL)
    resumed_from = latest_steps(run_dir)
    end = resumed_from + ONLINE["training.checkpoint_every"]
    print(f"# {time.time() - t0:.0f} s: SIGKILL the run; resume from agent step {resumed_from} to {end}", flush=True)
    proc = launch(run_dir, base, end, resume=True)
    while proc.poll() is None:
        s = sample(proc, 1, run_dir)
        if s is not None:
            samples.append(s)
        time.sleep(min(args.sample_every, 2.0))
    if proc.returncode != 0:
        raise SystemExit(f"the resumed run failed (status {proc.returncode}); see {run_dir}.out")
    return report(run_dir, samples, end, killed_worker is not None, args, t0)


def report(run_dir, samples, end, worker_killed, args, t0) -> int:
    from zprl.common.checkpoint import load_checkpoint

    recs = records(run_dir)
    latest = load_checkpoint(os.path.join(run_dir, "checkpoints", "latest.ckpt"))["state"]
    c, replay = latest["counters"], latest["replay"]
    row_bytes = sum(t[0].numel() * t.element_size() for t in replay["data"].values())
    train = [r["agent_steps"] for r in recs if "train/warmup" in r]
    evals = [r["agent_steps"] for r in recs if "eval/success_rate" in r]
    ckpts = sorted(int(f[5:11]) for f in os.listdir(os.path.join(run_dir, "checkpoints")) if f.startswith("step_"))
    every = {k: ONLINE[f"training.{k}"] for k in ("log_every", "eval_every", "checkpoint_every")}
    checks = {
        "the run reached its end": c["agent_steps"] == end,
        "a train record at every log_every": train == list(range(every["log_every"], end + 1, every["log_every"])),
        "an evaluation at 0 and every eval_every": evals == [0, *range(every["eval_every"], end + 1, every["eval_every"])],
        "a step checkpoint at every checkpoint_every": ckpts == list(range(every["checkpoint_every"], end + 1,
                                                                         every["checkpoint_every"])),
        "records in order": [r["agent_steps"] for r in recs] == sorted(r["agent_steps"] for r in recs),
        "one env fault counted": (not worker_killed) or c.get("env_faults") == 1,
        "agent steps = replay rows + transitions lost to faults": c["agent_steps"] == replay["size"] + c.get("env_faults", 0),
    }
    # memory over the long first segment once start-up is over: the main process from the end of the
    # first evaluation (its env is built then) and a quarter of the time on, each worker from when it
    # is a minute old (a replacement builds its env first). The main process may grow by the replay
    # rows it writes meanwhile.
    first = [s for s in samples if s["segment"] == 0]
    steady = [s for s in first if s["evals"] >= 1 and s["t"] >= t0 + 0.25 * 60 * args.minutes] or first[-1:]
    start, last = steady[0], steady[-1]
    main_growth = last["main_mb"] - start["main_mb"]
    main_peak = max(s["main_mb"] for s in samples)
    allowed_main = c["agent_steps"] * row_bytes / 2 ** 20 + args.bound_mb  # (all rows: an upper bound)
    by_pid = {}
    for s in first:
        for pid, mb in s["workers_mb"].items():
            if s["workers_age"][pid] >= 60:
                by_pid.setdefault(pid, []).append(mb)
    worker_growth = max((v[-1] - v[0] for v in by_pid.values() if len(v) > 1), default=0.0)
    worker_peak = max((mb for s in samples for mb in s["workers_mb"].values()), default=0.0)
    resumed = [s["main_mb"] for s in samples if s["segment"] == 1]
    checks[f"main RSS growth <= replay rows x {row_bytes} B + {args.bound_mb:g} MB"] = main_growth <= allowed_main
    checks[f"each worker's RSS growth <= {args.bound_mb:g} MB"] = worker_growth <= args.bound_mb

    wall = time.time() - t0
    print(f"\n## soak: {wall / 60:.1f} min wall, {c['agent_steps']} agent steps ({c['agent_steps'] * 4} env steps), "
          f"{len(evals)} evaluations, {len(ckpts)} step checkpoints, {c.get('env_faults', 0)} env fault(s), "
          f"{len(samples)} memory samples\n")
    print("| process | RSS first (MB) | RSS last (MB) | peak (MB) | growth (MB) | allowed (MB) |")
    print("|---|---|---|---|---|---|")
    print(f"| main | {start['main_mb']:.0f} | {last['main_mb']:.0f} | {main_peak:.0f} | {main_growth:+.1f} | "
          f"{allowed_main:.1f} |")
    print(f"| training workers (worst of {len(by_pid)}) | | | {worker_peak:.0f} | {worker_growth:+.1f} | "
          f"{args.bound_mb:.1f} |")
    if resumed:
        print(f"| main after kill -9 + resume | {resumed[0]:.0f} | {resumed[-1]:.0f} | {max(resumed):.0f} | | |")
    print(f"\n(main: {len(steady)} of the first segment's {len(first)} samples are past start-up; workers: samples "
          f"from a minute of age, {sum(map(len, by_pid.values()))} in all; {row_bytes} B per replay row)\n")
    for name, ok in checks.items():
        print(f"- [{'x' if ok else ' '}] {name}")
    ok = all(checks.values())
    print(f"headline: soak_ok={1.0 if ok else 0.0:.3f}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
