"""Make a robomimic file recorded with another robosuite 1.x version usable with robosuite 1.4.1.

    python -m zprl.data.port --input IN --output OUT [--obs low_dim|image] [--cameras CAM ...]
                             [--image-size 84] [--controller OSC_POSE] [--skip-bad] [--no-check] [--overwrite]

What it does, demo by demo (``docs/data.md`` has the details and what was tested):

* env_args: rewritten for this robosuite (keys its env class does not take are dropped, robosuite
  1.0-1.3's ``damping``/``damping_limits`` become ``damping_ratio``/``damping_ratio_limits``,
  robosuite 1.5's composite ``{"type": "BASIC", "body_parts": {...}}`` becomes the arm's flat config),
  and every change is listed.
* model XML: regenerated from this version's environment, with each demo's object elements (sizes,
  fixed placements) copied over by name from the recorded ``model_file``; recorded states are
  mapped onto the new model joint by joint (names from the recorded XML, compiled without its
  meshes, so files whose assets are missing here still port), and both models' body positions
  are compared on the first and last state.
* observations: re-extracted from the states in this version (robomimic's ``dataset_states_to_obs``
  recipe): every low-dim key plus the chosen cameras at the chosen size.
* actions: absolute (``zprl.data.convert_abs``'s conversion), with a replay check of both kinds.

Files made by robosuite's own ``collect_human_demonstrations.py`` (``data.attrs["env"]`` and
``env_info`` instead of ``env_args``) are read as robomimic's ``convert_robosuite.py`` reads them.
Whatever cannot be ported is one line naming the demo or key and why, before anything is written.

The command is here; reading the source file is in ``port_source.py``, rewriting env_args and the
model XML in ``port_model.py``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import time

import numpy as np

from zprl.common.errors import UserInputError, run_cli
from zprl.data.port_model import (_strip_assets, compile_recorded, env_meta_for_this_version, largest_body_gap,
                                  map_states, object_prefixes, regenerate_xml, state_map)
from zprl.data.port_source import action_kind_from_values, read_actions, read_source
from zprl.data.robomimic_file import decode_attr

PORTER = "zprl.data.port"
# Largest gap between a body's position in the recorded model and in this version's, at the same
# recorded state, for the demo to count as the same scene.
MAX_BODY_GAP_M = 1e-3


def _plan(info: dict, args) -> dict:
    """Everything decidable before simulating: target env_meta, obs keys, per-demo problems."""
    from zprl.data.robomimic_file import num_arms
    from zprl.env.robomimic_env import CAMERAS, LOW_DIM_KEYS, task_from_env_name

    path = info["path"]
    meta, changes = env_meta_for_this_version(info["env_meta"], f"{path}: env_args", args.controller)
    arms = num_arms(meta)
    if info["action_dim"] != 7 * arms:
        raise UserInputError(f"{path}: actions have {info['action_dim']} dims; OSC_POSE + gripper for {arms} arm(s) "
                             f"has {7 * arms}")
    ctrl = meta["env_kwargs"]["controller_configs"]
    recorded_abs = ctrl.get("control_delta", True) is False
    sample = next(iter(read_actions(path, info["demos"][:1]).values()))
    looks = action_kind_from_values(sample, arms)
    if looks != "unclear" and looks != ("absolute" if recorded_abs else "delta"):
        raise UserInputError(
            f"{path}: env_args says {'absolute' if recorded_abs else 'delta'} actions (control_delta="
            f"{ctrl.get('control_delta', True)}) but data/{info['demos'][0]}/actions look {looks}; fix env_args first")
    for name in info["demos"]:
        if "states" not in info["members"][name]:
            raise UserInputError(f"{path}: data/{name} has no 'states'; porting needs the simulator states")
        if not info["has_model"][name]:
            raise UserInputError(f"{path}: data/{name} has no model_file attribute; the demo's scene is unknown")

    try:
        task = task_from_env_name(meta["env_name"])
    except ValueError:
        task = None
    file_cams = [k[: -len("_image")] for k in info["obs_shapes"] if k.endswith("_image")]
    obs = args.obs or ("image" if file_cams else "low_dim")
    cams = []
    if obs == "image":
        # zprl's cameras for its tasks (what its image configs read), else the file's own
        cams = list(args.cameras or (CAMERAS[task] if task else file_cams))
        if not cams:
            raise UserInputError(f"{path}: no cameras known for env '{meta['env_name']}'; pass --cameras")
    kw = meta["env_kwargs"]
    kw.update(has_offscreen_renderer=bool(cams), use_camera_obs=bool(cams), camera_names=cams,
              camera_heights=int(args.image_size), camera_widths=int(args.image_size), camera_depths=False,
              ignore_done=True, use_object_obs=True)
    obs_keys = list(LOW_DIM_KEYS) + [f"{c}_image" for c in cams]
    return {"meta": meta, "changes": changes, "recorded_abs": recorded_abs, "cams": cams, "obs": obs,
            "obs_keys": obs_keys, "task": task, "arms": arms}


class Porter:
    """The envs one process needs: a delta (or absolute) env that extracts observations and
    converts actions, and an absolute env for the replay check."""

    def __init__(self, meta: dict, obs_keys, cams, recorded_abs: bool, check: bool):
        from zprl.data.convert_abs import make_replay_env
        from zprl.env.robomimic_env import create_env

        # Replays and conversion run without cameras (a rendered step is ~10x slower).
        self.abs_env = make_replay_env(meta, abs_action=True) if check and not recorded_abs else None
        self.lowdim = make_replay_env(meta, abs_action=recorded_abs) if cams else None
        # The extracting env last: robomimic keeps one global list of image keys, and the env made
        # last sets it (an earlier low-dim env would leave agentview_image out of the observations).
        self.env = create_env(meta, obs_keys=obs_keys, render_offscreen=bool(cams), abs_action=recorded_abs,
                              hard_reset=False)
        if self.lowdim is None:
            self.lowdim = self.env
        # This version's robosuite model of the recorded env: the base every demo's XML is made from.
        self.base_xml = self.env.env.model.get_xml()
        self.prefixes = object_prefixes(self.env.env)
        self.recorded_abs = recorded_abs

    def close(self):
        for e in {id(e): e for e in (self.env, self.lowdim, self.abs_env) if e is not None}.values():
            try:
                e.env.close()
            except Exception:
                pass

    def prepare(self, name: str, states: np.ndarray, recorded_xml: str, where: str) -> dict:
        """Regenerated XML and mapped states for one demo (no simulation)."""
        import mujoco

        old_model = compile_recorded(recorded_xml, where)
        xml, copied = regenerate_xml(self.base_xml, recorded_xml, self.prefixes, where)
        try:
            new_model = mujoco.MjModel.from_xml_string(_strip_assets(xml))
        except ValueError as err:
            raise UserInputError(f"{where}: the regenerated model XML does not compile ({str(err).strip()})") from None
        qidx, vidx = state_map(old_model, new_model, where)
        mapped = map_states(states, old_model, qidx, vidx, where)
        gap, body = 0.0, ""
        for t in (0, len(states) - 1):
            g, b = largest_body_gap(old_model, states[t, 1:1 + old_model.nq], new_model, mapped[t, 1:1 + new_model.nq])
            if g > gap:
                gap, body = g, b
        if gap > MAX_BODY_GAP_M:
            raise UserInputError(f"{where}: body '{body}' sits {1000 * gap:.1f} mm away from where the recorded model "
                                 "puts it at the same state; the scene differs in this version")
        identity = bool(np.array_equal(qidx, np.arange(old_model.nq)) and np.array_equal(vidx, np.arange(old_model.nv))
                        and old_model.nq == new_model.nq and old_model.nv == new_model.nv)
        return {"xml": xml, "states": mapped, "copied": copied, "body_gap": gap, "same_layout": identity}

    def extract(self, states: np.ndarray, actions: np.ndarray, xml: str) -> dict:
        """Observations, rewards and dones from the states, as robomimic's dataset_states_to_obs."""
        env = self.env
        obs = env.reset_to({"model": xml, "states": states[0]})
        frames, next_frames, rewards, dones = [], [], [], []
        n = len(states)
        for t in range(1, n + 1):
            if t == n:
                nxt, _, _, _ = env.step(actions[t - 1])
            else:
                nxt = env.reset_to({"states": states[t]})
            rewards.append(float(env.get_reward()))
            dones.append(int(t == n or bool(env.is_success()["task"])))
            frames.append(obs)
            next_frames.append(nxt)
            obs = nxt
        keys = sorted(frames[0])
        return {"obs": {k: np.stack([o[k] for o in frames]) for k in keys},
                "next_obs": {k: np.stack([o[k] for o in next_frames]) for k in keys},
                "rewards": np.asarray(rewards, dtype=np.float64), "dones": np.asarray(dones, dtype=np.int64)}

    def actions(self, states, actions, xml, check: bool) -> dict:
        from zprl.data.convert_abs import delta_to_absolute, replay

        out = {}
        if self.recorded_abs:
            out["actions"] = np.asarray(actions, dtype=np.float64)
            if check:
                out["abs_success"], _ = replay(self.lowdim, states[0], out["actions"], xml)
            return out
        # extract() has just loaded this demo's model into self.env; a second load costs ~1 s.
        loaded = self.lowdim is self.env
        out["actions"] = delta_to_absolute(self.lowdim, states, actions, None if loaded else xml)
        if check:
            out["delta_success"], eef_d = replay(self.lowdim, states[0], actions, None)
            out["abs_success"], eef_a = replay(self.abs_env, states[0], out["actions"], xml)
            out["max_eef_gap"] = float(np.linalg.norm(eef_d - eef_a, axis=-1).max())
        return out


def _put(group, name, array, compress_images=True):
    arr = np.asarray(array)
    kwargs = {"track_times": False}
    if arr.dtype == np.uint8 and arr.ndim == 4 and compress_images:
        kwargs.update(compression="gzip", chunks=(1,) + arr.shape[1:])
    group.create_dataset(name, data=arr, **kwargs)


def port_file(input, output, obs=None, cameras=None, image_size=84, controller=None, skip_bad=False,
              check=True, overwrite=False, show_progress=True) -> dict:
    """Write ``output``: ``input`` made usable with this robosuite (see the module docstring).

    Returns a summary: output, source_versions, env_changes, demos (kept), skipped ({demo: reason}),
    num_samples, obs_keys, cameras, image_size, converted (delta -> absolute), same_layout (demos whose
    recorded joint layout equals this version's), max_body_gap_m, and with check: delta_success,
    abs_success, abs_success_of_delta, max_eef_gap_m.
    """
    import h5py
    import robosuite
    from tqdm import tqdm

    input, output = os.fspath(input), os.fspath(output)
    args = argparse.Namespace(obs=obs, cameras=cameras, image_size=image_size, controller=controller)
    if obs not in (None, "low_dim", "image"):
        raise UserInputError(f"--obs {obs}: use low_dim or image")
    if not isinstance(image_size, int) or image_size < 8:
        raise UserInputError(f"--image-size {image_size}: must be an integer >= 8 (84 is the paper's)")
    info = read_source(input)
    if os.path.abspath(input) == os.path.abspath(output):
        raise UserInputError(f"--output {output} is the input file; choose a different output path")
    if os.path.isdir(output):
        raise UserInputError(f"--output {output} is a directory; give a file path ending in .hdf5")
    if os.path.exists(output) and not overwrite:
        raise UserInputError(f"--output {output} exists; pass --overwrite to replace it or choose another path")
    plan = _plan(info, args)

    start = time.time()
    with h5py.File(input, "r") as src:
        recorded = {d: decode_attr(src["data"][d].attrs["model_file"]) for d in info["demos"]}
    porter = Porter(plan["meta"], plan["obs_keys"], plan["cams"], plan["recorded_abs"], check)
    # Demo by demo: everything that can be decided without simulating, first.
    prepared, skipped = {}, {}
    try:
        with h5py.File(input, "r") as src:
            for d in info["demos"]:
                where = f"{input}: data/{d}"
                try:
                    prepared[d] = porter.prepare(d, src["data"][d]["states"][()], recorded[d], where)
                except UserInputError as err:
                    if not skip_bad:
                        raise UserInputError(f"{err} (nothing written; --skip-bad drops such demos)") from None
                    skipped[d] = str(err)
        kept = [d for d in info["demos"] if d in prepared]
        if not kept:
            raise UserInputError(f"{input}: no demo can be ported; first reason: {next(iter(skipped.values()))}")

        out_dir = os.path.dirname(os.path.abspath(output))
        os.makedirs(out_dir, exist_ok=True)
        tmp = os.path.join(out_dir, f".{os.path.basename(output)}.tmp-{os.getpid()}")
        results = {}
        bar = tqdm(total=len(kept), desc="port", unit="demo", disable=not show_progress)
        try:
            with h5py.File(input, "r") as src, h5py.File(tmp, "w") as dst:
                data = dst.create_group("data")
                total = 0
                for d in kept:
                    p = prepared.pop(d)
                    actions = src["data"][d]["actions"][()]
                    ext = porter.extract(p["states"], actions, p["xml"])
                    act = porter.actions(p["states"], actions, p["xml"], check)
                    g = data.create_group(d)
                    _put(g, "states", p["states"].astype(np.float64))
                    _put(g, "actions", act["actions"].astype(np.float64))
                    _put(g, "rewards", ext["rewards"])
                    _put(g, "dones", ext["dones"])
                    for grp in ("obs", "next_obs"):
                        og = g.create_group(grp)
                        for k, v in ext[grp].items():
                            _put(og, k, v)
                    g.attrs["num_samples"] = len(actions)
                    g.attrs["model_file"] = p["xml"]
                    total += len(actions)
                    results[d] = {k: v for k, v in act.items() if k != "actions"}
                    results[d].update(body_gap=p["body_gap"], same_layout=p["same_layout"], copied=p["copied"])
                    bar.update()
                obs_keys = sorted(ext["obs"])
                meta = copy.deepcopy(plan["meta"])
                meta["env_version"] = robosuite.__version__
                meta["env_kwargs"]["controller_configs"]["control_delta"] = False
                data.attrs["env_args"] = json.dumps(meta)
                data.attrs["total"] = total
                summary = {
                    "output": output, "source_versions": info["versions"], "layout": info["layout"],
                    "env_changes": plan["changes"], "demos": kept, "skipped": skipped,
                    "num_samples": total, "obs_keys": obs_keys, "cameras": plan["cams"],
                    "image_size": int(image_size) if plan["cams"] else None,
                    "converted": not plan["recorded_abs"],
                    "same_layout": sum(r["same_layout"] for r in results.values()),
                    "max_body_gap_m": max(r["body_gap"] for r in results.values()),
                    "objects_copied": sorted({r["copied"] for r in results.values()}),
                }
                if check:
                    ok_abs = [d for d in kept if results[d]["abs_success"]]
                    summary["abs_success"] = len(ok_abs)
                    if not plan["recorded_abs"]:
                        ok_delta = [d for d in kept if results[d]["delta_success"]]
                        summary.update(delta_success=len(ok_delta),
                                       abs_success_of_delta=sum(results[d]["abs_success"] for d in ok_delta),
                                       max_eef_gap_m=max(results[d]["max_eef_gap"] for d in kept))
                record = {"porter": PORTER, "source": os.path.abspath(input), "robosuite": robosuite.__version__,
                          **{k: v for k, v in summary.items() if k != "output"},
                          "per_demo": results}
                data.attrs["zprl_ported"] = json.dumps(record, default=float)
                if info["masks"]:
                    mg = dst.create_group("mask")
                    for key, names in info["masks"].items():
                        keep = [n for n in names if n in results]
                        mg.create_dataset(key, data=np.array(keep, dtype="S"), track_times=False)
            os.replace(tmp, output)
        finally:
            bar.close()
            if os.path.exists(tmp):
                os.remove(tmp)
    finally:
        porter.close()
    summary["seconds"] = round(time.time() - start, 1)
    summary["task"] = plan["task"]
    return summary


def _pct(k, m):
    return f"{100.0 * k / m:.0f}%" if m else "n/a"


def format_summary(s: dict) -> list[str]:
    import robosuite

    v = s["source_versions"]
    made = v.get("repository") or v.get("env_args") or "unknown"
    n = len(s["demos"])
    lines = [f"wrote {s['output']}: {n} demos, {s['num_samples']} steps, robosuite {made} -> {robosuite.__version__}"]
    for d, why in s["skipped"].items():
        lines.append(f"skipped {d}: {why}")
    if s["env_changes"]:
        lines.append("env_args: " + "; ".join(s["env_changes"]))
    lines.append(f"model XML: regenerated from robosuite {robosuite.__version__}'s model, object sizes/placements "
                 f"kept per demo; states mapped by joint name ({s['same_layout']}/{n} demos had this version's layout); "
                 f"bodies agree within {1000 * s['max_body_gap_m']:.3f} mm")
    cams = f", cameras {' '.join(s['cameras'])} at {s['image_size']}x{s['image_size']}" if s["cameras"] else ""
    lines.append(f"observations: re-extracted from states ({len(s['obs_keys'])} keys{cams})")
    act = "absolute (converted from delta)" if s["converted"] else "absolute (as recorded)"
    if "abs_success" in s:
        if "delta_success" in s:
            m, k = s["delta_success"], s["abs_success_of_delta"]
            act += (f"; replay success: delta {m}/{n} ({_pct(m, n)}), absolute {k}/{m} of those ({_pct(k, m)}); "
                    f"largest end-effector gap {1000 * s['max_eef_gap_m']:.2f} mm")
        else:
            act += f"; replay success {s['abs_success']}/{n}"
    lines.append(f"actions: {act}")
    if s.get("task"):
        kind = "image" if s["cameras"] else "lowdim"
        lines.append(f"check it: python -m zprl.data.check {s['output']}   (task={s['task']}_{kind}_abs)")
    return lines


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m zprl.data.port", description=__doc__.split("\n\n")[0])
    p.add_argument("--input", required=True, help="robomimic hdf5 (or robosuite demo.hdf5) from another robosuite 1.x")
    p.add_argument("--output", required=True, help="where to write the ported file")
    p.add_argument("--obs", choices=("low_dim", "image"), default=None,
                   help="observations to extract (default: image if the input has images, else low_dim)")
    p.add_argument("--cameras", nargs="+", default=None,
                   help="cameras for --obs image (default: those of zprl's image config for the task)")
    p.add_argument("--image-size", type=int, default=84, help="camera height = width (84 in zprl's configs)")
    p.add_argument("--controller", default=None,
                   help="only for files whose env_args lack controller_configs: the default controller they used")
    p.add_argument("--skip-bad", action="store_true", help="drop demos that cannot be ported (each is named)")
    p.add_argument("--no-check", action="store_true", help="skip replaying the actions")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    s = port_file(a.input, a.output, obs=a.obs, cameras=a.cameras, image_size=a.image_size, controller=a.controller,
                  skip_bad=a.skip_bad, check=not a.no_check, overwrite=a.overwrite, show_progress=not a.no_progress)
    for line in format_summary(s):
        print(line, flush=True)
    return s


if __name__ == "__main__":
    run_cli(main)
