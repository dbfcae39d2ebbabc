"""Turn a robomimic file's delta OSC actions into absolute end-effector goals.

For every step the stored simulator state is restored, the stored delta action is handed to each
arm's OSC controller (robosuite's own ``set_goal``), and the goal the controller derives from it is
recorded: position(3) + axis-angle(3) of the goal orientation (world frame) + the gripper command.
An absolute-pose controller fed that goal reproduces the same motion, which the check verifies by
replaying both action kinds from each demo's first state.

    python -m zprl.data.convert_abs --input IN --output OUT [--overwrite] [--workers N] [--no-check]
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from zprl.common.errors import UserInputError, run_cli
from zprl.data.robomimic_file import ARM_ACTION_DIM, check_robomimic_file, num_arms

CONVERTER = "zprl.data.convert_abs"
TARGET_REPLAY_SUCCESS = 0.95


# --------------------------------------------------------------------------- simulation core


def make_replay_env(env_meta: dict, abs_action: bool):
    """Low-dim env without rendering: conversion and replay never need pixels."""
    from zprl.env.robomimic_env import LOW_DIM_KEYS, create_env

    return create_env(env_meta, obs_keys=LOW_DIM_KEYS, render_offscreen=False,
                      abs_action=abs_action, hard_reset=False)


def _restore(env, state, model_xml=None):
    if model_xml is not None:
        env.reset_to({"model": model_xml, "states": state})
    else:
        # Setting the state directly skips robomimic's observation pass; only the sim matters here.
        env.env.sim.set_state_from_flattened(state)
        env.env.sim.forward()


def _start_episode(env, state, model_xml=None, init_qpos_posture=False):
    """Restore a demo's first state and set every controller up as it was when the demo began.

    A recorded episode starts at a reset, where robosuite gives each controller the robot's own
    joints as nullspace posture and its own pose as goal. After loading a state both would still
    come from this env's reset (other random joint noise): the posture bends the replayed motion,
    and a stale goal orientation matters whenever a delta action has an exactly zero rotation
    (robosuite then keeps the previous goal orientation). ``init_qpos_posture``: the recording's
    posture was the robot's noiseless ``init_qpos`` instead (zprl's generator sets it so, see
    zprl/data/generate_demos.py); replaying a transport demo with the wrong posture drifts off it
    from the first step and fails most hand-overs.
    """
    if model_xml is None:
        env.reset()
    _restore(env, state, model_xml)
    for robot in env.env.robots:
        ctrl = robot.controller
        ctrl.update(force=True)
        # (also resets the goal to the current pose)
        ctrl.update_initial_joints(robot.init_qpos if init_qpos_posture else ctrl.joint_pos)


def _arm_slices(env):
    out, start = [], 0
    for robot in env.env.robots:
        dim = robot.controller.control_dim
        out.append((robot.controller, slice(start, start + dim), slice(start + dim, start + robot.action_dim)))
        start += robot.action_dim
    return out


def delta_to_absolute(env, states: np.ndarray, actions: np.ndarray, model_xml: str | None = None) -> np.ndarray:
    """Absolute actions for one demo; ``env`` must use delta OSC_POSE control."""
    import robosuite.utils.transform_utils as T

    if actions.shape[1] != sum(r.action_dim for r in env.env.robots):
        raise ValueError(f"actions have {actions.shape[1]} dims, env expects "
                         f"{sum(r.action_dim for r in env.env.robots)}")
    _start_episode(env, states[0], model_xml)
    # robosuite builds new controller objects on every reset, so look them up afterwards.
    arms = _arm_slices(env)
    if any(not c.use_delta for c, _, _ in arms):
        raise ValueError("delta_to_absolute needs an env whose controllers take delta actions")
    out = np.zeros((len(actions), ARM_ACTION_DIM * len(arms)), dtype=np.float64)
    for t in range(len(actions)):
        if t > 0:
            _restore(env, states[t])
        for i, (ctrl, arm, grip) in enumerate(arms):
            ctrl.update(force=True)
            # Goals carry over between steps exactly as in the recorded run, since steps go in order.
            ctrl.set_goal(actions[t, arm])
            o = ARM_ACTION_DIM * i
            out[t, o:o + 3] = ctrl.goal_pos
            out[t, o + 3:o + 6] = T.quat2axisangle(T.mat2quat(ctrl.goal_ori))
            out[t, o + 6:o + ARM_ACTION_DIM] = actions[t, grip]
    return out


def replay(env, initial_state: np.ndarray, actions: np.ndarray, model_xml: str | None = None,
           init_qpos_posture: bool = False):
    """Run actions open-loop from a state; returns (ever succeeded, eef positions (T, arms, 3))."""
    _start_episode(env, initial_state, model_xml, init_qpos_posture)
    sim = env.env.sim
    names = [r.controller.eef_name for r in env.env.robots]
    eef = np.zeros((len(actions), len(names), 3))
    success = False
    for t, a in enumerate(actions):
        env.env.step(a)
        sim.forward()  # after mj_step the kinematics still describe the state before the last substep
        eef[t] = [sim.data.get_site_xpos(n) for n in names]
        success = success or bool(env.is_success()["task"])
    return success, eef


# --------------------------------------------------------------------------- per-demo work


class DemoConverter:
    """Holds the envs one process needs; converts and (optionally) checks demos one by one."""

    def __init__(self, env_meta: dict, check: bool, init_qpos_posture: bool = False):
        self.init_qpos_posture = init_qpos_posture  # the replays' controller posture (_start_episode)
        self.delta_env = make_replay_env(env_meta, abs_action=False)
        self.abs_env = make_replay_env(env_meta, abs_action=True) if check else None

    def __call__(self, path: str, demo: str) -> dict:
        import h5py

        with h5py.File(path, "r") as f:
            g = f["data"][demo]
            states = g["states"][()]
            actions = g["actions"][()]
            model = g.attrs.get("model_file")
        model = model.decode() if isinstance(model, bytes) else model
        result = {"demo": demo, "actions": delta_to_absolute(self.delta_env, states, actions, model)}
        if self.abs_env is not None:
            ok_delta, eef_delta = replay(self.delta_env, states[0], actions, None, self.init_qpos_posture)
            ok_abs, eef_abs = replay(self.abs_env, states[0], result["actions"], model, self.init_qpos_posture)
            result.update(delta_success=ok_delta, abs_success=ok_abs,
                          max_eef_gap=float(np.linalg.norm(eef_delta - eef_abs, axis=-1).max()))
        return result


_worker: DemoConverter | None = None


def _init_worker(env_meta: dict, check: bool, init_qpos_posture: bool) -> None:
    global _worker
    import torch

    torch.set_num_threads(1)
    _worker = DemoConverter(env_meta, check, init_qpos_posture)


def _work(job):
    return _worker(*job)


def _run_all(path, demos, env_meta, check, workers, show_progress, init_qpos_posture=False):
    from tqdm import tqdm

    bar = tqdm(total=len(demos), desc="convert to absolute" + (" + replay check" if check else ""),
               unit="demo", disable=not show_progress)
    results = {}
    try:
        if workers <= 1:
            conv = DemoConverter(env_meta, check, init_qpos_posture)
            for d in demos:
                results[d] = conv(path, d)
                bar.update()
        else:
            import multiprocessing as mp

            # spawn: robosuite/MuJoCo state must not be inherited from the parent process.
            with mp.get_context("spawn").Pool(workers, initializer=_init_worker,
                                                  initargs=(env_meta, check, init_qpos_posture)) as pool:
                for r in pool.imap_unordered(_work, [(path, d) for d in demos]):
                    results[r["demo"]] = r
                    bar.update()
    finally:
        bar.close()
    return results


# --------------------------------------------------------------------------- file writing


def absolute_env_meta(env_meta: dict) -> dict:
    meta = json.loads(json.dumps(env_meta))
    meta["env_kwargs"].setdefault("controller_configs", {})["control_delta"] = False
    return meta


def _write(src_path, tmp_path, results, env_meta, record, generated):
    import h5py

    with h5py.File(src_path, "r") as src, h5py.File(tmp_path, "w") as dst:
        for k, v in src.attrs.items():
            dst.attrs[k] = v
        for key in src.keys():
            if key != "data":
                src.copy(src[key], dst, name=key)
        s_data = src["data"]
        d_data = dst.create_group("data")
        for k, v in s_data.attrs.items():
            d_data.attrs[k] = v
        d_data.attrs["env_args"] = json.dumps(absolute_env_meta(env_meta))
        if generated is not None:
            gen = dict(generated)
            gen["action_space"] = "absolute"
            gen["conversion"] = record
            d_data.attrs["zprl_generated"] = json.dumps(gen)
        else:
            d_data.attrs["zprl_converted"] = json.dumps(record)
        for demo in s_data.keys():
            s_demo, d_demo = s_data[demo], d_data.create_group(demo)
            for k, v in s_demo.attrs.items():
                d_demo.attrs[k] = v
            for member in s_demo.keys():
                if member == "actions":
                    # float64 whatever the source used: these are absolute poses, not [-1, 1] deltas.
                    d_demo.create_dataset("actions", data=results[demo]["actions"].astype(np.float64))
                else:
                    s_demo.copy(s_demo[member], d_demo, name=member)


def _pct(k, m):
    return f"{100.0 * k / m:.1f}%" if m else "n/a"


def convert_file(input, output, overwrite=False, check=True, show_progress=True, workers=1) -> dict:
    """Write ``output``: ``input`` with absolute actions. Returns counts (see keys below).

    Keys: output, num_demos, num_samples, and with check=True: delta_success (demos the delta
    actions solve), abs_success_of_delta (of those, how many the absolute actions also solve),
    abs_success (all demos the absolute actions solve), max_eef_gap_m (largest end-effector
    distance between the delta and absolute replays over all steps).
    """
    input, output = os.fspath(input), os.fspath(output)
    info = check_robomimic_file(input)
    if info["abs_action"]:
        raise UserInputError(f"{input} already stores absolute actions (env_args control_delta=false); nothing to convert")
    from zprl.data.port_model import stored_env_args_problem

    problem = stored_env_args_problem(info["env_meta"], f"{input}: env_args")
    if problem is None:
        from zprl.data.check import first_model_problem

        problem = first_model_problem(input, info)
    if problem:
        raise UserInputError(f"{problem}; port the file instead (it also converts the actions): "
                             "python -m zprl.data.port --input IN --output OUT")
    if "states" not in _first_demo_members(input, info["demos"][0]):
        raise UserInputError(f"{input}: data/{info['demos'][0]} has no 'states'; conversion needs simulator states")
    expected = ARM_ACTION_DIM * num_arms(info["env_meta"])
    if info["action_dim"] != expected:
        raise UserInputError(f"{input}: actions have {info['action_dim']} dims; OSC_POSE delta actions for "
                             f"{num_arms(info['env_meta'])} arm(s) have {expected}")
    if os.path.abspath(input) == os.path.abspath(output):
        raise UserInputError(f"--output {output} is the input file; choose a different output path")
    if os.path.exists(output) and not overwrite:
        raise UserInputError(f"output {output} exists; pass --overwrite to replace it")
    out_dir = os.path.dirname(os.path.abspath(output))
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise UserInputError(f"cannot write {output}: {out_dir} is not a directory")

    all_demos = info["demos"]  # no filter key: every demo in the file gets converted
    start = time.time()
    # zprl's generator records with the noiseless init_qpos as null-space posture; other recordings with
    # the joints robosuite reset to
    results = _run_all(input, all_demos, info["env_meta"], check, max(1, int(workers)), show_progress,
                       init_qpos_posture=info["is_generated"])
    summary = {"output": output, "num_demos": len(all_demos),
               "num_samples": int(sum(len(r["actions"]) for r in results.values()))}
    if check:
        ok_delta = [d for d in all_demos if results[d]["delta_success"]]
        summary.update(
            delta_success=len(ok_delta),
            abs_success_of_delta=sum(results[d]["abs_success"] for d in ok_delta),
            abs_success=sum(results[d]["abs_success"] for d in all_demos),
            max_eef_gap_m=max(results[d]["max_eef_gap"] for d in all_demos),
        )
    record = {"converter": CONVERTER, "source": os.path.abspath(input), "action_space": "absolute",
              "layout": "per arm: pos(3) + axis-angle(3) + gripper(1)",
              **{k: v for k, v in summary.items() if k != "output"}}

    os.makedirs(out_dir, exist_ok=True)
    tmp = f"{output}.tmp-{os.getpid()}"
    try:
        _write(input, tmp, results, info["env_meta"], record, info["generated"])
        os.replace(tmp, output)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    summary["seconds"] = round(time.time() - start, 1)
    return summary


def _first_demo_members(path, demo):
    import h5py

    with h5py.File(path, "r") as f:
        return set(f["data"][demo].keys())


def format_summary(s: dict) -> list[str]:
    lines = [f"wrote {s['output']}: {s['num_demos']} demos, {s['num_samples']} steps, absolute actions"]
    if "delta_success" in s:
        n, m, k = s["num_demos"], s["delta_success"], s["abs_success_of_delta"]
        lines.append(f"replay success with delta actions: {m}/{n} demos ({_pct(m, n)})")
        lines.append(f"replay success with absolute actions: {k}/{m} demos that succeeded with delta actions ({_pct(k, m)})")
        lines.append(f"largest end-effector gap between delta and absolute replays: {1000 * s['max_eef_gap_m']:.2f} mm")
        if m and k < TARGET_REPLAY_SUCCESS * m:
            lines.append(f"warning: absolute replay success is below the {100 * TARGET_REPLAY_SUCCESS:.0f}% target")
    return lines


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m zprl.data.convert_abs", description=__doc__.split("\n\n")[0])
    p.add_argument("--input", required=True, help="robomimic hdf5 file with delta OSC_POSE actions")
    p.add_argument("--output", required=True, help="where to write the file with absolute actions")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.add_argument("--workers", type=int, default=1, help="processes (each runs its own simulator)")
    p.add_argument("--no-check", action="store_true", help="skip replaying delta and absolute actions")
    args = p.parse_args(argv)
    summary = convert_file(args.input, args.output, overwrite=args.overwrite, check=not args.no_check,
                           workers=args.workers)
    for line in format_summary(summary):
        print(line)
    return summary


if __name__ == "__main__":
    run_cli(main)
