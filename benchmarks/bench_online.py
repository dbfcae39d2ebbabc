"""Env steps per second of the online training loop vs raw vectorized stepping of the same envs.

    python benchmarks/bench_online.py [--settings demo,authors] [--device cuda:0] [--n-envs 2] [--chunks 24]

"loop" runs the real OnlineWorkspace.run() (AsyncVectorEnv workers, steering encode/act of the
frozen base policy, SAC act, replay add, SAC updates) with its evaluations and checkpoint writes
switched off; the replay buffer is pre-filled with one batch of random rows so updates run from the
first round (as in a long run), and updates come in rounds every ``--training-freq`` chunks per env.
The time window is the loop itself (from its progress bar's creation to its close), so env start-up
and the first reset are excluded. Wrappers around ``envs.step`` (``step_async``/``step_wait``), the
steering/SAC calls and ``_update`` split the loop time into simulation, policy inference, SAC
updates and the rest (replay add, info bookkeeping, diagnostics). The loop runs three times: with serial
update rounds, with the default overlapped updates (``training.overlap_updates``: a round's
updates run while the workers simulate), and overlapped with the envs in 2 groups
(``training.env_groups=2``: one group's chunk is computed while the other group simulates). "raw" steps a vector env built from the same
RolloutEnvConfig with one fixed action chunk (the base policy's first chunk). All count env steps as
agent steps x n_action_steps. Each setting (SETTINGS: the CPU demo's and the authors' SAC) gets its
own table, its variants interleaved; the headline is the first setting's best loop over raw.
Base checkpoints are trained once with train.py (training.debug=True) unless --base-ckpt is given.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import types

import torch
from builders import DATA_DIR, ONLINE_CONFIG, REPO, compose, ensure_image_dataset, ensure_lowdim_dataset
from omegaconf import OmegaConf, open_dict
from timing import base_parser, interleaved, markdown_table, median, print_headline, setup, spread

import zprl.workspace.online as online_mod
import zprl.workspace.online_collect as collect_mod
from zprl.demo_plan import DemoPlan
from zprl.env.vector_env import RolloutEnvConfig, make_vector_env
from zprl.policy.checkpoint import load_base_policy
from zprl.workspace.online import OnlineWorkspace
from zprl.workspace.online_collect import obs_to_torch


def ensure_base_ckpt(obs: str, small: bool) -> str:
    name = f"base_{obs}{'_small' if small else ''}"
    ckpt = os.path.join(DATA_DIR, name, "checkpoints", "latest.ckpt")
    if os.path.exists(ckpt):
        return ckpt
    data = ensure_lowdim_dataset() if obs == "lowdim" else ensure_image_dataset()
    cmd = [sys.executable, "train.py", "--config-name=train_flow_match_vib_unet_image_workspace",
           f"task=lift_{obs}_abs", "training.debug=True", "training.device=cpu", "logging.mode=disabled",
           f"task.dataset_path={data}", f"hydra.run.dir={os.path.join(DATA_DIR, name)}"]
    if small:
        cmd.append("policy.down_dims=[32,64,128]")
    print(f"# training a debug base checkpoint: {' '.join(cmd)}", flush=True)
    subprocess.run(cmd, check=True, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return ckpt


class Clock:
    """Accumulates wall time of wrapped calls under a label."""

    def __init__(self, device):
        self.device, self.totals = device, {}

    def wrap(self, label: str, fn):
        def timed(*a, **kw):
            t0 = time.perf_counter()
            out = fn(*a, **kw)
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.totals[label] = self.totals.get(label, 0.0) + time.perf_counter() - t0
            return out
        return timed


# What differs between the settings measured (everything else is the online config's default):
#   demo:    the CPU demo's online stage (zprl/demo_plan.py): its small base U-Net [32,64,128], 4 envs,
#            2 critics, UTD 1 -- what `make demo` and the CPU evidence scripts are sized like;
#   authors: the paper-size base U-Net [128,256,512] and the authors' SAC, 10 critics x UTD 5, on 2 envs
#            (the paper's 20 do not fit 2 cores).
# Both: batch 256, SAC nets 3x256, update rounds every --training-freq chunks per env (so that several
# rounds fit one repetition; the demo's 100-agent-step rounds would give fewer than 2).
SETTINGS = {
    "demo": {"small_base": True, "n_envs": DemoPlan.n_envs, "n_critics": DemoPlan.n_critics, "utd": DemoPlan.utd},
    "authors": {"small_base": False, "n_envs": 2, "n_critics": 10, "utd": 5},
}


def online_cfg(args, setting: dict, base_ckpt: str, overlap: bool, groups: int):
    n = args.n_envs or setting["n_envs"]
    cfg = compose(ONLINE_CONFIG, [f"online_task=lift_{args.obs}_abs", f"online_task.base_ckpt={base_ckpt}",
                                  f"training.device={args.device}", "logging.mode=disabled"])
    with open_dict(cfg):
        t, o = cfg.training, cfg.online_task
        o.n_envs, o.n_eval_envs, o.n_eval_episodes, o.max_steps = n, 1, 1, args.max_steps
        t.total_agent_steps = n * args.chunks
        t.warmup_agent_steps, t.training_freq, t.utd = 0, n * args.training_freq, setting["utd"]
        cfg.sac.n_critics = setting["n_critics"]
        t.overlap_updates, t.env_groups = overlap, groups
        t.eval_every = t.checkpoint_every = t.log_every = 10 ** 9
        t.buffer_size = 100_000
        if args.small or args.quick:
            t.batch_size = 64
            cfg.sac.actor_hidden = cfg.sac.critic_hidden = [64, 64]
    OmegaConf.resolve(cfg)
    return cfg


def loop_variant(args, setting: dict, base_ckpt: str, device, breakdowns: list, overlap: bool, groups: int = 1):
    def run():
        with tempfile.TemporaryDirectory(prefix="zprl_bench_online_") as out:
            cfg = online_cfg(args, setting, base_ckpt, overlap, groups)
            ws = OnlineWorkspace(cfg, output_dir=out)
            clock = Clock(device)
            gen = torch.Generator().manual_seed(0)
            n = cfg.training.batch_size
            # Updates start from the first round, as they do once a long run is past warm-up.
            ws.buffer.add(torch.randn(n, ws.buffer.state_dim, generator=gen),
                          torch.rand(n, ws.buffer.action_dim, generator=gen) * 2 - 1,
                          torch.zeros(n), torch.randn(n, ws.buffer.state_dim, generator=gen), torch.zeros(n))
            ws._evaluate = lambda *a, **kw: {}
            ws.save_step_checkpoint = lambda: None
            ws.steering.encode = clock.wrap("inference", ws.steering.encode)
            ws.steering.act = clock.wrap("inference", ws.steering.act)
            ws.sac.act = clock.wrap("inference", ws.sac.act)
            ws._update = clock.wrap("updates", ws._update)
            window = {}

            def vector_env(*a, **kw):
                envs = make_vector_env(*a, **kw)
                # overlapped, updates run between step_async and step_wait: simulation is the wait left
                # (AsyncVectorEnv.step calls the two itself, so only they are timed there)
                for name in ("step_async", "step_wait") if hasattr(envs, "step_async") else ("step",):
                    setattr(envs, name, clock.wrap("simulation", getattr(envs, name)))
                return envs

            class Bar:  # the loop's progress bar marks the timed window
                def __init__(self, *a, **kw):
                    clock.totals.clear()  # drop the first reset's encode
                    window["t0"] = time.perf_counter()

                def update(self, n):
                    pass

                def close(self):
                    window["t1"] = time.perf_counter()

            # (the envs are built in online_collect.py, the progress bar in online.py)
            saved = collect_mod.make_vector_env, online_mod.tqdm
            collect_mod.make_vector_env, online_mod.tqdm = vector_env, types.SimpleNamespace(tqdm=Bar)
            try:
                ws.run()
            finally:
                collect_mod.make_vector_env, online_mod.tqdm = saved
            wall = window["t1"] - window["t0"]
            env_steps = ws.agent_steps * ws.n_action_steps
            breakdowns.append({**{k: v / wall for k, v in clock.totals.items()}, "wall": wall,
                               "n_updates": ws.updates, "env_steps": env_steps})
            return wall / env_steps
    return run


def raw_variant(args, setting: dict, base_ckpt: str, device):
    policy, base_cfg, payload = load_base_policy(base_ckpt, device=device)
    shape_meta = OmegaConf.to_container(base_cfg.shape_meta, resolve=True)
    config = RolloutEnvConfig(env_meta=payload["state"]["env_meta"], shape_meta=shape_meta,
                              n_obs_steps=policy.n_obs_steps, n_action_steps=policy.n_action_steps,
                              max_steps=args.max_steps, render_size=None)
    from gymnasium.vector import AutoresetMode

    n_envs = args.n_envs or setting["n_envs"]

    def run():
        envs = make_vector_env(config, n_envs, autoreset_mode=AutoresetMode.SAME_STEP)
        try:
            obs, _ = envs.reset(seed=list(range(n_envs)))
            chunk = policy.predict_action(obs_to_torch(obs, device))["action"].cpu().numpy()
            t0 = time.perf_counter()
            for _ in range(args.chunks):
                envs.step(chunk)
            wall = time.perf_counter() - t0
        finally:
            envs.close()
        return wall / (args.chunks * n_envs * policy.n_action_steps)
    return run


def measure(args, name: str, device) -> float:
    """One setting's table: raw vs the two loops, interleaved; returns its loop_over_raw (overlapped)."""
    setting = SETTINGS[name]
    base_ckpt = args.base_ckpt or ensure_base_ckpt(args.obs, args.small or setting["small_base"])
    breakdowns = {"serial": [], "overlapped": [], "2 env groups": []}
    res = interleaved({"raw": raw_variant(args, setting, base_ckpt, device),
                       "serial": loop_variant(args, setting, base_ckpt, device, breakdowns["serial"], overlap=False),
                       "overlapped": loop_variant(args, setting, base_ckpt, device, breakdowns["overlapped"],
                                                  overlap=True),
                       "2 env groups": loop_variant(args, setting, base_ckpt, device, breakdowns["2 env groups"],
                                                    overlap=True, groups=2)},
                      args.reps)
    rate = {k: 1.0 / median(v) for k, v in res.items()}
    b = breakdowns["serial"][0]
    print(f"\n## {name} settings: {setting['n_critics']} critics x UTD {setting['utd']:g}\n")
    print(f"# base {base_ckpt}; obs={args.obs} n_envs={args.n_envs or setting['n_envs']} "
          f"chunks/env/rep={args.chunks} training_freq={args.training_freq} chunks/env updates/rep={b['n_updates']} "
          f"env steps/rep={b['env_steps']} reps={args.reps}")
    print("\nenv steps per second (median of interleaved repetitions, ± half-range)")
    loops = ("serial", "overlapped", "2 env groups")
    print(markdown_table(["settings", "raw vector env", "loop, serial updates", "loop, overlapped updates (default)",
                          "loop, overlapped, 2 env groups", *(f"{k} / raw" for k in loops)],
                         [[name, f"{rate['raw']:.1f} {spread(res['raw'])}",
                           *(f"{rate[k]:.1f} {spread(res[k])}" for k in loops),
                           *(f"{rate[k] / rate['raw']:.3f}" for k in loops)]]))
    print("\nshare of the loop's wall time (simulation: time spent waiting for the env workers)")
    rows = []
    for loop, bs in breakdowns.items():
        bs = bs[1:] or bs  # drop the warm-up repetition
        share = {k: median([b.get(k, 0.0) for b in bs]) for k in ("simulation", "inference", "updates")}
        share["other"] = 1.0 - sum(share.values())
        rows.append([f"{name}, {loop}",
                     *(f"{100 * share[k]:.1f}%" for k in ("simulation", "inference", "updates", "other"))])
    print(markdown_table(["loop", "simulation", "policy inference (encode + act + SAC act)", "SAC updates", "other"],
                         rows))
    return max(rate["overlapped"], rate["2 env groups"]) / rate["raw"]


def main():
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--settings", default="demo,authors",
                   help="comma list of " + ", ".join(SETTINGS) + " (see SETTINGS); the headline is the first's best loop")
    p.add_argument("--obs", default="lowdim", choices=["lowdim", "image"])
    p.add_argument("--n-envs", type=int, default=None, help="training env processes (default: the setting's; paper: 20)")
    p.add_argument("--chunks", type=int, default=40, help="agent steps (chunks) per env per repetition")
    p.add_argument("--training-freq", type=int, default=8, help="chunks per env between update rounds")
    p.add_argument("--max-steps", type=int, default=400, help="episode length in env steps")
    p.add_argument("--base-ckpt", default=None, help="one base for every setting (default: each setting's own)")
    p.add_argument("--small", action="store_true", help="small base U-Net and SAC nets in every setting")
    p.set_defaults(reps=3)
    args = p.parse_args()
    names = [n.strip() for n in args.settings.split(",") if n.strip()]
    unknown = [n for n in names if n not in SETTINGS]
    if unknown or not names:
        p.error(f"--settings {args.settings!r}: unknown {unknown}; choose from {', '.join(SETTINGS)}")
    if args.quick:
        # small SAC nets and few steps; the base checkpoints are the regular ones (made once)
        args.chunks, args.training_freq, args.reps, args.n_envs = 4, 2, 1, 2  # 2: overlap needs worker processes
    device = setup(args)
    ratios = [measure(args, name, device) for name in names]
    print_headline("loop_over_raw", ratios[0])


if __name__ == "__main__":
    main()
