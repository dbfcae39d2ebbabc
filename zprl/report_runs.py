"""Reading online run directories for zprl.report: one ``Run`` per directory (its evaluations, training
success, smoothness, timings and what identifies its task, evaluation seeds and base), and the check
that runs are comparable. The definitions the numbers follow are in zprl/report.py's docstring."""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field

import numpy as np

from zprl.common.errors import UserInputError

IDENTITY_FIELDS = ("online_task.name", "online_task.eval_start_seed", "online_task.n_eval_episodes", "base checkpoint")
FINAL_EVALS = 5                           # final success = mean of the last 5 learned evaluations
LAST100_EPISODES = 100                    # finished training episodes behind train/success_rate_last100
SMOOTHNESS_KEYS = ("action_delta", "action_jerk")
# With Q in [0, 1] and a small temperature the SAC actor loss stays within about +-1 (every healthy
# committed run: at most 1.08 in magnitude); a log window beyond this held updates on states far
# outside the rest (can ZPRL: the VIB posterior's blow-ups, docs/steering.md)
ACTOR_LOSS_BOUND = 10.0


@dataclass
class Run:
    path: str
    method: str
    seed: int
    identity: dict
    steps: np.ndarray          # env steps of each evaluation, ascending
    success: np.ndarray        # eval/success_rate at those steps
    base_success: float | None
    smoothness: dict = field(default_factory=dict)  # train/action_delta, train/action_jerk: post-warm-up means
    smoothness_skipped: int = 0                     # training records left out of those means (not finite)
    sac_blowups: tuple = ()                         # env steps of records with |sac/actor_loss| > ACTOR_LOSS_BOUND
    sac_records: int = 0                            # records with sac/actor_loss
    base_only: np.ndarray | None = None             # per evaluation: the base policy's (at 0, before learning)
    eval_smoothness: dict = field(default_factory=dict)  # eval/<key> -> per evaluation, NaN where not logged
    eval_wall_s: np.ndarray | None = None           # time/wall_s at each evaluation, NaN where not logged
    train_steps: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # records with last100
    train_last100: np.ndarray = field(default_factory=lambda: np.zeros(0))
    budget: int | None = None                       # the last env step the run logged
    wall_s: float | None = None                     # the run's last time/wall_s
    cpu_s: float | None = None                      # time/cpu_s of that record
    settings: dict = field(default_factory=dict)    # what may tell runs of one interface apart (label_variants)

    @property
    def final_indices(self) -> np.ndarray:
        """The evaluations final success averages: the last FINAL_EVALS learned ones (all, if only the base's)."""
        learned = np.flatnonzero(~self.base_only) if self.base_only is not None else np.arange(len(self.steps))
        return (learned if len(learned) else np.arange(len(self.steps)))[-FINAL_EVALS:]

    @property
    def final_success(self) -> float:
        return float(np.mean(self.success[self.final_indices]))

    @property
    def n_final(self) -> int:
        return len(self.final_indices)

    @property
    def last_success(self) -> float:
        return float(self.success[-1])

    @property
    def env_steps(self) -> int:
        return int(self.steps[-1]) if self.budget is None else max(self.budget, int(self.steps[-1]))

    @property
    def auc(self) -> float:
        return normalized_auc(self.steps, self.success)

    def steps_to_train(self, x: float) -> int | None:
        """env steps of the first training record with success over the last 100 episodes >= x (None: not reached)."""
        hit = np.flatnonzero(self.train_last100 >= x)
        return int(self.train_steps[hit[0]]) if len(hit) else None

    def steps_to_eval(self, x: float) -> int | None:
        hit = np.flatnonzero(self.success >= x)
        return int(self.steps[hit[0]]) if len(hit) else None

    def wall_to_eval(self, x: float) -> float | None:
        """time/wall_s of the first evaluation >= x; None: not reached; NaN: reached but no time logged."""
        hit = np.flatnonzero(self.success >= x)
        if not len(hit):
            return None
        return float("nan") if self.eval_wall_s is None else float(self.eval_wall_s[hit[0]])

    def final_eval_smoothness(self, key: str) -> float | None:
        """Mean of eval/<key> over the evaluations final success uses (None when none logged it)."""
        vals = self.eval_smoothness.get(f"eval/{key}")
        if vals is None:
            return None
        vals = vals[self.final_indices]
        vals = vals[~np.isnan(vals)]
        return float(vals.mean()) if len(vals) else None

    def base_eval_smoothness(self, key: str) -> float | None:
        vals = self.eval_smoothness.get(f"eval/{key}")
        if vals is None or self.base_only is None:
            return None
        vals = vals[self.base_only]
        vals = vals[~np.isnan(vals)]
        return float(vals[0]) if len(vals) else None

    @property
    def cpu_share(self) -> float | None:
        if self.wall_s is None or self.cpu_s is None or self.wall_s <= 0:
            return None
        return self.cpu_s / self.wall_s


def normalized_auc(steps, values) -> float:
    """Trapezoid area under values(steps) divided by the step span (the value itself for one point)."""
    steps, values = np.asarray(steps, dtype=np.float64), np.asarray(values, dtype=np.float64)
    if len(steps) == 1 or steps[-1] == steps[0]:
        return float(values[-1])
    area = np.sum((steps[1:] - steps[:-1]) * (values[1:] + values[:-1]) / 2)
    return float(area / (steps[-1] - steps[0]))


# -- reading runs --------------------------------------------------------------------------------
def expand_run_dirs(paths) -> list[str]:
    """Run directories as given, or the runs inside a sweep directory (sorted by job number)."""
    out = []
    for p in paths:
        if not os.path.isdir(p):
            raise UserInputError(f"run directory not found: {p} — pass online run directories (with logs.json.txt)")
        if os.path.isfile(os.path.join(p, "logs.json.txt")):
            out.append(os.path.normpath(p))
            continue
        subs = [os.path.dirname(f) for f in glob.glob(os.path.join(p, "*", "logs.json.txt"))]
        if not subs:
            raise UserInputError(f"{p} holds no logs.json.txt, nor do its sub-directories; is it an online run or sweep?")
        out += sorted((os.path.normpath(s) for s in subs),
                      key=lambda s: (int(os.path.basename(s)) if os.path.basename(s).isdigit() else 1 << 30, s))
    return out


def _latest_step_checkpoint(run_dir: str) -> str | None:
    # step_*.ckpt hold no replay buffer, so they load fast; latest.ckpt would drag the buffer along
    paths = sorted(glob.glob(os.path.join(run_dir, "checkpoints", "step_*.ckpt")))
    return paths[-1] if paths else None


def _config_and_state(run_dir: str):
    """(resolved online config, checkpoint state or None): the checkpoint's config if there is one
    (it holds the values the run really used), else .hydra/config.yaml with debug overrides applied."""
    from omegaconf import OmegaConf

    import zprl.common.config  # noqa: F401  (resolvers the stored configs use)

    ckpt = _latest_step_checkpoint(run_dir)
    if ckpt is not None:
        from zprl.policy.checkpoint import read_checkpoint

        payload = read_checkpoint(ckpt)
        return OmegaConf.create(payload["cfg"]), payload["state"]
    path = os.path.join(run_dir, ".hydra", "config.yaml")
    if not os.path.isfile(path):
        raise UserInputError(f"{run_dir} has neither checkpoints/step_*.ckpt nor .hydra/config.yaml; "
                             "cannot tell its task, seeds or steering method")
    cfg = OmegaConf.load(path)
    if "online_task" not in cfg or "steering" not in cfg:
        raise UserInputError(f"{path} is not an online run config (no online_task/steering); pass online runs only")
    if cfg.training.get("debug", False):
        from zprl.workspace.online_setup import apply_debug_overrides

        apply_debug_overrides(cfg)
    return cfg, None


def _method_name(cfg, state) -> str:
    if state is not None and "steering" in state:
        return state["steering"]["name"]
    import hydra

    return hydra.utils.get_class(cfg.steering._target_).name


# Settings that make two runs of one steering interface different methods on the page.
VARIANT_KEYS = ("sac.n_critics", "training.utd", "training.batch_size")


def _settings(cfg, state) -> dict:
    """The interface's own config (``steering.*`` but its class) and VARIANT_KEYS, as the run used them
    (a checkpoint's calibrated values, e.g. res_scale=auto's lambda, win over the config's rule)."""
    from omegaconf import OmegaConf

    out = {f"steering.{k}": v for k, v in OmegaConf.to_container(cfg.steering, resolve=True).items() if k != "_target_"}
    if state is not None:
        out.update({f"steering.{k}": v for k, v in state.get("steering", {}).items() if k != "name"})
    for key in VARIANT_KEYS:
        value = OmegaConf.select(cfg, key)
        if value is not None:
            out[key] = value
    return out


def label_variants(runs: list) -> None:
    """Runs of one interface with different settings (e.g. two lambdas) become separate methods on the page:
    ``zprl (res_scale=0.8)``, naming only the settings that differ between them."""
    by_name: dict[str, list] = {}
    for run in runs:
        by_name.setdefault(run.method, []).append(run)
    for name, group in by_name.items():
        keys = sorted({k for r in group for k in r.settings})
        differ = [k for k in keys if len({repr(r.settings.get(k)) for r in group}) > 1]
        for run in group if differ else []:
            run.method = f"{name} (" + ", ".join(f"{k.removeprefix('steering.')}={run.settings.get(k)}"
                                                for k in differ) + ")"


def _base_identity(run_dir: str, cfg, state) -> str:
    """The base a run steered: its weights' sha256 as the run wrote it beside its logs (so a page rebuilt
    from committed logs names the same base on any machine), else the checkpoint file's sha256 as recorded
    beside the logs, the run's checkpoint or the file on disk gives it, else the file's path."""
    from zprl.common.checkpoint import BASE_CKPT_SHA_FILE, BASE_SHA_FILE, file_sha256

    for name, kind in ((BASE_SHA_FILE, "weights sha256"), (BASE_CKPT_SHA_FILE, "sha256")):
        recorded = os.path.join(run_dir, name)
        if os.path.isfile(recorded):
            with open(recorded) as f:
                sha = f.read().split()
            if len(sha) != 1 or len(sha[0]) != 64:
                raise UserInputError(f"{recorded} should hold one sha256 (64 hex digits); rewrite it or delete it")
            return f"{kind}:{sha[0]}"
    if state is not None and state.get("base_ckpt_sha256"):
        return f"sha256:{state['base_ckpt_sha256']}"
    path = str(cfg.online_task.base_ckpt)
    if os.path.isfile(path):
        return f"sha256:{file_sha256(path)}"
    # the path as the config gives it, not made absolute: the report must not depend on where it is run
    return f"path:{os.path.normpath(path)}"


def _float(r: dict, key: str) -> float:
    v = r.get(key)
    return float("nan") if v is None else float(v)


def load_run(run_dir: str, max_env_steps: int | None = None) -> Run:
    """``max_env_steps``: read the run as if it had stopped there (records after it left out), so runs
    of different lengths, a partial one among them, are compared over one budget."""
    from zprl.common.logging import read_json_lines

    cfg, state = _config_and_state(run_dir)
    o = cfg.online_task
    identity = {"online_task.name": str(o.name), "online_task.eval_start_seed": int(o.eval_start_seed),
                "online_task.n_eval_episodes": int(o.n_eval_episodes), "base checkpoint": _base_identity(run_dir, cfg, state)}
    records = read_json_lines(os.path.join(run_dir, "logs.json.txt"))
    if max_env_steps is not None:
        records = [r for r in records if int(r.get("env_steps", 0)) <= max_env_steps]
    evals, last100 = {}, {}
    for r in records:  # a later record at the same env step wins (e.g. after a resume)
        if "eval/success_rate" in r:
            evals[int(r["env_steps"])] = r
        if "train/success_rate_last100" in r and r.get("episodes", LAST100_EPISODES) >= LAST100_EPISODES:
            last100[int(r["env_steps"])] = float(r["train/success_rate_last100"])
    if not evals:
        raise UserInputError(f"{run_dir}/logs.json.txt has no eval/success_rate record yet; wait for its first evaluation")
    steps = np.array(sorted(evals), dtype=np.int64)
    ordered = [evals[s] for s in steps]
    success = np.array([float(r["eval/success_rate"]) for r in ordered])
    base_only = np.array([bool(r.get("eval/base_only", 0)) for r in ordered])
    base = [float(r["eval/success_rate"]) for r in ordered if r.get("eval/base_only")]
    learning = [r for r in records if r.get("train/warmup") == 0] or [r for r in records if "train/warmup" in r]
    smooth, skipped = {}, 0
    for key in ("train/action_delta", "train/action_jerk"):
        vals = np.array([float(r[key]) for r in learning if key in r])
        # a record whose window held an env fault's chunk (non-finite actions, logs from before the loop
        # left faulted chunks out of the tracker) says nothing about smoothness: left out, and counted
        skipped = max(skipped, int((~np.isfinite(vals)).sum()))
        vals = vals[np.isfinite(vals)]
        if len(vals):
            smooth[key] = float(np.mean(vals))
    losses = [(int(r["env_steps"]), _float(r, "sac/actor_loss")) for r in records if "sac/actor_loss" in r]
    blowups = tuple(step for step, loss in losses if not abs(loss) <= ACTOR_LOSS_BOUND)  # (nan counts too)
    eval_smooth = {f"eval/{k}": np.array([_float(r, f"eval/{k}") for r in ordered]) for k in SMOOTHNESS_KEYS
                   if any(f"eval/{k}" in r for r in ordered)}
    eval_wall = (np.array([_float(r, "time/wall_s") for r in ordered])
                 if any("time/wall_s" in r for r in ordered) else None)
    timed = [r for r in records if "time/wall_s" in r and "time/cpu_s" in r]  # file order is the run's order
    train_steps = np.array(sorted(last100), dtype=np.int64)
    return Run(run_dir, _method_name(cfg, state), int(cfg.training.seed), identity, steps, success,
               base[0] if base else None, smooth, base_only=base_only, eval_smoothness=eval_smooth,
               eval_wall_s=eval_wall, train_steps=train_steps, smoothness_skipped=skipped,
               sac_blowups=blowups, sac_records=len(losses),
               train_last100=np.array([last100[s] for s in train_steps], dtype=np.float64),
               budget=max(int(r["env_steps"]) for r in records if "env_steps" in r),
               wall_s=float(timed[-1]["time/wall_s"]) if timed else None,
               cpu_s=float(timed[-1]["time/cpu_s"]) if timed else None, settings=_settings(cfg, state))


def check_comparable(runs: list[Run]) -> None:
    first = runs[0]
    for run in runs[1:]:
        for key in IDENTITY_FIELDS:
            if run.identity[key] != first.identity[key]:
                raise UserInputError(f"cannot compare {run.path}: {key} is {run.identity[key]} there but "
                                     f"{first.identity[key]} in {first.path}; compare runs of one task, eval seed set "
                                     "and base checkpoint")
