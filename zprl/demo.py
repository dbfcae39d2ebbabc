"""``make demo``: ZPRL end to end on lift (low-dim), sized for a CPU.

    python -m zprl.demo [--fast] [--out DIR]

Five stages, each through the project's own entry points: mixed-quality demos converted to absolute
actions (zprl.data.prepare), the base policy (train.py, offline workspace), its held-out evaluation
(eval_base.py), ZPRL online steering (train.py, online workspace) and the steered policy's
evaluation on the same seeds (eval_sum.py). Then a table (base vs ZPRL, env steps, wall times) and a
learning-curve PNG. Everything lands in ``data/demo/`` (``data/demo/fast/`` with ``--fast``); the sizes
of every stage and the output paths are in zprl/demo_plan.py.

Re-running skips a stage only when its output is complete (the hdf5 validates with the demo count,
the checkpoint loads and its counters reach the planned end, eval_log.json lists every episode); a
partial stage is resumed from its checkpoint or redone, and every stage after a redone one is redone.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time

from zprl.common.errors import UserInputError, run_cli
from zprl.common.machine import isa_env_pins
from zprl.data.paths import repo_root

from zprl.demo_plan import EVAL_START_SEED, FAST, TASK, DemoPaths, DemoPlan


# ---- completeness checks: None when the stage's output is complete, else why not -------------------

def dataset_problem(path: str, plan: DemoPlan) -> str | None:
    from zprl.data.robomimic_file import check_robomimic_file
    from zprl.env.robomimic_env import ENV_NAMES

    if not os.path.exists(path):
        return f"{path} does not exist"
    try:
        info = check_robomimic_file(path, abs_action=True)
    except UserInputError as err:
        return str(err)
    except Exception as err:  # a truncated file can fail inside h5py's readers
        return f"{path} is unreadable ({type(err).__name__}: {err})"
    if info["env_meta"].get("env_name") != ENV_NAMES[TASK]:
        return f"{path} holds {info['env_meta'].get('env_name')} demos, not {ENV_NAMES[TASK]}"
    if info["num_demos"] != plan.num_demos:
        return f"{path} has {info['num_demos']} demos, not {plan.num_demos}"
    generated = info["generated"] or {}
    if generated.get("quality") != "mixed" or generated.get("seed") != 0:
        return f"{path} was not generated as the demo's mixed-quality set (seed 0)"
    if not (generated.get("conversion") or info["converted"]):
        return f"{path} carries no record of a finished conversion to absolute actions"
    return None


def _load(path: str):
    from zprl.common.checkpoint import load_checkpoint

    if not os.path.isfile(path):
        return None, f"{path} does not exist"
    try:
        payload = load_checkpoint(path)
    except Exception as err:  # truncated or not a torch file
        return None, f"{path} does not load ({type(err).__name__})"
    if not isinstance(payload, dict) or "state" not in payload or "cfg" not in payload:
        return None, f"{path} is not a zprl checkpoint"
    return payload, None


def offline_problem(run_dir: str, num_epochs: int) -> tuple[str | None, bool]:
    """(why the offline run is unfinished or None, whether its latest.ckpt can be resumed)."""
    payload, why = _load(os.path.join(run_dir, "checkpoints", "latest.ckpt"))
    if payload is None:
        return why, False
    planned = payload["cfg"]["training"]["num_epochs"]
    if planned != num_epochs:
        return f"the run was planned for {planned} epochs, not {num_epochs}", False
    epoch = payload["state"]["epoch"]
    if epoch < num_epochs:
        return f"stopped after epoch {epoch} of {num_epochs}", True
    return None, True


def online_problem(run_dir: str, total_agent_steps: int, base_ckpt: str) -> tuple[str | None, bool]:
    """(why the online run is unfinished or None, whether its latest.ckpt can be resumed)."""
    from zprl.common.checkpoint import file_sha256

    payload, why = _load(os.path.join(run_dir, "checkpoints", "latest.ckpt"))
    if payload is None:
        return why, False
    state = payload["state"]
    if not os.path.isfile(base_ckpt) or state.get("base_ckpt_sha256") != file_sha256(base_ckpt):
        return f"the run steered another base checkpoint than {base_ckpt}", False
    planned = payload["cfg"]["training"]["total_agent_steps"]
    if planned != total_agent_steps:
        return f"the run was planned for {planned} agent steps, not {total_agent_steps}", False
    steps = state["counters"]["agent_steps"]
    if steps < total_agent_steps:
        return f"stopped at {steps} of {total_agent_steps} agent steps", True
    final = os.path.join(run_dir, "checkpoints", f"step_{steps:06d}.ckpt")
    if _load(final)[0] is None:
        return f"{final} is missing or does not load", True
    return None, True


def eval_problem(output_dir: str, n_episodes: int, checkpoint: str) -> str | None:
    path = os.path.join(output_dir, "eval_log.json")
    try:
        with open(path) as f:
            log = json.load(f)
    except FileNotFoundError:
        return f"{path} does not exist"
    except (OSError, ValueError) as err:
        return f"{path} does not parse ({type(err).__name__})"
    seeds = [e.get("seed") for e in log.get("episodes", [])]
    if seeds != list(range(EVAL_START_SEED, EVAL_START_SEED + n_episodes)) or log.get("n_episodes") != n_episodes:
        return f"{path} lists {len(seeds)} episodes, not seeds {EVAL_START_SEED}..+{n_episodes}"
    if os.path.abspath(log.get("checkpoint", "")) != os.path.abspath(checkpoint):
        return f"{path} evaluated {log.get('checkpoint')}, not {checkpoint}"
    if "max_steps" not in log or "n_envs" not in log:  # written before the online stage could read it
        return f"{path} is from an older zprl (no max_steps / n_envs)"
    return None


# ---- stages ----------------------------------------------------------------------------------------

# The CPU code paths that change float rounding, pinned to AVX2 as the evidence scripts pin them:
# torch, MKL, oneDNN and numpy pick their kernels by CPU, and AVX-512 kernels sum in another order,
# so an unpinned demo can print other figures on another machine. Only the stages run as commands
# (train.py, eval_base.py, eval_sum.py) are pinned; the data stage and MuJoCo are not.
AVX2_KERNEL_PINS = isa_env_pins()


def kernel_pins(cpuinfo: str = "/proc/cpuinfo") -> dict[str, str]:
    """AVX2_KERNEL_PINS where the CPU has AVX2 (an x86 Linux machine), else none: pinning a CPU
    without AVX2 to it would select instructions it cannot run."""
    try:
        with open(cpuinfo) as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return {}
    return dict(AVX2_KERNEL_PINS) if "avx2" in flags else {}


def _run(cmd: list[str]) -> None:
    env = dict(os.environ)
    for key, value in kernel_pins().items():  # a user's own setting wins
        env.setdefault(key, value)
    # one torch thread per process unless a stage asks for more (the offline stage, which runs alone);
    # threads that sleep when idle: spinning OpenMP threads beside other work made a 2-thread training
    # step 2.2x slower than a 1-thread one on 2 busy cores, sleeping ones cost nothing there
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    env.setdefault("MUJOCO_GL", "egl")
    env.setdefault("PYOPENGL_PLATFORM", env["MUJOCO_GL"])
    print("$ " + " ".join(cmd[1:] if cmd[0] == sys.executable else cmd), flush=True)
    proc = subprocess.run([sys.executable, *cmd[1:]] if cmd[0] == "python" else cmd, cwd=repo_root(), env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"stage command failed with exit status {proc.returncode}: {' '.join(cmd)}")


def run_data(paths: DemoPaths, plan: DemoPlan) -> None:
    from zprl.data.prepare import delta_path_for, prepare

    # prepare() refuses to touch a file that is not what it would make: clear what is incomplete
    if os.path.exists(paths.dataset):
        os.remove(paths.dataset)
    delta = delta_path_for(paths.dataset, "low_dim")
    if os.path.exists(delta):
        from zprl.data.prepare import file_problem

        if file_problem(delta, TASK, "low_dim", plan.num_demos, absolute=False,
                    made_with={"task": TASK, "quality": "mixed", "seed": 0}) is not None:
            os.remove(delta)
    # the conversion's replay check in 2 processes (the same file as with 1)
    prepare(TASK, "low_dim", num_demos=plan.num_demos, seed=0, quality="mixed", output=paths.dataset,
            workers=min(2, os.cpu_count() or 1))


def run_offline(paths: DemoPaths, plan: DemoPlan) -> None:
    _, resumable = offline_problem(paths.offline, plan.num_epochs)
    if not resumable and os.path.exists(paths.offline):
        shutil.rmtree(paths.offline)  # nothing to resume from: start clean, not on top of old logs
    _run(["python", "train.py", "--config-name=train_flow_match_vib_unet_image_workspace",
          *plan.offline_overrides(paths.dataset, paths.offline)])


def _run_eval(script: str, checkpoint: str, output_dir: str, plan: DemoPlan) -> None:
    if os.path.exists(output_dir):
        shutil.rmtree(output_dir)  # the entry points refuse to overwrite an evaluation
    _run(["python", script, "-c", checkpoint, "-o", output_dir, "-d", plan.device, "-n", str(plan.eval_episodes),
          "--n_vis", str(plan.eval_vis), "--n_envs", str(plan.n_eval_envs)])


def run_eval_base(paths: DemoPaths, plan: DemoPlan) -> None:
    _run_eval("eval_base.py", paths.base_ckpt, paths.eval_base, plan)


def run_online(paths: DemoPaths, plan: DemoPlan) -> None:
    _, resumable = online_problem(paths.online, plan.total_agent_steps, paths.base_ckpt)
    if not resumable and os.path.exists(paths.online):
        shutil.rmtree(paths.online)
    _run(["python", "train.py", "--config-name=train_online_vib_robomimic_workspace",
          *plan.online_overrides(paths.base_ckpt, paths.online, os.path.join(paths.eval_base, "eval_log.json"))])


def final_online_ckpt(paths: DemoPaths) -> str:
    payload, why = _load(os.path.join(paths.online, "checkpoints", "latest.ckpt"))
    if payload is None:
        raise RuntimeError(f"the online stage left no usable checkpoint: {why}")
    return paths.online_ckpt(payload["state"]["counters"]["agent_steps"])


def run_eval_zprl(paths: DemoPaths, plan: DemoPlan) -> None:
    _run_eval("eval_sum.py", final_online_ckpt(paths), paths.eval_zprl, plan)


def stages(paths: DemoPaths, plan: DemoPlan) -> list[tuple[str, callable, callable]]:
    """(name, problem() -> str | None, run()) in order."""
    return [
        (f"data: {plan.num_demos} mixed-quality demos", lambda: dataset_problem(paths.dataset, plan),
         lambda: run_data(paths, plan)),
        (f"base policy: {plan.num_epochs} epochs", lambda: offline_problem(paths.offline, plan.num_epochs)[0],
         lambda: run_offline(paths, plan)),
        (f"eval base: {plan.eval_episodes} episodes",
         lambda: eval_problem(paths.eval_base, plan.eval_episodes, paths.base_ckpt),
         lambda: run_eval_base(paths, plan)),
        (f"ZPRL online: {plan.total_agent_steps} agent steps",
         lambda: online_problem(paths.online, plan.total_agent_steps, paths.base_ckpt)[0],
         lambda: run_online(paths, plan)),
        (f"eval ZPRL: {plan.eval_episodes} episodes",
         lambda: eval_problem(paths.eval_zprl, plan.eval_episodes, _final_or_missing(paths)),
         lambda: run_eval_zprl(paths, plan)),
    ]


def _final_or_missing(paths: DemoPaths) -> str:
    try:
        return final_online_ckpt(paths)
    except RuntimeError:
        return os.path.join(paths.online, "checkpoints", "<none>")


def _read_json(path: str, default):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return default


def _write_json(path: str, data) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2)
    os.replace(tmp, path)


def run_stages(paths: DemoPaths, plan: DemoPlan, stage_list=None) -> dict[str, dict]:
    """Run what is not complete; a stage after one that ran is redone (its input changed)."""
    os.makedirs(paths.out, exist_ok=True)
    timings = _read_json(paths.timings, {})
    report, upstream_ran = {}, False
    for name, problem, run in (stage_list or stages(paths, plan)):
        why = problem()
        if why is None and not upstream_ran:
            print(f"[demo] {name}: complete, skipped", flush=True)
            report[name] = {"status": "skipped", "seconds": timings.get(name)}
            continue
        reason = "an earlier stage was redone" if why is None else why
        print(f"[demo] {name}: running ({reason})", flush=True)
        start = time.monotonic()
        run()
        seconds = time.monotonic() - start
        why = problem()
        if why is not None:
            raise RuntimeError(f"stage '{name}' finished but its output is incomplete: {why}")
        upstream_ran = True
        timings[name] = seconds
        _write_json(paths.timings, timings)
        report[name] = {"status": "ran", "seconds": seconds}
    return report


# ---- the summary -----------------------------------------------------------------------------------

def _fmt_seconds(s) -> str:
    if s is None:
        return "?"
    s = int(round(s))
    return f"{s // 60}m {s % 60:02d}s"


def summarize(paths: DemoPaths, plan: DemoPlan, report: dict) -> str:
    from zprl.demo_plot import plot_learning_curve

    base = _read_json(os.path.join(paths.eval_base, "eval_log.json"), {})
    zprl = _read_json(os.path.join(paths.eval_zprl, "eval_log.json"), {})
    curve = plot_learning_curve(os.path.join(paths.online, "logs.json.txt"), base["mean_score"], paths.curve,
                                final=(zprl["env_steps"], zprl["mean_score"]))
    n = plan.eval_episodes
    wins = lambda log: sum(bool(e["success"]) for e in log["episodes"])  # noqa: E731
    lines = [
        "",
        f"ZPRL demo: {TASK}, low-dim observations, absolute actions — {paths.out}",
        f"{'stage':<40} {'status':<8} {'wall time':>10}",
    ]
    total = 0.0
    for name, r in report.items():
        total += r["seconds"] or 0.0
        status = r["status"] if r["status"] == "ran" else "skipped"
        lines.append(f"{name:<40} {status:<8} {_fmt_seconds(r['seconds']):>10}")
    lines.append(f"{'total (stage wall times)':<40} {'':<8} {_fmt_seconds(total):>10}")
    lines += [
        "",
        f"success on the same {n} held-out seeds ({EVAL_START_SEED}..{EVAL_START_SEED + n - 1}):",
        f"  base policy    {base['mean_score']:.2f}  ({wins(base)}/{n})",
        f"  ZPRL-steered   {zprl['mean_score']:.2f}  ({wins(zprl)}/{n})",
        f"  online env steps used: {zprl['env_steps']} ({zprl['agent_steps']} agent steps x "
        f"{zprl['n_action_steps']} actions, {plan.n_envs} envs)",
        "",
        f"learning curve: {curve}",
        f"eval videos:    {os.path.join(paths.eval_base, 'media')}  {os.path.join(paths.eval_zprl, 'media')}",
    ]
    _write_json(paths.summary, {"base_success": base["mean_score"], "zprl_success": zprl["mean_score"],
                                "n_episodes": n, "env_steps": zprl["env_steps"], "curve": curve,
                                "stages": report})
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m zprl.demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--fast", action="store_true", help="a few-minute smoke version of every stage")
    p.add_argument("--out", default=None, help="output directory (default: data/demo, or data/demo/fast)")
    p.add_argument("--device", default="cpu", help="torch device of training and evaluation, e.g. cuda:0 "
                   "(default cpu: the sizes are a CPU's; the results differ in float rounding from CPU's)")
    args = p.parse_args(argv)
    fast = args.fast or os.environ.get("ZPRL_DEMO_FAST", "") not in ("", "0")
    plan = dataclasses.replace(FAST if fast else DemoPlan(), device=args.device)
    out = args.out or os.path.join(repo_root(), "data", "demo", *(["fast"] if fast else []))
    if os.path.exists(out) and not os.path.isdir(out):
        raise UserInputError(f"--out {out} is a file; give a directory for the demo's outputs")
    from zprl.devices import resolve_device

    resolve_device(args.device, "--device")  # a device that is not here: one line before any stage runs
    paths = DemoPaths(out)
    start = time.monotonic()
    try:
        report = run_stages(paths, plan)
    except RuntimeError as err:  # the stage's own output above says what went wrong
        print(f"error: {err}; re-run the same command to continue", file=sys.stderr)
        return 1
    print(summarize(paths, plan, report))
    print(f"this invocation took {_fmt_seconds(time.monotonic() - start)}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
