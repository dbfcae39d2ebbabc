"""Compare online runs by steering method: one table, one curve.

    python -m zprl.report RUN_DIR [RUN_DIR ...] -o OUT

A RUN_DIR is an online run directory (``.hydra/``, ``logs.json.txt``, ``checkpoints/``) or a Hydra
sweep directory whose sub-directories are runs. Writes ``OUT/report.md`` and
``OUT/success_vs_env_steps.png``. Runs must share the task, the evaluation seeds
(``online_task.eval_start_seed``, ``online_task.n_eval_episodes``) and the base checkpoint;
otherwise nothing is written and one line names the run and the field that differs.

Definitions (also printed in the report):
- final success: the run's last ``eval/success_rate``; mean over seeds +- the half-width of a 95%
  Student-t interval (t_{0.975, n-1} * sd / sqrt(n), sd with n-1; none for one seed);
- AUC: trapezoid area under success vs env steps over the run's evaluations (the base-policy
  evaluation at 0 included), divided by the env-step span, i.e. the span's mean success in [0, 1];
- smoothness: mean of the logged ``train/action_delta`` / ``train/action_jerk`` over the training
  records after warm-up (executed actions while learning; see zprl/rl/smoothness.py).
"""

from __future__ import annotations

import argparse
import glob
import math
import os
import sys
from dataclasses import dataclass, field

import numpy as np

from zprl.common.errors import UserInputError, run_cli

IDENTITY_FIELDS = ("online_task.name", "online_task.eval_start_seed", "online_task.n_eval_episodes", "base checkpoint")


@dataclass
class Run:
    path: str
    method: str
    seed: int
    identity: dict
    steps: np.ndarray          # env steps of each evaluation, ascending
    success: np.ndarray        # eval/success_rate at those steps
    base_success: float | None
    smoothness: dict = field(default_factory=dict)

    @property
    def final_success(self) -> float:
        return float(self.success[-1])

    @property
    def env_steps(self) -> int:
        return int(self.steps[-1])

    @property
    def auc(self) -> float:
        return normalized_auc(self.steps, self.success)


# -- statistics ----------------------------------------------------------------------------------
def t_interval(values, confidence: float = 0.95) -> tuple[float, float]:
    """(mean, half-width) of the Student-t interval over independent seeds; half-width NaN for n < 2."""
    from scipy import stats

    x = np.asarray(values, dtype=np.float64)
    if len(x) < 2:
        return float(x.mean()), float("nan")
    half = stats.t.ppf(0.5 + confidence / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
    return float(x.mean()), float(half)


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
        from zprl.workspace.online import apply_debug_overrides

        apply_debug_overrides(cfg)
    return cfg, None


def _method_name(cfg, state) -> str:
    if state is not None and "steering" in state:
        return state["steering"]["name"]
    import hydra

    return hydra.utils.get_class(cfg.steering._target_).name


def _base_identity(cfg, state) -> str:
    if state is not None and state.get("base_ckpt_sha256"):
        return f"sha256:{state['base_ckpt_sha256']}"
    path = str(cfg.online_task.base_ckpt)
    if os.path.isfile(path):
        from zprl.common.checkpoint import file_sha256

        return f"sha256:{file_sha256(path)}"
    return f"path:{os.path.abspath(path)}"


def load_run(run_dir: str) -> Run:
    from zprl.common.logging import read_json_lines

    cfg, state = _config_and_state(run_dir)
    o = cfg.online_task
    identity = {"online_task.name": str(o.name), "online_task.eval_start_seed": int(o.eval_start_seed),
                "online_task.n_eval_episodes": int(o.n_eval_episodes), "base checkpoint": _base_identity(cfg, state)}
    records = read_json_lines(os.path.join(run_dir, "logs.json.txt"))
    evals = {}
    for r in records:  # a later record at the same env step wins (e.g. after a resume)
        if "eval/success_rate" in r:
            evals[int(r["env_steps"])] = r
    if not evals:
        raise UserInputError(f"{run_dir}/logs.json.txt has no eval/success_rate record yet; wait for its first evaluation")
    steps = np.array(sorted(evals), dtype=np.int64)
    success = np.array([float(evals[s]["eval/success_rate"]) for s in steps])
    base = [float(r["eval/success_rate"]) for r in evals.values() if r.get("eval/base_only")]
    learning = [r for r in records if r.get("train/warmup") == 0] or [r for r in records if "train/warmup" in r]
    smooth = {}
    for key in ("train/action_delta", "train/action_jerk"):
        vals = [float(r[key]) for r in learning if key in r]
        if vals:
            smooth[key] = float(np.mean(vals))
    return Run(run_dir, _method_name(cfg, state), int(cfg.training.seed), identity, steps, success,
               base[0] if base else None, smooth)


def check_comparable(runs: list[Run]) -> None:
    first = runs[0]
    for run in runs[1:]:
        for key in IDENTITY_FIELDS:
            if run.identity[key] != first.identity[key]:
                raise UserInputError(f"cannot compare {run.path}: {key} is {run.identity[key]} there but "
                                     f"{first.identity[key]} in {first.path}; compare runs of one task, eval seed set "
                                     "and base checkpoint")


# -- summary and report --------------------------------------------------------------------------
METHOD_ORDER = ("zprl", "action_residual", "noise", "embedding_residual")


def group_by_method(runs: list[Run]) -> dict[str, list[Run]]:
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.method, []).append(run)
    order = {m: i for i, m in enumerate(METHOD_ORDER)}
    return dict(sorted(groups.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])))


def summarize(runs: list[Run]) -> dict:
    """Per method: n, seeds, final success and AUC (mean, 95% t half-width), base success, smoothness, env steps."""
    out = {}
    for method, group in group_by_method(runs).items():
        bases = [r.base_success for r in group if r.base_success is not None]
        row = {"n": len(group), "seeds": sorted(r.seed for r in group),
               "final_success": t_interval([r.final_success for r in group]),
               "auc": t_interval([r.auc for r in group]),
               "base_success": float(np.mean(bases)) if bases else None,
               "env_steps": (min(r.env_steps for r in group), max(r.env_steps for r in group))}
        for key in ("train/action_delta", "train/action_jerk"):
            vals = [r.smoothness[key] for r in group if key in r.smoothness]
            row[key] = float(np.mean(vals)) if vals else None
        out[method] = row
    return out


def _pm(mean_half) -> str:
    mean, half = mean_half
    return f"{mean:.3f}" if math.isnan(half) else f"{mean:.3f} ± {half:.3f}"


def _num(x, fmt=".4g") -> str:
    return "–" if x is None else format(x, fmt)


def render_markdown(runs: list[Run], summary: dict, plot_name: str) -> str:
    ident = runs[0].identity
    start, n_eps = ident["online_task.eval_start_seed"], ident["online_task.n_eval_episodes"]
    lines = [f"# Steering comparison: {ident['online_task.name']}", "",
             f"{len(runs)} runs; evaluation on seeds {start}..{start + n_eps - 1} ({n_eps} episodes per evaluation); "
             f"base checkpoint {ident['base checkpoint']}.", "",
             "| method | seeds | final success (mean ± 95% CI) | AUC (mean ± 95% CI) | base success | "
             "action delta | action jerk | env steps |",
             "|---|---|---|---|---|---|---|---|"]
    for method, row in summary.items():
        lo, hi = row["env_steps"]
        steps = f"{lo:,}" if lo == hi else f"{lo:,}–{hi:,}"
        lines.append(f"| {method} | {row['n']} ({', '.join(map(str, row['seeds']))}) | {_pm(row['final_success'])} | "
                     f"{_pm(row['auc'])} | {_num(row['base_success'], '.3f')} | {_num(row['train/action_delta'])} | "
                     f"{_num(row['train/action_jerk'])} | {steps} |")
    lines += ["", f"![success vs env steps]({plot_name})", "",
              "- final success: each run's last evaluation; ± is the half-width of a 95% Student-t interval over "
              "seeds (t_{0.975,n-1}·sd/√n); no interval for a single seed.",
              "- AUC: trapezoid area under success vs env steps over the run's evaluations (the base-policy "
              "evaluation at 0 included) divided by the env-step span: the mean success over training.",
              "- base success: the unsteered base policy through the same interface, before learning.",
              "- action delta / jerk: mean of the logged train/action_delta (mean ‖p_t − p_{t−1}‖ of the commanded "
              "end-effector position, m per control step) and train/action_jerk (mean squared third difference) "
              "over the training records after warm-up.",
              "- env steps = agent steps × n_action_steps.", "",
              "## Runs", "", "| run | method | seed | final success | AUC | env steps |", "|---|---|---|---|---|---|"]
    for run in runs:
        lines.append(f"| {run.path} | {run.method} | {run.seed} | {run.final_success:.3f} | {run.auc:.3f} | "
                     f"{run.env_steps:,} |")
    return "\n".join(lines) + "\n"


def write_report(run_dirs, out_dir: str, name: str = "report") -> dict:
    runs = [load_run(d) for d in expand_run_dirs(run_dirs)]
    check_comparable(runs)  # refuse before anything is written
    from zprl.report_plot import plot_success_curves

    summary = summarize(runs)
    os.makedirs(out_dir, exist_ok=True)
    plot_name = "success_vs_env_steps.png" if name == "report" else f"{name}_success_vs_env_steps.png"
    plot_success_curves(group_by_method(runs), os.path.join(out_dir, plot_name),
                        title=f"{runs[0].identity['online_task.name']}: eval success vs env steps")
    with open(os.path.join(out_dir, f"{name}.md"), "w") as f:
        f.write(render_markdown(runs, summary, plot_name))
    return summary


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="online run directories or Hydra sweep directories")
    p.add_argument("-o", "--output", required=True, help="where report.md and success_vs_env_steps.png go")
    p.add_argument("--name", default="report",
                   help="file stem: NAME.md and NAME_success_vs_env_steps.png (default: report.md, success_vs_env_steps.png)")
    args = p.parse_args(argv)
    if not args.name or os.sep in args.name or args.name.endswith(".md"):
        raise UserInputError(f"--name {args.name!r}: give a bare file stem such as 'results' (no directory, no .md)")
    summary = write_report(args.run_dirs, args.output, args.name)
    for method, row in summary.items():
        print(f"{method}: {row['n']} seeds, final success {_pm(row['final_success'])}, AUC {_pm(row['auc'])}")
    print(f"-> {os.path.join(args.output, args.name + '.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
