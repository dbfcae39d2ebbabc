"""Say in a few lines what a robomimic hdf5 holds and whether zprl can train on it as it is.

    python -m zprl.data.check FILE

Reports the env, the robosuite version the file was made with, observations, action kind and
dimension, demos and steps, filter keys, whether the env metadata and model XML still work with
this robosuite, and either the zprl task config it is ready for or the one command that fixes it
(``zprl.data.convert_abs`` or ``zprl.data.port``). Exit status: 0 ready, 1 not ready as it is,
2 not a readable robomimic file. Reads attributes, shapes and actions only, never observations.
"""

from __future__ import annotations

import argparse
import glob
import os
import xml.etree.ElementTree as ET

from zprl.common.errors import UserInputError, run_cli
from zprl.data.port_model import env_meta_for_this_version, stored_env_args_problem
from zprl.data.port_source import action_kind_from_values, read_actions, read_source

OFFLINE_CONFIG = "train_flow_match_vib_unet_image_workspace"


def task_configs(task: str) -> dict:
    """name -> {"obs": {key: (shape, type)}, "action_dim"} for zprl's task configs of ``task``."""
    from omegaconf import OmegaConf

    from zprl.common.config import CONFIG_DIR

    out = {}
    for path in sorted(glob.glob(os.path.join(CONFIG_DIR, "task", "*.yaml"))):
        cfg = OmegaConf.load(path)
        if cfg.get("task") != task:
            continue
        sm = OmegaConf.to_container(cfg.shape_meta, resolve=False)
        out[os.path.splitext(os.path.basename(path))[0]] = {
            "obs": {k: (tuple(v["shape"]), v.get("type", "low_dim")) for k, v in sm["obs"].items()},
            "action_dim": int(sm["action"]["shape"][0]),
        }
    return out


def obs_mismatch(config: dict, obs_shapes: dict) -> list[str]:
    """What the file lacks for a task config (empty if it has every key at the right shape)."""
    problems = []
    for key, (shape, kind) in config["obs"].items():
        have = obs_shapes.get(key)
        want = (shape[1], shape[2], shape[0]) if kind == "rgb" else shape  # files store images HWC
        if have is None:
            problems.append(f"no {key}")
        elif tuple(have) != tuple(want):
            problems.append(f"{key} is {'x'.join(map(str, have))}, needs {'x'.join(map(str, want))}")
    return problems


def unresolved_assets(xml: str, env_name: str) -> list[str] | None:
    """Asset files of a recorded model XML that do not exist here after robosuite's own path fix
    (``edit_model_xml``, what robomimic's ``reset_to`` applies); None if that fix itself fails."""
    from robosuite.environments.base import REGISTERED_ENVS, MujocoEnv

    cls = REGISTERED_ENVS.get(env_name, MujocoEnv)
    try:
        fixed = cls.edit_model_xml(None, xml)  # uses only robosuite's install path, not the instance
    except Exception:
        return None
    root = ET.fromstring(fixed)
    files = [el.get("file") for el in root.iter() if el.tag in ("mesh", "texture", "hfield", "skin") and el.get("file")]
    return [f for f in files if not os.path.isabs(f) or not os.path.exists(f)]


def first_model_problem(path: str, info: dict) -> str | None:
    """Why robomimic's reset_to cannot load the first demo's model XML here, or None."""
    import h5py

    demo = info["demos"][0]
    with h5py.File(path, "r") as f:
        xml = f["data"][demo].attrs.get("model_file")
    if xml is None:
        return None
    missing = unresolved_assets(xml.decode() if isinstance(xml, bytes) else xml, info["env_meta"]["env_name"])
    if missing is None:
        return f"{path}: data/{demo}'s model XML has asset paths robosuite's path fix cannot map to this install"
    if missing:
        return f"{path}: data/{demo}'s model XML needs {len(missing)} asset file(s) missing here (e.g. {missing[0]})"
    return None


def inspect_file(path: str) -> dict:
    """Facts about ``path`` (see format_report for how they read)."""
    import h5py
    import robosuite

    from zprl.data.robomimic_file import num_arms
    from zprl.env.robomimic_env import task_from_env_name

    info = read_source(path)
    meta = info["env_meta"]
    facts = dict(info)
    facts["robosuite_here"] = robosuite.__version__
    try:
        facts["task"] = task_from_env_name(meta["env_name"])
    except ValueError:
        facts["task"] = None
    facts["arms"] = num_arms(meta)
    try:
        _, facts["env_changes"] = env_meta_for_this_version(meta, "env_args")
        facts["env_error"] = None
    except UserInputError as err:
        facts["env_changes"], facts["env_error"] = [], str(err)
    facts["env_problem"] = None if facts["env_error"] else stored_env_args_problem(meta)
    ctrl = (meta.get("env_kwargs", {}).get("controller_configs") or {})
    if "body_parts" in ctrl:  # robosuite 1.5's composite layout: the arm's part holds control_delta
        ctrl = next(iter(ctrl["body_parts"].values()), {})
    facts["controller"] = ctrl.get("type")
    facts["recorded_abs"] = ctrl.get("control_delta", True) is False
    actions = read_actions(path, info["demos"])
    import numpy as np

    stacked = np.concatenate(list(actions.values()), axis=0)
    facts["action_kind_values"] = action_kind_from_values(stacked, facts["arms"])
    facts["action_range"] = (float(stacked.min()), float(stacked.max())) if stacked.size else (0.0, 0.0)
    facts["no_obs"] = [d for d in info["demos"] if "obs" not in info["members"][d]]
    facts["no_states"] = [d for d in info["demos"] if "states" not in info["members"][d]]
    facts["no_model"] = [d for d in info["demos"] if not info["has_model"][d]]
    facts["records"] = {}
    with h5py.File(path, "r") as f:
        for key in ("zprl_generated", "zprl_converted", "zprl_ported"):
            if key in f["data"].attrs:
                facts["records"][key] = True
        first_with_model = next((d for d in info["demos"] if info["has_model"][d]), None)
        xml = f["data"][first_with_model].attrs["model_file"] if first_with_model else None
    xml = xml.decode() if isinstance(xml, bytes) else xml
    facts["xml_demo"] = first_with_model
    facts["xml_missing"] = unresolved_assets(xml, meta["env_name"]) if xml else None
    facts["configs"] = task_configs(facts["task"]) if facts["task"] else {}
    facts.update(_verdict(facts))
    return facts


def _verdict(f: dict) -> dict:
    """ready (config names), problems (why not), fix (one command or None), target config."""
    path = f["path"]
    has_images = any(k.endswith("_image") for k in f["obs_shapes"])
    mismatch = {name: obs_mismatch(c, f["obs_shapes"]) for name, c in f["configs"].items()}
    target = None
    if f["task"]:
        kind = "image" if has_images else "lowdim"
        target = f"{f['task']}_{kind}_abs" if f"{f['task']}_{kind}_abs" in f["configs"] else None
    problems, blockers = [], []
    raw = f["layout"] == "robosuite"
    if raw:
        problems.append("robosuite's raw demo.hdf5 (no env_args and no observations yet)")
    if f["env_error"]:
        blockers.append(f["env_error"])
    elif f["env_problem"] and not raw:
        problems.append(f["env_problem"])
    if f["task"] is None:
        blockers.append(f"env '{f['env_meta']['env_name']}' is not one of zprl's tasks")
    if f["no_obs"]:
        if not raw:
            problems.append(f"no observations in {len(f['no_obs'])} demo(s)")
    elif target and mismatch.get(target):
        problems.append(f"{target} needs: " + ", ".join(mismatch[target]))
    if not f["recorded_abs"]:
        problems.append("delta actions")
        if f["xml_missing"] != [] and f["xml_demo"] is not None:
            problems.append("its model XML does not load here (converting needs it)")
    kind_expected = "absolute" if f["recorded_abs"] else "delta"
    if f["action_kind_values"] not in ("unclear", kind_expected):
        blockers.append(f"env_args says {kind_expected} actions but the values look {f['action_kind_values']}; "
                        "fix env_args' control_delta first")
    if f["action_dim"] != 7 * f["arms"]:
        blockers.append(f"actions are {f['action_dim']}-D; zprl needs OSC_POSE + gripper, 7 per arm")
    ready = [] if (problems or blockers) else [n for n, m in mismatch.items() if not m]
    if not ready and not (problems or blockers) and target:
        problems.append(f"{target} needs: " + ", ".join(mismatch[target]))

    fix = None
    needs_port = (f["layout"] == "robosuite" or f["env_problem"] or f["no_obs"]
                  or (target and mismatch.get(target)) or
                  (not f["recorded_abs"] and f["xml_missing"] != []))
    if problems and not blockers:
        if needs_port:
            if f["no_states"] or f["no_model"]:
                lacking = f["no_states"] or f["no_model"]
                blockers.append(f"porting needs each demo's states and model_file; data/{lacking[0]} lacks "
                                f"{'states' if f['no_states'] else 'model_file'}")
            else:
                out = os.path.splitext(path)[0] + "_v141_abs.hdf5"
                fix = f"python -m zprl.data.port --input {path} --output {out}" + (" --obs image" if has_images else "")
        else:
            out = os.path.splitext(path)[0] + "_abs.hdf5"
            fix = f"python -m zprl.data.convert_abs --input {path} --output {out}"
    return {"ready": ready, "problems": problems, "blockers": blockers, "fix": fix, "target": target,
            "has_images": has_images}


def _shape(s) -> str:
    return "x".join(map(str, s)) if s else "scalar"


def format_report(f: dict) -> list[str]:
    path = f["path"]
    lines = [f"{path}: {'robomimic hdf5' if f['layout'] == 'robomimic' else 'robosuite demo.hdf5 (collect_human_demonstrations layout)'}"]
    meta = f["env_meta"]
    robots = meta["env_kwargs"].get("robots")
    robots = robots if isinstance(robots, str) else ", ".join(robots or ["?"])
    v = f["versions"]
    made = []
    if v.get("repository"):
        made.append(f"collected with robosuite {v['repository']} (data.attrs repository_version)")
    if f["layout"] == "robomimic":
        made.append(f"env_args env_version {v.get('env_args') or 'missing'}")
    task = f"zprl task {f['task']}" if f["task"] else "not a zprl task"
    lines.append(f"env: {meta['env_name']} ({task}), robots {robots}; {'; '.join(made)}; installed {f['robosuite_here']}")
    lengths = list(f["num_samples"].values())
    masks = ", ".join(f"{k} ({len(n)})" for k, n in sorted(f["masks"].items())) or "none"
    lines.append(f"demos: {len(lengths)}, {sum(lengths)} steps ({min(lengths)}-{max(lengths)} per demo); filter keys: {masks}")
    if f["obs_shapes"]:
        obs = ", ".join(f"{k} {_shape(s)}" for k, s in sorted(f["obs_shapes"].items()))
        missing = f" (missing in {len(f['no_obs'])} demos)" if f["no_obs"] else ""
        lines.append(f"observations{missing}: {obs}")
    else:
        lines.append("observations: none (states and actions only)")
    kind = "absolute" if f["recorded_abs"] else "delta"
    lo, hi = f["action_range"]
    vk = f["action_kind_values"]
    agree = "values agree" if vk == kind else ("values do not tell" if vk == "unclear" else f"but values look {vk}")
    lines.append(f"actions: {f['action_dim']}-D {kind} {f['controller'] or '?'} for {f['arms']} arm(s) "
                 f"(env_args control_delta={'false' if f['recorded_abs'] else 'true'}; values in [{lo:.2f}, {hi:.2f}], {agree})")
    if f["env_error"]:
        env_line = f"does not build here: {f['env_error']}"
    elif f["env_changes"]:
        verdict = "needs changes" if f["env_problem"] or f["layout"] == "robosuite" else "builds as it is; port would tidy"
        env_line = f"{verdict} for robosuite {f['robosuite_here']}: " + "; ".join(f["env_changes"])
    else:
        env_line = f"builds in robosuite {f['robosuite_here']} as it is"
    lines.append(f"env_args{' (as convert_robosuite.py would make it)' if f['layout'] == 'robosuite' else ''}: {env_line}")
    if f["xml_demo"] is None:
        xml_line = "no model_file in any demo"
    elif f["xml_missing"] is None:
        xml_line = f"{f['xml_demo']}'s asset paths cannot be mapped to this install by robosuite's path fix"
    elif f["xml_missing"]:
        xml_line = (f"{len(f['xml_missing'])} asset file(s) of {f['xml_demo']}'s XML missing here after robosuite's "
                    f"path fix (e.g. {f['xml_missing'][0]})")
    else:
        xml_line = f"{f['xml_demo']}'s asset files resolve in this install"
    states = "states in every demo" if not f["no_states"] else f"no states in {len(f['no_states'])} demo(s)"
    lines.append(f"simulator: {states}; model XML: {xml_line}")
    if f["ready"]:
        names = " or ".join(f"task={n}" for n in f["ready"])
        best = f["ready"][0] if not f["target"] or f["target"] not in f["ready"] else f["target"]
        keys = ", ".join(f["configs"][best]["obs"])
        lines.append(f"zprl: ready for {names} (uses {keys})")
        lines.append(f"  python train.py --config-name={OFFLINE_CONFIG} task={best} task.dataset_path={path}")
    else:
        why = "; ".join(f["blockers"] + f["problems"])
        if f["blockers"]:
            lines.append(f"zprl: cannot train on it: {why}")
        else:
            then = f" (then task={f['target']})" if f["target"] else ""
            lines.append(f"zprl: not ready as it is: {why}")
            lines.append(f"  fix: {f['fix']}{then}")
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m zprl.data.check", description=__doc__.split("\n\n")[0])
    p.add_argument("file", help="robomimic hdf5 (or robosuite's demo.hdf5)")
    a = p.parse_args(argv)
    facts = inspect_file(a.file)
    for line in format_report(facts):
        print(line)
    return 0 if facts["ready"] else 1


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
