"""Peer check of the offline stage: robomimic's own BC beside zprl's base policy, like for like.

    python benchmarks/peer_check_bc.py                      # 50 demos, 3,000 steps, 50 seeds
    python benchmarks/peer_check_bc.py --variants eval      # + eval-time variants of our checkpoint
    python benchmarks/peer_check_bc.py --variants all       # + retrained variants (~15 min each on 2 cores)
    python benchmarks/peer_check_bc.py --smoke              # minutes: 4 demos, 20 steps, 2 seeds

Both methods see the SAME generated demos (``zprl.data.generate_demos``, mixed quality, seed 0;
ours after ``zprl.data.convert_abs``), the SAME number of gradient steps, and are rolled out by
zprl's own runner (``zprl/env/runner.py``) on the SAME held-out seeds (100000..) with the SAME
episode cap, so both see identical initial states:

- robomimic BC: ``robomimic.config.config_factory("bc")`` (MLP 1024x1024, delta actions, low-dim
  keys as ours, batch 100), trained by robomimic's ``scripts/train.py`` ``train()`` unmodified
  (this script only makes robomimic importable without mujoco_py and pins torch threads; robomimic
  hard-codes 2), and its ``RolloutPolicy`` wrapped as a zprl policy (one action per env step).
- zprl: ``train.py`` at the demo's settings (U-Net [32,64,128], lr 3e-4, 50 warm-up steps, EMA),
  batch 100, epochs x steps-per-epoch = the step budget; evaluated with ``eval_base.py -n N``.
- Variants (``--variants``) change one thing at a time at the same budget; eval-time ones reuse
  the base checkpoint (n_action_steps, inference steps, EMA vs raw weights, VIB vs raw obs_emb).

Everything lands in ``--out`` (default data/peer_check/); a stage whose result exists is skipped
(``--redo`` to rerun). Results accumulate in OUT/results.json; the table is printed at the end.
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import json
import math
import os
import shutil
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

LOW_DIM_KEYS = ["robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos", "object"]
EVAL_START_SEED = 100000


@dataclasses.dataclass
class Plan:
    num_demos: int = 50
    steps: int = 3000          # gradient steps, both methods
    batch_size: int = 100      # both methods (robomimic's default)
    episodes: int = 50         # held-out seeds from 100000
    max_steps: int = 200       # episode cap, both methods (the demo's)
    n_envs: int = 2
    threads: int = 1
    bc_steps_per_epoch: int = 100   # robomimic's epoch_every_n_steps
    # ours: the demo's settings (zprl/demo.py DemoPlan)
    down_dims: tuple = (32, 64, 128)
    encoder_dims: tuple = (256, 256)
    lr: float = 3e-4
    warmup: int = 50


SMOKE = dict(num_demos=4, steps=20, episodes=2, max_steps=40, bc_steps_per_epoch=10,
             down_dims=(16, 32), encoder_dims=(32,))


def _list(values) -> str:
    return "[" + ",".join(str(v) for v in values) + "]"


# ---------------------------------------------------------------------------------------------- variants
# name -> (what changes, train overrides (None: reuse the base checkpoint), eval options)
VARIANTS = {
    # eval-time: same checkpoint, one change at rollout
    "t1": ("execute 1 action per chunk (n_action_steps 4 -> 1)", None, {"n_action_steps": 1}),
    "t8": ("execute 8 actions per chunk (4 -> 8)", None, {"n_action_steps": 8}),
    "steps10": ("10 inference steps (2 -> 10)", None, {"num_inference_steps": 10}),
    "raw_weights": ("raw weights instead of EMA at eval", None, {"use_ema": False}),
    "no_vib_eval": ("act on raw obs_emb (il path), not through the VIB decoder", None, {"use_vib": False}),
    "zero_noise": ("start the flow from zeros instead of N(0, I)", None, {"zero_noise": True}),
    # retrained: one training change each
    "lr1e-3": ("learning rate 3e-4 -> 1e-3", ["optimizer.lr=1e-3"], {}),
    "unet_paper": ("U-Net [32,64,128] -> [128,256,512] (the paper's)", ["policy.down_dims=[128,256,512]"], {}),
    "horizon8_t1": ("horizon 16 -> 8, n_action_steps 1 (short chunk, closed loop)",
                    ["horizon=8", "task.n_action_steps=1"], {}),
    "no_vib": ("policy.use_vib=false (no VIB path in training)", ["policy.use_vib=false"], {}),
    # same policy, trained on the delta-action file (7-d actions, the env in delta mode), like BC
    "delta": ("delta actions (the BC file) instead of absolute", ["task.abs_action=false",
              "task.shape_meta.action.shape=[7]"], {}),
}
DELTA_DATA = {"delta"}  # variants trained on the delta-action file
EVAL_VARIANTS = [k for k, v in VARIANTS.items() if v[1] is None]
TRAIN_VARIANTS = [k for k, v in VARIANTS.items() if v[1] is not None]


# ---------------------------------------------------------------------------------------------- helpers
def _env(threads: int) -> dict:
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = str(threads)
    env.setdefault("MUJOCO_GL", "egl")
    env.setdefault("PYOPENGL_PLATFORM", env["MUJOCO_GL"])
    env.setdefault("WANDB_MODE", "disabled")
    return env


def run_cmd(cmd: list[str], plan: Plan, log_path: str | None = None) -> float:
    """Run a command from the repo root; returns its wall time. Output goes to log_path (and a tail on failure)."""
    print("$ " + " ".join(cmd), flush=True)
    start = time.monotonic()
    if log_path:
        with open(log_path, "w") as log:
            proc = subprocess.run(cmd, cwd=REPO, env=_env(plan.threads), stdout=log, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL)
    else:
        proc = subprocess.run(cmd, cwd=REPO, env=_env(plan.threads), stdin=subprocess.DEVNULL)
    wall = time.monotonic() - start
    if proc.returncode != 0:
        tail = open(log_path).read()[-3000:] if log_path else ""
        raise RuntimeError(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{tail}")
    return wall


def _py() -> str:
    return sys.executable


class Results:
    def __init__(self, out: str):
        self.path = os.path.join(out, "results.json")
        self.data = json.load(open(self.path)) if os.path.exists(self.path) else {}

    def get(self, key):
        return self.data.get(key)

    def put(self, key, value) -> None:
        # re-read first: a second invocation (e.g. --only-variants) may share this folder
        if os.path.exists(self.path):
            self.data = {**json.load(open(self.path)), **{k: v for k, v in self.data.items() if k == "plan"}}
        self.data[key] = value
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.data, f, indent=2)
        os.replace(tmp, self.path)


def _read_log(eval_dir: str) -> dict:
    with open(os.path.join(eval_dir, "eval_log.json")) as f:
        log = json.load(f)
    seeds = [e["seed"] for e in log["episodes"]]
    if seeds != list(range(EVAL_START_SEED, EVAL_START_SEED + len(seeds))):
        raise RuntimeError(f"{eval_dir}/eval_log.json: unexpected seeds {seeds[:3]}...")
    wins = sum(bool(e["success"]) for e in log["episodes"])
    return {"success": wins / len(seeds), "wins": wins, "n": len(seeds),
            "mean_length": sum(e["length"] for e in log["episodes"]) / len(seeds)}


# ---------------------------------------------------------------------------------------------- data
def _demo_file_ok(path: str, plan: Plan, absolute: bool) -> bool:
    from zprl.data.robomimic_file import check_robomimic_file

    if not os.path.exists(path):
        return False
    try:
        info = check_robomimic_file(path, abs_action=absolute)
    except Exception:
        return False
    made = info.get("generated") or {}
    return info["num_demos"] == plan.num_demos and made.get("quality") == "mixed" and made.get("seed") == 0


def stage_data(out: str, plan: Plan, res: Results, redo: bool) -> tuple[str, str]:
    delta = os.path.join(out, "lift_mh_low_dim.hdf5")
    absolute = os.path.join(out, "lift_mh_low_dim_abs.hdf5")
    if not redo and _demo_file_ok(delta, plan, False) and _demo_file_ok(absolute, plan, True):
        return delta, absolute
    for p in (delta, absolute):
        if os.path.exists(p):
            os.remove(p)
    w1 = run_cmd([_py(), "-m", "zprl.data.generate_demos", "--task", "lift", "--num-demos", str(plan.num_demos),
                  "--quality", "mixed", "--obs", "low_dim", "--seed", "0", "--output", delta, "--no-progress"],
                 plan, os.path.join(out, "generate_demos.log"))
    w2 = run_cmd([_py(), "-m", "zprl.data.convert_abs", "--input", delta, "--output", absolute],
                 plan, os.path.join(out, "convert_abs.log"))
    res.put("data", {"num_demos": plan.num_demos, "generate_s": w1, "convert_s": w2})
    return delta, absolute


# ---------------------------------------------------------------------------------------------- robomimic BC
def bc_config(dataset: str, out_dir: str, plan: Plan) -> dict:
    """robomimic's BC defaults from its own config factory, with the comparison's settings."""
    from robomimic.config import config_factory

    if plan.steps % plan.bc_steps_per_epoch:
        raise SystemExit(f"--steps {plan.steps} must be a multiple of {plan.bc_steps_per_epoch} (robomimic's epoch)")
    epochs = plan.steps // plan.bc_steps_per_epoch
    config = config_factory("bc")
    with config.values_unlocked():
        config.train.data = dataset
        config.train.output_dir = out_dir
        config.experiment.name = "bc"
        config.train.batch_size = plan.batch_size
        config.train.num_epochs = epochs
        config.experiment.epoch_every_n_steps = plan.bc_steps_per_epoch
        config.train.cuda = False
        config.observation.modalities.obs.low_dim = list(LOW_DIM_KEYS)
        # held-out rollouts happen after training, in zprl's runner on the shared seeds
        config.experiment.rollout.enabled = False
        config.experiment.render_video = False
        config.experiment.validate = False
        config.experiment.logging.log_tb = False
        config.experiment.save.enabled = True
        config.experiment.save.every_n_epochs = None
        config.experiment.save.epochs = [epochs]
        config.experiment.save.on_best_rollout_success_rate = False
    return json.loads(config.dump())


def robomimic_train_entry(config_path: str, threads: int) -> None:
    """``robomimic/scripts/train.py`` main(), unmodified, in this process (run as a subprocess)."""
    import torch

    import zprl.env.robomimic_env  # noqa: F401  (robomimic 0.3.0 imports mujoco_py; zprl's stand-in)

    set_threads = torch.set_num_threads
    torch.set_num_threads = lambda n: set_threads(threads)  # robomimic's train() hard-codes 2
    from robomimic.scripts import train as rm_train

    args = argparse.Namespace(config=config_path, algo=None, name=None, dataset=None, debug=False)
    rm_train.main(args)


def stage_bc_train(out: str, delta: str, plan: Plan, res: Results, redo: bool) -> str:
    rec = res.get("bc_train")
    if rec and not redo and os.path.exists(rec["ckpt"]) and rec["steps"] == plan.steps:
        return rec["ckpt"]
    run_dir = os.path.join(out, "bc_runs")
    if os.path.exists(run_dir):
        shutil.rmtree(run_dir)
    os.makedirs(run_dir)
    cfg_path = os.path.join(out, "bc_config.json")
    with open(cfg_path, "w") as f:
        json.dump(bc_config(delta, run_dir, plan), f, indent=2)
    log = os.path.join(out, "bc_train.log")
    wall = run_cmd([_py(), os.path.abspath(__file__), "_robomimic_train", cfg_path, "--threads", str(plan.threads)],
                   plan, log)
    text = open(log).read()
    if "finished run successfully!" not in text:  # robomimic's train.py catches its errors and exits 0
        raise RuntimeError(f"robomimic training failed; see {log}:\n{text[-3000:]}")
    ckpts = sorted(glob.glob(os.path.join(run_dir, "bc", "*", "models", "*.pth")))
    if len(ckpts) != 1:
        raise RuntimeError(f"expected one robomimic checkpoint under {run_dir}, found {ckpts}")
    res.put("bc_train", {"ckpt": ckpts[0], "wall_s": wall, "steps": plan.steps, "config": cfg_path})
    return ckpts[0]


class RobomimicPolicyAdapter:
    """robomimic ``RolloutPolicy`` as a zprl runner policy: obs (B, To, D) -> {"action": (B, 1, Da)}."""

    def __init__(self, rollout_policy):
        import torch

        self.policy = rollout_policy
        self.policy.start_episode()  # eval mode; BC-MLP keeps no per-episode state
        self.device, self.dtype = torch.device("cpu"), torch.float32

    def predict_action(self, obs: dict) -> dict:
        import numpy as np
        import torch

        n = next(iter(obs.values())).shape[0]
        actions = [self.policy(ob={k: v[i, -1].cpu().numpy() for k, v in obs.items()}) for i in range(n)]
        return {"action": torch.from_numpy(np.stack(actions)[:, None].astype(np.float32))}


def bc_eval_entry(ckpt: str, out_dir: str, n_episodes: int, max_steps: int, n_envs: int, threads: int) -> None:
    import torch
    from omegaconf import OmegaConf

    import zprl.env.robomimic_env  # noqa: F401
    import robomimic.utils.file_utils as FileUtils
    from zprl.workspace.evaluate import check_output_dir, evaluate

    torch.set_num_threads(threads)
    check_output_dir(out_dir)
    policy, ckpt_dict = FileUtils.policy_from_checkpoint(ckpt_path=ckpt, device=torch.device("cpu"))
    env_meta = ckpt_dict["env_metadata"]  # the delta-action lift env of the dataset
    shape_meta = {"obs": {k: {"shape": list(ckpt_dict["shape_metadata"]["all_shapes"][k]), "type": "low_dim"}
                          for k in LOW_DIM_KEYS},
                  "action": {"shape": [int(ckpt_dict["shape_metadata"]["ac_dim"])]}}
    task_cfg = OmegaConf.load(os.path.join(REPO, "config", "task", "lift_lowdim_abs.yaml"))
    runner = OmegaConf.to_container(task_cfg.env_runner, resolve=False)
    runner.update(shape_meta=shape_meta, n_obs_steps=1, n_action_steps=1, abs_action=False, max_steps=max_steps,
                  test_start_seed=EVAL_START_SEED)
    log = evaluate(RobomimicPolicyAdapter(policy), OmegaConf.create(runner), env_meta, out_dir, n_episodes, n_vis=0,
                   extra={"checkpoint": ckpt, "method": "robomimic bc"}, n_envs=n_envs)
    print(f"mean score {log['mean_score']:.3f} over {log['n_episodes']} episodes -> {out_dir}/eval_log.json")


def stage_bc_eval(out: str, ckpt: str, plan: Plan, res: Results, redo: bool) -> None:
    rec = res.get("bc_eval")
    if rec and not redo and rec.get("ckpt") == ckpt and rec["n"] == plan.episodes:
        return
    eval_dir = os.path.join(out, "eval_bc")
    if os.path.exists(eval_dir):
        shutil.rmtree(eval_dir)
    wall = run_cmd([_py(), os.path.abspath(__file__), "_bc_eval", ckpt, eval_dir, "--episodes", str(plan.episodes),
                    "--max-steps", str(plan.max_steps), "--n-envs", str(plan.n_envs), "--threads", str(plan.threads)],
                   plan, os.path.join(out, "bc_eval.log"))
    res.put("bc_eval", {"ckpt": ckpt, "wall_s": wall, **_read_log(eval_dir)})


# ---------------------------------------------------------------------------------------------- zprl
def steps_per_epoch(dataset: str, plan: Plan, extra: list[str]) -> int:
    """Largest divisor of the step budget that fits in one pass over our dataloader at this batch size."""
    from hydra import compose, initialize_config_dir
    import hydra.utils

    import zprl.common.config as zc

    with initialize_config_dir(config_dir=zc.CONFIG_DIR, version_base=None):
        cfg = compose(config_name="train_flow_match_vib_unet_image_workspace",
                      overrides=["task=lift_lowdim_abs", f"task.dataset_path={dataset}", "task.dataset.val_ratio=0",
                                 *extra])
    ds = hydra.utils.instantiate(cfg.task.dataset)
    batches = len(ds) // plan.batch_size + (1 if len(ds) % plan.batch_size else 0)
    for s in range(min(batches, plan.steps), 0, -1):
        if plan.steps % s == 0:
            return s
    return 1


def ours_overrides(dataset: str, run_dir: str, plan: Plan, epochs: int, spe: int) -> list[str]:
    o = {
        "task": "lift_lowdim_abs", "task.dataset_path": dataset, "task.dataset.val_ratio": 0, "training.device": "cpu",
        "training.num_threads": plan.threads, "training.seed": 0, "task.dataset.seed": 0, "exp_name": "peer_check",
        "logging.mode": "disabled", "policy.down_dims": _list(plan.down_dims),
        "dataloader.batch_size": plan.batch_size, "val_dataloader.batch_size": plan.batch_size,
        "optimizer.lr": plan.lr, "training.lr_warmup_steps": plan.warmup, "training.num_epochs": epochs,
        "training.max_train_steps": spe, "training.rollout_every": epochs, "training.checkpoint_every": epochs,
        "training.val_every": epochs, "task.obs_encoder.hidden_dims": _list(plan.encoder_dims),
        "dataloader.num_workers": 0, "val_dataloader.num_workers": 0, "dataloader.pin_memory": "false",
        "val_dataloader.pin_memory": "false",
        # the held-out evaluation is eval_base.py's, afterwards: no rollout inside training
        "task.env_runner.n_train": 0, "task.env_runner.n_train_vis": 0, "task.env_runner.n_test": 0,
        "task.env_runner.n_test_vis": 0, "task.env_runner.max_steps": plan.max_steps, "hydra.run.dir": run_dir,
    }
    return [f"{k}={v}" for k, v in o.items()]


def stage_ours_train(out: str, dataset: str, plan: Plan, res: Results, redo: bool, name: str = "base",
                     extra: list[str] = ()) -> str:
    key = f"ours_train/{name}"
    rec = res.get(key)
    if rec and not redo and os.path.exists(rec["ckpt"]) and rec["steps"] == plan.steps:
        return rec["ckpt"]
    spe = steps_per_epoch(dataset, plan, list(extra))
    epochs = plan.steps // spe
    run_dir = os.path.join(out, f"ours_{name}")
    if os.path.exists(run_dir):
        shutil.rmtree(run_dir)
    cmd = ["python", "train.py", "--config-name=train_flow_match_vib_unet_image_workspace",
           *ours_overrides(dataset, run_dir, plan, epochs, spe), *extra]
    wall = run_cmd([_py(), *cmd[1:]], plan, os.path.join(out, f"ours_{name}_train.log"))
    ckpt = os.path.join(run_dir, "checkpoints", "latest.ckpt")
    from zprl.common.checkpoint import load_checkpoint

    done = load_checkpoint(ckpt)["state"]["global_step"]
    if done != plan.steps:
        raise RuntimeError(f"{ckpt}: {done} gradient steps, not {plan.steps}")
    res.put(key, {"ckpt": ckpt, "wall_s": wall, "steps": done, "epochs": epochs, "steps_per_epoch": spe,
                  "extra": list(extra)})
    return ckpt


def eval_ours_entry(ckpt: str, out_dir: str, n_episodes: int, n_envs: int, threads: int, n_action_steps=None,
                    num_inference_steps=None, use_vib=None, use_ema=True, zero_noise=False) -> None:
    """eval_base.py's path (load_base_policy + evaluate on the task's runner) with one eval-time change."""
    import functools

    import torch

    from zprl.policy.checkpoint import load_base_policy
    from zprl.workspace.evaluate import check_output_dir, evaluate

    torch.set_num_threads(threads)
    check_output_dir(out_dir)
    policy, cfg, payload = load_base_policy(ckpt, device="cpu", use_ema=use_ema)
    if n_action_steps is not None:
        policy.n_action_steps = n_action_steps
    if num_inference_steps is not None:
        policy.flow.num_inference_steps = num_inference_steps
    if use_vib is not None:
        policy.predict_action = functools.partial(policy.predict_action, use_vib=use_vib)
    if zero_noise:
        act = policy.predict_action

        def predict_action(obs, **kw):
            b = next(iter(obs.values())).shape[0]
            return act(obs, noise=torch.zeros(b, policy.horizon, policy.action_dim), **kw)

        policy.predict_action = predict_action
    log = evaluate(policy, cfg.task.env_runner, payload["state"]["env_meta"], out_dir, n_episodes, n_vis=0,
                   extra={"checkpoint": ckpt, "n_action_steps": policy.n_action_steps,
                          "num_inference_steps": policy.flow.num_inference_steps, "use_vib": use_vib,
                          "use_ema": use_ema, "zero_noise": zero_noise},
                   n_action_steps=policy.n_action_steps, n_envs=n_envs)
    print(f"mean score {log['mean_score']:.3f} over {log['n_episodes']} episodes -> {out_dir}/eval_log.json")


def _eval_option_args(opts: dict) -> list[str]:
    args = []
    for k, v in opts.items():
        args += [f"--{k.replace('_', '-')}", str(int(v) if isinstance(v, bool) else v)]
    return args


def stage_ours_eval(out: str, ckpt: str, plan: Plan, res: Results, redo: bool, name: str = "base",
                    opts: dict | None = None) -> None:
    key = f"ours_eval/{name}"
    rec = res.get(key)
    if rec and not redo and rec.get("ckpt") == ckpt and rec["n"] == plan.episodes:
        return
    eval_dir = os.path.join(out, f"eval_ours_{name}")
    if os.path.exists(eval_dir):
        shutil.rmtree(eval_dir)
    if opts:
        cmd = [_py(), os.path.abspath(__file__), "_eval_ours", ckpt, eval_dir, "--episodes", str(plan.episodes),
               "--n-envs", str(plan.n_envs), "--threads", str(plan.threads), *_eval_option_args(opts)]
    else:  # the user's command
        cmd = [_py(), "eval_base.py", "-c", ckpt, "-o", eval_dir, "-d", "cpu", "-n", str(plan.episodes),
               "--n_vis", "0", "--n_envs", str(plan.n_envs)]
    wall = run_cmd(cmd, plan, os.path.join(out, f"eval_ours_{name}.log"))
    res.put(key, {"ckpt": ckpt, "wall_s": wall, "opts": opts or {}, **_read_log(eval_dir)})


# ---------------------------------------------------------------------------------------------- fit diagnostic
OSC_POS_SCALE = 0.05  # robosuite OSC_POSE output_max: a delta position action of 1.0 moves the goal 5 cm


def fit_report(out: str, samples: int = 512, draws: int = 8) -> str:
    """How well each trained policy reproduces the demos' FIRST action on training windows.

    Same windows for every model (seeded). Goal-position error in mm: absolute actions are goal
    positions; a delta action's position part times 5 cm is the goal's offset (OSC_POSE), so both
    read as "where the controller is told to go". Noise spread: std of our first action over
    ``draws`` flow noises. Gripper: share of windows whose gripper command has the demo's sign.
    """
    import hydra.utils
    import numpy as np
    import torch
    from omegaconf import OmegaConf

    import zprl.env.robomimic_env  # noqa: F401
    from zprl.policy.checkpoint import load_base_policy

    torch.set_num_threads(1)
    res = Results(out)
    rows = [f"{'model':<28} {'actions':<9} {'goal pos err (mm)':>18} {'noise spread (mm)':>18} {'gripper sign ok':>16}"]

    def windows(cfg):
        ds = hydra.utils.instantiate(OmegaConf.create(cfg).task.dataset)
        idx = np.random.default_rng(0).choice(len(ds), size=min(samples, len(ds)), replace=False)
        items = [ds[int(i)] for i in idx]
        obs = {k: torch.stack([it["obs"][k] for it in items]) for k in items[0]["obs"]}
        return obs, torch.stack([it["action"] for it in items])[:, 0]

    def add(name, kind, pred, demo, spread=None):
        scale = 1000.0 * (OSC_POS_SCALE if kind == "delta" else 1.0)
        err = scale * torch.sqrt(((pred[:, :3] - demo[:, :3]) ** 2).sum(-1).mean()).item()
        grip = ((pred[:, -1] > 0) == (demo[:, -1] > 0)).float().mean().item()
        sp = "-" if spread is None else f"{scale * spread:.2f}"
        rows.append(f"{name:<28} {kind:<9} {err:>18.2f} {sp:>18} {grip:>16.3f}")

    delta_obs = None
    for key in sorted(k for k in res.data if k.startswith("ours_train/")):
        rec = res.get(key)
        policy, cfg, _ = load_base_policy(rec["ckpt"], device="cpu")
        obs, demo = windows(payload_cfg := OmegaConf.to_container(cfg, resolve=True))
        kind = "absolute" if payload_cfg["task"]["abs_action"] else "delta"
        if kind == "delta":
            delta_obs = (payload_cfg, obs, demo)
        name = key.split("/", 1)[1]
        # the base checkpoint also under the eval-time changes that move the sampler's output
        settings = [(name, {}, None)] + ([("steps10", {}, 10), ("no_vib_eval", {"use_vib": False}, None)]
                                         if name == "base" else [])
        for label, kw, steps in settings:
            policy.flow.num_inference_steps = steps or cfg.policy.num_inference_steps
            with torch.no_grad():
                torch.manual_seed(0)
                outs = torch.stack([policy.predict_action(obs, **kw)["action_pred"][:, 0] for _ in range(draws)])
            spread = torch.sqrt((outs[:, :, :3].std(0) ** 2).sum(-1).mean()).item()
            add(f"zprl [{label}]", kind, outs.mean(0), demo, spread)
    bc = res.get("bc_train")
    if bc and delta_obs is not None:  # BC on the delta variant's windows (same file, same obs)
        import robomimic.utils.file_utils as FileUtils

        rp, _ = FileUtils.policy_from_checkpoint(ckpt_path=bc["ckpt"], device=torch.device("cpu"))
        rp.start_episode()
        _, obs, demo = delta_obs
        pred = torch.from_numpy(np.stack([rp(ob={k: v[i, -1].numpy() for k, v in obs.items()})
                                          for i in range(demo.shape[0])])).float()
        add("robomimic BC", "delta", pred, demo)
    return "\n".join(rows)


# ---------------------------------------------------------------------------------------------- table
def ci95(p: float, n: int) -> float:
    return 1.96 * math.sqrt(max(p * (1 - p), 1e-12) / n)


def table(res: Results, plan: Plan) -> str:
    def fmt_s(s):
        return "-" if s is None else f"{int(round(s)) // 60}m{int(round(s)) % 60:02d}s"

    rows = []
    bc_t, bc_e = res.get("bc_train"), res.get("bc_eval")
    if bc_t and bc_e:
        rows.append(("robomimic BC (MLP, delta)", "-", bc_t["steps"], bc_t["wall_s"], bc_e))
    base_t = res.get("ours_train/base")
    for key in sorted(k for k in res.data if k.startswith("ours_eval/")):
        name = key.split("/", 1)[1]
        ev = res.get(key)
        if name == "base":
            label, change, tr = "zprl flow U-Net (abs, VIB)", "demo settings", base_t
        elif name in VARIANTS and VARIANTS[name][1] is None:
            label, change, tr = f"zprl [{name}]", VARIANTS[name][0], base_t
        else:
            label, change, tr = f"zprl [{name}]", VARIANTS.get(name, ("?",))[0], res.get(f"ours_train/{name}")
        rows.append((label, change, tr["steps"] if tr else "-", tr["wall_s"] if tr else None, ev))
    rows.sort(key=lambda r: (not r[0].startswith("robomimic"), r[0] != "zprl flow U-Net (abs, VIB)"))
    lines = [f"lift, {plan.num_demos} mixed-quality demos; success on seeds "
             f"{EVAL_START_SEED}..{EVAL_START_SEED + plan.episodes - 1}, max {plan.max_steps} steps "
             f"(95% CI half-width in brackets)",
             f"{'method':<30} {'change':<58} {'grad steps':>10} {'train wall':>10} {'success':>16}"]
    for label, change, steps, wall, ev in rows:
        succ = f"{ev['success']:.2f} ({ev['wins']}/{ev['n']}) ±{ci95(ev['success'], ev['n']):.2f}"
        lines.append(f"{label:<30} {change:<58} {steps!s:>10} {fmt_s(wall):>10} {succ:>16}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- main
def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_robomimic_train":
        p = argparse.ArgumentParser()
        p.add_argument("config")
        p.add_argument("--threads", type=int, default=1)
        a = p.parse_args(argv[1:])
        robomimic_train_entry(a.config, a.threads)
        return 0
    if argv and argv[0] == "_bc_eval":
        p = argparse.ArgumentParser()
        p.add_argument("ckpt")
        p.add_argument("out_dir")
        p.add_argument("--episodes", type=int, default=50)
        p.add_argument("--max-steps", type=int, default=200)
        p.add_argument("--n-envs", type=int, default=2)
        p.add_argument("--threads", type=int, default=1)
        a = p.parse_args(argv[1:])
        bc_eval_entry(a.ckpt, a.out_dir, a.episodes, a.max_steps, a.n_envs, a.threads)
        return 0
    if argv and argv[0] == "_eval_ours":
        p = argparse.ArgumentParser()
        p.add_argument("ckpt")
        p.add_argument("out_dir")
        p.add_argument("--episodes", type=int, default=50)
        p.add_argument("--n-envs", type=int, default=2)
        p.add_argument("--threads", type=int, default=1)
        p.add_argument("--n-action-steps", type=int, default=None)
        p.add_argument("--num-inference-steps", type=int, default=None)
        p.add_argument("--use-vib", type=int, default=None)
        p.add_argument("--use-ema", type=int, default=1)
        p.add_argument("--zero-noise", type=int, default=0)
        a = p.parse_args(argv[1:])
        eval_ours_entry(a.ckpt, a.out_dir, a.episodes, a.n_envs, a.threads, a.n_action_steps, a.num_inference_steps,
                        None if a.use_vib is None else bool(a.use_vib), bool(a.use_ema), bool(a.zero_noise))
        return 0
    if argv and argv[0] == "fit":
        p = argparse.ArgumentParser(prog="peer_check_bc.py fit", description=fit_report.__doc__.split("\n\n")[0])
        p.add_argument("--out", default=os.path.join(REPO, "data", "peer_check"))
        p.add_argument("--samples", type=int, default=512)
        p.add_argument("--draws", type=int, default=8)
        a = p.parse_args(argv[1:])
        print(fit_report(os.path.abspath(a.out), a.samples, a.draws))
        return 0

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=None, help="output folder (default data/peer_check, data/peer_check/smoke)")
    p.add_argument("--smoke", "--quick", action="store_true", help="tiny sizes (minutes): 4 demos, 20 steps, 2 episodes")
    p.add_argument("--num-demos", type=int)
    p.add_argument("--steps", type=int, help="gradient steps for both methods (default 3000)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--episodes", type=int, help="held-out seeds from 100000 (default 50)")
    p.add_argument("--max-steps", type=int, help="episode cap (default 200, the demo's)")
    p.add_argument("--n-envs", type=int, help="rollout worker processes (default 2)")
    p.add_argument("--threads", type=int, help="torch threads per process (default 1)")
    p.add_argument("--variants", default="none",
                   help="none | eval | train | all | comma-separated names: " + ", ".join(VARIANTS))
    p.add_argument("--skip-bc", action="store_true", help="only our side (and variants)")
    p.add_argument("--only-variants", action="store_true",
                   help="run only the chosen variants (BC and our base must be done already for eval-time ones)")
    p.add_argument("--redo", action="store_true", help="rerun stages whose results exist")
    a = p.parse_args(argv)

    plan = Plan(**(SMOKE if a.smoke else {}))
    for field in ("num_demos", "steps", "batch_size", "episodes", "max_steps", "n_envs", "threads"):
        if getattr(a, field) is not None:
            setattr(plan, field, getattr(a, field))
    out = os.path.abspath(a.out or os.path.join(REPO, "data", "peer_check", "smoke" if a.smoke else ""))
    os.makedirs(out, exist_ok=True)
    res = Results(out)
    plan_json = json.loads(json.dumps(dataclasses.asdict(plan)))
    if res.get("plan") and res.get("plan") != plan_json:
        print(f"sizes differ from {res.path}'s: its results are dropped", flush=True)
        res.data = {}  # other sizes: earlier results are not comparable
        if os.path.exists(res.path):
            os.remove(res.path)
    res.put("plan", plan_json)

    chosen = {"none": [], "eval": EVAL_VARIANTS, "train": TRAIN_VARIANTS, "all": list(VARIANTS)}.get(a.variants)
    if chosen is None:
        chosen = [v for v in a.variants.split(",") if v]
        unknown = [v for v in chosen if v not in VARIANTS]
        if unknown:
            raise SystemExit(f"--variants: unknown {unknown}; choose from {', '.join(VARIANTS)}")

    delta, absolute = stage_data(out, plan, res, a.redo)
    if not (a.skip_bc or a.only_variants):
        bc_ckpt = stage_bc_train(out, delta, plan, res, a.redo)
        stage_bc_eval(out, bc_ckpt, plan, res, a.redo)
    if a.only_variants:
        base_ckpt = (res.get("ours_train/base") or {}).get("ckpt")
    else:
        base_ckpt = stage_ours_train(out, absolute, plan, res, a.redo)
        stage_ours_eval(out, base_ckpt, plan, res, a.redo)
    for name in chosen:
        _, overrides, opts = VARIANTS[name]
        if overrides is None and base_ckpt is None:
            raise SystemExit(f"variant {name} evaluates the base checkpoint: train it first (without --only-variants)")
        data = delta if name in DELTA_DATA else absolute
        ckpt = base_ckpt if overrides is None else stage_ours_train(out, data, plan, res, a.redo, name, overrides)
        stage_ours_eval(out, ckpt, plan, res, a.redo, name, opts)
        print(table(res, plan), flush=True)
    text = table(res, plan)
    bc, ours = res.get("bc_eval"), res.get("ours_eval/base")
    if bc and ours:
        text += f"\nheadline: ours_minus_bc={ours['success'] - bc['success']:+.3f}"
    print("\n" + text)
    with open(os.path.join(out, "table.txt"), "w") as f:
        f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
