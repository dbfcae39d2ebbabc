"""Compare online runs by steering method: the authors' summary protocol, tables and one curve.

    python -m zprl.report RUN_DIR [RUN_DIR ...] -o OUT [--name NAME] [--max-env-steps N]

A RUN_DIR is an online run directory (``.hydra/``, ``logs.json.txt``, ``checkpoints/``) or a Hydra
sweep directory whose sub-directories are runs. Writes ``OUT/NAME.md`` and
``OUT/NAME_success_vs_env_steps.png`` (``report.md`` and ``success_vs_env_steps.png`` by default).
Runs must share the task, the evaluation seeds (``online_task.eval_start_seed``,
``online_task.n_eval_episodes``) and the base checkpoint; otherwise nothing is written and one line
names the run and the field that differs. ``--max-env-steps N`` reads every run as if it had stopped at
N env steps (a partial run beside finished ones, compared over one budget). The output depends on the logs only (no dates, fixed
ordering and number formats): the same logs regenerate the same bytes.

Definitions (also printed in the report, see DEFINITIONS):
- every "mean ± CI" is the mean over seeds +- the half-width of a 95% Student-t interval
  (t_{0.975, n-1} * sd / sqrt(n), sd with n-1; none for one seed);
- final success: the mean of the run's LAST 5 learned evaluations (the authors' definition; the
  base-policy evaluation at 0 is not one of them; fewer when the run has fewer); the run's last
  single evaluation is a separate column;
- env steps to training success x: ``env_steps`` of the first training record whose
  ``train/success_rate_last100`` (success over the last 100 finished training episodes, warm-up
  included; logged only once 100 episodes have finished) is >= x; to eval success x: the first
  evaluation (base evaluation included) with ``eval/success_rate`` >= x; a run that never gets there
  counts as "not reached" with its budget (the last env step it logged);
- AUC: trapezoid area under eval success vs env steps (base evaluation at 0 included) over the
  env-step span, i.e. the span's mean success in [0, 1];
- smoothness (zprl/rl/smoothness.py) in training: mean of ``train/action_delta``/``action_jerk`` over
  the training records after warm-up; in evaluation: mean of ``eval/action_delta``/``action_jerk``
  (actions executed in evaluation, deterministic actor) over the evaluations final success uses;
- wall time: the run's last logged ``time/wall_s`` (resumed segments summed); CPU share:
  ``time/cpu_s`` / ``time/wall_s`` of that record (CPU of the training process and its env workers,
  in cores); wall time to 0.8 eval success: ``time/wall_s`` of the first evaluation >= 0.8.
"""

from __future__ import annotations

import argparse
import math
import os
import sys

import numpy as np

from zprl.common.errors import UserInputError, run_cli
from zprl.report_reading import reading_lines, t_interval
from zprl.report_runs import (  # noqa: F401  (load_run, normalized_auc: part of this module's API)
    ACTOR_LOSS_BOUND, FINAL_EVALS, LAST100_EPISODES, SMOOTHNESS_KEYS, Run, check_comparable, expand_run_dirs,
    label_variants, load_run, normalized_auc,
)

TRAIN_THRESHOLDS = (0.5, 0.8, 0.9, 0.95)  # on train/success_rate_last100
EVAL_THRESHOLDS = (0.5, 0.8, 0.9)         # on eval/success_rate
WALL_TIME_THRESHOLD = 0.8                 # wall-clock time to this eval success, per run


# -- summary and report --------------------------------------------------------------------------
METHOD_ORDER = ("zprl", "action_residual", "noise", "embedding_residual")


def group_by_method(runs: list[Run]) -> dict[str, list[Run]]:
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.method, []).append(run)
    order = {m: i for i, m in enumerate(METHOD_ORDER)}

    def rank(name: str) -> tuple:
        base = name.split(" (")[0]  # variants sort with their interface
        return order.get(base, len(order)), name

    return dict(sorted(groups.items(), key=lambda kv: rank(kv[0])))


def _interval_or_none(values) -> tuple[float, float] | None:
    values = [v for v in values if v is not None]
    return t_interval(values) if values else None


def summarize(runs: list[Run]) -> dict:
    """Per method: n, seeds; (mean, 95% t half-width) over seeds of final success (last 5), last evaluation,
    AUC, smoothness (train/ and eval/), wall time and CPU share; base success; env steps (min, max); and
    per threshold x in ``train_reach``/``eval_reach``: (env steps of the seeds that reached x, budgets of
    those that did not)."""
    out = {}
    for method, group in group_by_method(runs).items():
        bases = [r.base_success for r in group if r.base_success is not None]
        row = {"n": len(group), "seeds": sorted(r.seed for r in group),
               "final_success": t_interval([r.final_success for r in group]),
               "n_final": (min(r.n_final for r in group), max(r.n_final for r in group)),
               "last_success": t_interval([r.last_success for r in group]),
               "auc": t_interval([r.auc for r in group]),
               "base_success": float(np.mean(bases)) if bases else None,
               "env_steps": (min(r.env_steps for r in group), max(r.env_steps for r in group)),
               "wall_s": _interval_or_none([r.wall_s for r in group]),
               "cpu_share": _interval_or_none([r.cpu_share for r in group])}
        for key in ("train/action_delta", "train/action_jerk"):
            row[key] = _interval_or_none([r.smoothness.get(key) for r in group])
        for key in SMOOTHNESS_KEYS:
            row[f"eval/{key}"] = _interval_or_none([r.final_eval_smoothness(key) for r in group])
        for kind, thresholds, fn in (("train_reach", TRAIN_THRESHOLDS, Run.steps_to_train),
                                     ("eval_reach", EVAL_THRESHOLDS, Run.steps_to_eval)):
            row[kind] = {}
            for x in thresholds:
                hits = [fn(r, x) for r in group]
                row[kind][x] = ([h for h in hits if h is not None],
                                [r.env_steps for r, h in zip(group, hits) if h is None])
        out[method] = row
    return out


def _pm(mean_half, fmt: str = ".3f") -> str:
    if mean_half is None:
        return "–"
    mean, half = mean_half
    return format(mean, fmt) if math.isnan(half) else f"{format(mean, fmt)} ± {format(half, fmt)}"


def _num(x, fmt=".4g") -> str:
    return "–" if x is None else format(x, fmt)


def _steps_range(values) -> str:
    lo, hi = min(values), max(values)
    return f"{lo:,}" if lo == hi else f"{lo:,}–{hi:,}"


def _not_reached(budgets) -> str:
    return f"not reached (budget {_steps_range(budgets)} env steps)"


def _reach_cell(reached: list[int], missed_budgets: list[int]) -> str:
    """mean ± CI over the seeds that reached it; the others as 'not reached' with their budget."""
    if not reached:
        return _not_reached(missed_budgets)
    cell = _pm(t_interval(reached), ",.0f")
    if missed_budgets:
        n = len(reached) + len(missed_budgets)
        cell += f" ({len(reached)} of {n} seeds); {len(missed_budgets)} {_not_reached(missed_budgets)}"
    return cell


def _run_reach(value: int | None, run: Run) -> str:
    return f"{value:,}" if value is not None else f"not reached (budget {run.env_steps:,})"


def _minutes(seconds) -> str:
    return "–" if seconds is None else f"{seconds / 60:.1f} min"


def _wall_to(run: Run, x: float) -> str:
    t = run.wall_to_eval(x)
    if t is None:
        return "not reached"
    return "– (no time logged)" if math.isnan(t) else _minutes(t)


def _fmt_x(x: float) -> str:
    return f"{x:g}"


DEFINITIONS = [
    "mean ± CI: the mean over seeds ± the half-width of a 95% Student-t interval (t_{0.975,n-1}·sd/√n, sd "
    "with n−1); no interval for a single seed.",
    f"final success: the mean of the run's last {FINAL_EVALS} evaluations of the learned policy (the authors' "
    "definition; the base-policy evaluation at 0 is not one of them, and a run with fewer learned evaluations "
    "averages those it has); 'last evaluation' is the run's last single evaluation.",
    "AUC: trapezoid area under eval success vs env steps over the run's evaluations (the base-policy evaluation "
    "at 0 included) divided by the env-step span: the mean success over training.",
    "base success: the unsteered base policy through the same interface, before learning.",
    f"env steps to training success x: env steps of the first training log record whose "
    f"train/success_rate_last100 (success over the last {LAST100_EPISODES} finished training episodes, warm-up "
    f"included; logged only once at least {LAST100_EPISODES} episodes have finished) is ≥ x. Resolution: the "
    "log interval (training.log_every).",
    "env steps to eval success x: env steps of the first evaluation (base-policy evaluation at 0 included) with "
    "eval/success_rate ≥ x. Resolution: the evaluation interval (training.eval_every).",
    "not reached: the run never got there; its budget is the last env step it logged. A method's mean ± CI is "
    "over the seeds that reached the threshold only; how many did not is stated beside it.",
    "action delta / jerk: mean ‖p_t − p_{t−1}‖ of the commanded end-effector position (m per control step) and "
    "mean squared third difference ‖p_t − 3p_{t−1} + 3p_{t−2} − p_{t−3}‖², over the actions executed, never "
    "across episode boundaries (zprl/rl/smoothness.py). Training: mean of the logged train/action_delta and "
    "train/action_jerk (stochastic actor, exploration) over the training records after warm-up (a record whose "
    "value is not finite is left out and counted under the table). Evaluation: "
    f"mean of eval/action_delta and eval/action_jerk (deterministic actor) over the evaluations final success "
    "uses.",
    "wall time: the run's last logged time/wall_s (resumed segments summed; evaluations included). CPU share: "
    "time/cpu_s / time/wall_s of that record, where time/cpu_s is the user + system CPU time of the training "
    "process and its env worker processes: the number of cores the run kept busy on average.",
    f"wall time to {_fmt_x(WALL_TIME_THRESHOLD)} eval success: time/wall_s of the run's first evaluation with "
    f"eval/success_rate ≥ {_fmt_x(WALL_TIME_THRESHOLD)}.",
    "env steps = agent steps × n_action_steps.",
]


def render_markdown(runs: list[Run], summary: dict, plot_name: str, max_env_steps: int | None = None) -> str:
    ident = runs[0].identity
    start, n_eps = ident["online_task.eval_start_seed"], ident["online_task.n_eval_episodes"]
    cut = ("" if max_env_steps is None else
           f" Every run is read up to {max_env_steps:,} env steps (`--max-env-steps`): what it logged later is left out.")
    lines = [f"# Steering comparison: {ident['online_task.name']}", "",
             f"{len(runs)} runs; evaluation on seeds {start}..{start + n_eps - 1} ({n_eps} episodes per evaluation); "
             f"base checkpoint {ident['base checkpoint']}.{cut}", "",
             f"| method | seeds | final success (mean of last {FINAL_EVALS} evals, mean ± 95% CI) | last evaluation | "
             "AUC | base success | env steps | wall time per run | CPU share (cores) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for method, row in summary.items():
        lo, hi = row["n_final"]
        n_final = ("" if lo == hi == FINAL_EVALS else f" (only {lo} eval{'s' if lo > 1 else ''})" if lo == hi
                   else f" (only {lo}–{hi} evals)")
        lines.append(f"| {method} | {row['n']} ({', '.join(map(str, row['seeds']))}) | {_pm(row['final_success'])}"
                     f"{n_final} | {_pm(row['last_success'])} | {_pm(row['auc'])} | {_num(row['base_success'], '.3f')} | "
                     f"{_steps_range(row['env_steps'])} | "
                     f"{_pm(None if row['wall_s'] is None else tuple(v / 60 for v in row['wall_s']), '.1f')}"
                     f"{'' if row['wall_s'] is None else ' min'} | {_pm(row['cpu_share'], '.2f')} |")
    lines += ["", "## Env steps to reach a success rate (mean ± 95% CI over seeds)", "",
              "| method | " + " | ".join(f"train {_fmt_x(x)}" for x in TRAIN_THRESHOLDS) + " | "
              + " | ".join(f"eval {_fmt_x(x)}" for x in EVAL_THRESHOLDS) + " |",
              "|---|" + "---|" * (len(TRAIN_THRESHOLDS) + len(EVAL_THRESHOLDS))]
    for method, row in summary.items():
        cells = [_reach_cell(*row["train_reach"][x]) for x in TRAIN_THRESHOLDS]
        cells += [_reach_cell(*row["eval_reach"][x]) for x in EVAL_THRESHOLDS]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    lines += ["", "training success = success over the last 100 finished training episodes "
              f"(train/success_rate_last100, at least {LAST100_EPISODES} finished episodes); eval success = "
              "eval/success_rate on the held-out seeds.", "",
              "## Smoothness of executed actions (mean ± 95% CI over seeds)", "",
              "| method | train action delta | train action jerk | eval action delta | eval action jerk |",
              "|---|---|---|---|---|"]
    for method, row in summary.items():
        lines.append(f"| {method} | {_pm(row['train/action_delta'], '.4g')} | {_pm(row['train/action_jerk'], '.4g')} | "
                     f"{_pm(row['eval/action_delta'], '.4g')} | {_pm(row['eval/action_jerk'], '.4g')} |")
    skipped = [r for r in runs if r.smoothness_skipped]
    if skipped:
        lines += ["", "training smoothness leaves out records whose value is not finite (an env fault's chunk in "
                  "their window): " + ", ".join(f"{r.path} ({r.smoothness_skipped})" for r in skipped) + "."]
    blown = [r for r in runs if r.sac_blowups]
    if blown:
        lines += ["", f"SAC actor loss beyond ±{ACTOR_LOSS_BOUND:g} in a log window (healthy runs stay within about ±1; "
                  "such a window held updates on states far outside the rest, e.g. the VIB posterior's blow-ups of "
                  "docs/steering.md): " + ", ".join(f"{r.path} ({len(r.sac_blowups)} of {r.sac_records} training "
                                                    f"records, first at {r.sac_blowups[0]:,} env steps)" for r in blown) + "."]
    base_smooth = {k: [v for v in (r.base_eval_smoothness(k) for r in runs) if v is not None] for k in SMOOTHNESS_KEYS}
    if all(base_smooth.values()):
        lines += ["", f"base policy in evaluation (mean over the {len(base_smooth['action_delta'])} runs' base "
                  f"evaluations): action delta {np.mean(base_smooth['action_delta']):.4g}, action jerk "
                  f"{np.mean(base_smooth['action_jerk']):.4g}."]
    lines += ["", f"![success vs env steps]({plot_name})", ""]
    lines += reading_lines(group_by_method(runs))
    lines += ["", "## Definitions", ""]
    lines += [f"- {d}" for d in DEFINITIONS]
    wall_x = _fmt_x(WALL_TIME_THRESHOLD)
    lines += ["", "## Runs", "",
              f"| run | method | seed | final success (last {FINAL_EVALS}) | last evaluation | AUC | env steps | "
              + " | ".join(f"train {_fmt_x(x)}" for x in TRAIN_THRESHOLDS) + " | "
              + " | ".join(f"eval {_fmt_x(x)}" for x in EVAL_THRESHOLDS)
              + f" | wall time | CPU share | wall time to {wall_x} eval success |",
              "|" + "---|" * (10 + len(TRAIN_THRESHOLDS) + len(EVAL_THRESHOLDS))]
    for run in runs:
        reach = [_run_reach(run.steps_to_train(x), run) for x in TRAIN_THRESHOLDS]
        reach += [_run_reach(run.steps_to_eval(x), run) for x in EVAL_THRESHOLDS]
        lines.append(f"| {run.path} | {run.method} | {run.seed} | {run.final_success:.3f} | {run.last_success:.3f} | "
                     f"{run.auc:.3f} | {run.env_steps:,} | " + " | ".join(reach) + f" | {_minutes(run.wall_s)} | "
                     f"{_num(run.cpu_share, '.2f')} | {_wall_to(run, WALL_TIME_THRESHOLD)} |")
    return "\n".join(lines) + "\n"


def write_report(run_dirs, out_dir: str, name: str = "report", max_env_steps: int | None = None) -> dict:
    runs = [load_run(d, max_env_steps) for d in expand_run_dirs(run_dirs)]
    check_comparable(runs)  # refuse before anything is written
    label_variants(runs)
    from zprl.report_plot import plot_success_curves

    summary = summarize(runs)
    os.makedirs(out_dir, exist_ok=True)
    plot_name = "success_vs_env_steps.png" if name == "report" else f"{name}_success_vs_env_steps.png"
    plot_success_curves(group_by_method(runs), os.path.join(out_dir, plot_name),
                        title=f"{runs[0].identity['online_task.name']}: eval success vs env steps")
    with open(os.path.join(out_dir, f"{name}.md"), "w") as f:
        f.write(render_markdown(runs, summary, plot_name, max_env_steps))
    return summary


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="online run directories or Hydra sweep directories")
    p.add_argument("-o", "--output", required=True, help="where report.md and success_vs_env_steps.png go")
    p.add_argument("--name", default="report",
                   help="file stem: NAME.md and NAME_success_vs_env_steps.png (default: report.md, success_vs_env_steps.png)")
    p.add_argument("--max-env-steps", type=int, default=None, metavar="N",
                   help="read every run only up to N env steps (compare runs of different lengths over one budget)")
    args = p.parse_args(argv)
    if args.max_env_steps is not None and args.max_env_steps < 0:
        raise UserInputError(f"--max-env-steps {args.max_env_steps}: give a budget of 0 or more env steps")
    if not args.name or os.sep in args.name or args.name.endswith(".md"):
        raise UserInputError(f"--name {args.name!r}: give a bare file stem such as 'results' (no directory, no .md)")
    summary = write_report(args.run_dirs, args.output, args.name, args.max_env_steps)
    for method, row in summary.items():
        print(f"{method}: {row['n']} seed{'s' if row['n'] > 1 else ''}, final success (last {FINAL_EVALS} evals) "
              f"{_pm(row['final_success'])}, AUC {_pm(row['auc'])}")
    print(f"-> {os.path.join(args.output, args.name + '.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
