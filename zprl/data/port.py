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
"""

from __future__ import annotations

import argparse
import copy
import inspect
import json
import os
import re
import time
import xml.etree.ElementTree as ET

import numpy as np

from zprl.common.errors import UserInputError, run_cli

PORTER = "zprl.data.port"
# Largest gap between a body's position in the recorded model and in this version's, at the same
# recorded state, for the demo to count as the same scene.
MAX_BODY_GAP_M = 1e-3
# robosuite <= 1.3 spelled the OSC damping keys this way (robomimic's v0.1 datasets carry them).
OLD_CONTROLLER_KEYS = {"damping": "damping_ratio", "damping_limits": "damping_ratio_limits"}
# mujoco joint types: qpos / qvel widths
_JOINT_WIDTH = {0: (7, 6), 1: (4, 3), 2: (1, 1), 3: (1, 1)}


def _decode(value):
    return value.decode("utf-8") if isinstance(value, bytes) else value


def _sort_key(name: str):
    m = re.search(r"(\d+)$", name)
    return (int(m.group(1)) if m else -1, name)


# =========================================================================== reading the source


def read_source(path: str) -> dict:
    """What a robomimic (or raw robosuite) hdf5 holds, from names, attributes and shapes only.

    Returns: path, layout ("robomimic" or "robosuite" for collect_human_demonstrations' demo.hdf5),
    env_meta (as stored, or built the way convert_robosuite.py builds it), versions
    (env_args env_version, data.attrs repository_version), demos, members (per demo: set of
    datasets/groups), has_model (per demo), num_samples, action_dim, obs_shapes (first demo),
    masks (name -> list of demo names).
    """
    import h5py

    path = os.fspath(path)
    if not os.path.exists(path):
        raise UserInputError(f"{path} does not exist; give the path of a robomimic hdf5 file")
    if os.path.isdir(path) or not h5py.is_hdf5(path):
        raise UserInputError(f"{path} is not an HDF5 file; expected a robomimic hdf5 dataset")
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise UserInputError(f"{path} cannot be opened as HDF5 ({err}); is it complete?") from None
    with f:
        if "data" not in f or not isinstance(f["data"], h5py.Group):
            raise UserInputError(f"{path} is not a robomimic dataset: no 'data' group at the top level")
        data = f["data"]
        attrs = {k: _decode(v) for k, v in data.attrs.items()}
        if "env_args" in attrs:
            layout = "robomimic"
            try:
                env_meta = json.loads(attrs["env_args"])
            except (TypeError, ValueError):
                raise UserInputError(f"{path}: data.attrs['env_args'] is not valid JSON") from None
        elif "env" in attrs and "env_info" in attrs:
            layout = "robosuite"  # collect_human_demonstrations.py's demo.hdf5, before convert_robosuite.py
            try:
                env_info = json.loads(attrs["env_info"])
            except (TypeError, ValueError):
                raise UserInputError(f"{path}: data.attrs['env_info'] is not valid JSON") from None
            env_meta = {"type": 1, "env_name": attrs["env"], "env_version": attrs.get("repository_version"),
                        "env_kwargs": env_info}
        else:
            raise UserInputError(f"{path} is not a robomimic dataset: data.attrs has neither 'env_args' "
                                 "(robomimic) nor 'env' + 'env_info' (robosuite's demo.hdf5)")
        if not isinstance(env_meta, dict) or not env_meta.get("env_name"):
            raise UserInputError(f"{path}: the env metadata names no env ('env_name'); not robomimic env metadata")
        demos = sorted((k for k in data.keys() if isinstance(data[k], h5py.Group)), key=_sort_key)
        if not demos:
            raise UserInputError(f"{path} holds no demos: the 'data' group has no demo groups")
        members, has_model, num_samples = {}, {}, {}
        action_dim = None
        for name in demos:
            g = data[name]
            members[name] = set(g.keys())
            has_model[name] = "model_file" in g.attrs
            if "actions" not in g:
                raise UserInputError(f"{path}: data/{name} has no 'actions' dataset; not a robomimic demo")
            shape = g["actions"].shape
            if len(shape) != 2 or (action_dim is not None and shape[1] != action_dim):
                raise UserInputError(f"{path}: data/{name}/actions has shape {tuple(shape)}, "
                                     f"expected (T, {action_dim}) like {demos[0]}")
            action_dim = int(shape[1])
            num_samples[name] = int(shape[0])
        first = data[demos[0]]
        obs_shapes = {k: tuple(first["obs"][k].shape[1:]) for k in first["obs"].keys()} if "obs" in first else {}
        masks = {}
        if "mask" in f:
            for k in f["mask"].keys():
                masks[k] = [_decode(d) for d in f["mask"][k][()]]
    env_meta.setdefault("env_kwargs", {})
    return {
        "path": path, "layout": layout, "env_meta": env_meta,
        "versions": {"env_args": env_meta.get("env_version"), "repository": attrs.get("repository_version")},
        "demos": demos, "members": members, "has_model": has_model, "num_samples": num_samples,
        "action_dim": action_dim, "obs_shapes": obs_shapes, "masks": masks,
    }


def read_actions(path: str, demos) -> dict:
    import h5py

    with h5py.File(path, "r") as f:
        return {d: f["data"][d]["actions"][()] for d in demos}


def action_kind_from_values(actions: np.ndarray, arms: int) -> str:
    """'delta', 'absolute' or 'unclear', from the values alone (OSC_POSE + gripper per arm).

    Delta OSC actions are scaled into [-1, 1]; absolute ones are world-frame positions (the end
    effector sits at table height, z ~ 0.8-1.3 m) and axis-angle orientations whose norm stays
    near pi for a gripper pointing down.
    """
    a = np.asarray(actions, dtype=np.float64)
    if a.size == 0 or a.shape[1] != 7 * arms:
        return "unclear"
    per_arm = a.reshape(len(a), arms, 7)
    z = per_arm[:, :, 2]
    rot_norm = np.linalg.norm(per_arm[:, :, 3:6], axis=-1)
    in_unit_box = bool(np.all(np.abs(a) <= 1.0 + 1e-6))
    if float(np.median(z)) > 0.4 and float(np.median(rot_norm)) > 1.5:
        return "absolute"
    if in_unit_box:
        return "delta"
    return "unclear"


# =========================================================================== env_args for 1.4.1


def accepted_env_kwargs(env_name: str) -> set[str] | None:
    """Keyword arguments this robosuite's env class takes (None if any keyword is accepted)."""
    from robosuite.environments.base import REGISTERED_ENVS

    names: set[str] = set()
    for cls in REGISTERED_ENVS[env_name].__mro__:
        if "__init__" not in cls.__dict__:
            continue
        params = inspect.signature(cls.__dict__["__init__"]).parameters.values()
        names |= {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            return names - {"self"}
    return None


def controller_for_this_version(cfg, where: str) -> tuple[dict, list[str]]:
    """An OSC_POSE controller config in this robosuite's layout, and what was changed."""
    changes = []
    cfg = copy.deepcopy(cfg)
    if isinstance(cfg, dict) and "body_parts" in cfg:
        # robosuite >= 1.5: a composite controller with one config per body part.
        parts = cfg.get("body_parts") or {}
        arms = {k: v for k, v in parts.items() if k in ("right", "left", "arms") or "arm" in k}
        others = sorted(set(parts) - set(arms))
        if cfg.get("type", "BASIC") != "BASIC" or len(arms) != 1 or others:
            raise UserInputError(
                f"{where}: composite controller type {cfg.get('type')!r} with body parts {sorted(parts)}; "
                "zprl ports single-arm-per-robot BASIC controllers only (robosuite 1.4.1 has no composite controllers)")
        part = next(iter(arms))
        cfg = dict(arms[part])
        cfg.pop("gripper", None)
        changes.append(f"controller_configs: robosuite 1.5 composite layout (BASIC, body_parts.{part}) -> flat {cfg.get('type')} config")
    if not isinstance(cfg, dict) or not cfg.get("type"):
        raise UserInputError(f"{where}: controller_configs has no 'type'; cannot tell how the actions were recorded")
    for old, new in OLD_CONTROLLER_KEYS.items():
        if old in cfg:
            value = cfg.pop(old)
            if new not in cfg:
                cfg[new] = value
                changes.append(f"controller_configs: {old} -> {new} (robosuite <= 1.3 name)")
            else:
                changes.append(f"controller_configs: dropped {old} ({new} is set)")
    if cfg["type"] != "OSC_POSE":
        raise UserInputError(
            f"{where}: controller type {cfg['type']!r}; zprl's absolute actions need OSC_POSE demonstrations")
    return cfg, changes


def env_meta_for_this_version(env_meta: dict, where: str, controller: str | None = None) -> tuple[dict, list[str]]:
    """env_meta that robomimic + this robosuite can build, and the list of changes made."""
    import robosuite
    from robosuite.environments.base import REGISTERED_ENVS
    from robosuite.robots import ROBOT_CLASS_MAPPING

    meta = copy.deepcopy(env_meta)
    changes = []
    name = meta.get("env_name")
    if name not in REGISTERED_ENVS:
        raise UserInputError(f"{where}: env '{name}' does not exist in robosuite {robosuite.__version__}; "
                             "it cannot be rebuilt here")
    if meta.get("type", 1) != 1:
        raise UserInputError(f"{where}: env_args type {meta.get('type')} is not a robosuite env (type 1)")
    if "type" not in meta:
        meta["type"] = 1
        changes.append("added type=1 (robosuite)")
    kw = meta.setdefault("env_kwargs", {})
    if "env_name" in kw:  # robosuite's collection stores it; robomimic passes env_name separately
        kw.pop("env_name")
        changes.append("env_kwargs: dropped env_name (robomimic passes it separately)")
    robots = kw.get("robots")
    if robots is None:
        raise UserInputError(f"{where}: env_kwargs has no 'robots'; cannot rebuild the scene")
    for r in [robots] if isinstance(robots, str) else robots:
        if r not in ROBOT_CLASS_MAPPING:
            raise UserInputError(f"{where}: robot '{r}' does not exist in robosuite {robosuite.__version__}")
    if kw.get("controller_configs") is None:
        if controller is None:
            raise UserInputError(
                f"{where}: env_kwargs has no controller_configs, so the actions' controller is unknown; "
                "if they are robosuite's default OSC_POSE actions, rerun with --controller OSC_POSE")
        kw["controller_configs"] = robosuite.load_controller_config(default_controller=controller)
        changes.append(f"controller_configs: robosuite {robosuite.__version__}'s default {controller} (--controller)")
    kw["controller_configs"], ctrl_changes = controller_for_this_version(kw["controller_configs"], where)
    changes += ctrl_changes
    accepted = accepted_env_kwargs(name)
    if accepted is not None:
        for key in sorted(set(kw) - accepted):
            kw.pop(key)
            changes.append(f"env_kwargs: dropped {key} (robosuite {robosuite.__version__}'s {name} does not take it)")
    return meta, changes


def stored_env_args_problem(env_meta: dict, where: str = "env_args") -> str | None:
    """Why robomimic + this robosuite cannot build the env from ``env_meta`` as stored (or would
    silently build another one), or None. Renames that change nothing (robosuite <= 1.3's
    ``damping: 1``, which 1.4.1 ignores in favour of its equal ``damping_ratio`` default) pass."""
    try:
        env_meta_for_this_version(env_meta, where)
    except UserInputError as err:
        return str(err)
    kw = env_meta.get("env_kwargs", {})
    if "env_name" in kw:
        return f"{where}: env_kwargs holds env_name, which robomimic's create_env_from_metadata also passes (it fails)"
    accepted = accepted_env_kwargs(env_meta["env_name"])
    unknown = sorted(set(kw) - accepted) if accepted is not None else []
    if unknown:
        return f"{where}: env_kwargs.{unknown[0]} is not a keyword of this robosuite's {env_meta['env_name']}"
    ctrl = kw.get("controller_configs") or {}
    if "body_parts" in ctrl:
        return f"{where}: controller_configs has robosuite 1.5's composite layout, which this robosuite cannot read"
    if "damping" in ctrl and "damping_ratio" not in ctrl and ctrl["damping"] != 1:
        return (f"{where}: controller_configs.damping={ctrl['damping']} would be ignored here "
                "(this robosuite reads damping_ratio, default 1)")
    return None


# =========================================================================== model XML


def _strip_assets(xml: str) -> str:
    """The recorded XML without mesh, texture, height-field and skin files, so it compiles here
    even when those files are missing: joints and body frames do not depend on them."""
    root = ET.fromstring(xml)
    for parent in list(root.iter()):
        for child in list(parent):
            if child.tag in ("mesh", "hfield", "skin") and parent.tag in ("asset", "deformable", "mujoco"):
                parent.remove(child)
            elif child.tag == "texture" and parent.tag == "asset":
                parent.remove(child)
    for el in root.iter():
        if el.tag == "material":
            el.attrib.pop("texture", None)
        if el.get("type") in ("mesh", "hfield", "sdf"):
            el.set("type", "sphere")
        if "mesh" in el.attrib or "hfield" in el.attrib:
            el.attrib.pop("mesh", None)
            el.attrib.pop("hfield", None)
            if el.tag == "geom":
                el.set("type", "sphere")
                el.set("size", "0.01")
                for k in ("fromto",):
                    el.attrib.pop(k, None)
    for el in root.iter("geom"):
        if el.get("type", "sphere") == "sphere" and not el.get("size"):
            el.set("size", "0.01")
    return ET.tostring(root, encoding="unicode")


def compile_recorded(xml: str, where: str):
    """mujoco model of a recorded XML, compiled without its asset files."""
    import mujoco

    try:
        return mujoco.MjModel.from_xml_string(_strip_assets(xml))
    except (ValueError, ET.ParseError) as err:
        msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserInputError(f"{where}: the recorded model XML does not compile in mujoco "
                             f"{mujoco.__version__} ({msg}); its joints cannot be read") from None


def joint_table(model) -> dict:
    """name -> (type, qpos address, dof address) for every joint of a mujoco model."""
    import mujoco

    out = {}
    for j in range(model.njnt):
        name = mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_JOINT, j)
        out[name] = (int(model.jnt_type[j]), int(model.jnt_qposadr[j]), int(model.jnt_dofadr[j]))
    return out


def state_map(old_model, new_model, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Index arrays (qpos, qvel) that pick the new model's qpos / qvel out of the recorded ones."""
    old, new = joint_table(old_model), joint_table(new_model)
    unnamed = [n for n in list(old) + list(new) if not n]
    if unnamed:
        raise UserInputError(f"{where}: the model has unnamed joints; states cannot be matched by joint name")
    missing = [n for n in new if n not in old]
    extra = [n for n in old if n not in new]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"this version's model has joint(s) {', '.join(missing[:4])} that the recorded one lacks")
        if extra:
            parts.append(f"the recorded model has joint(s) {', '.join(extra[:4])} that this version's lacks")
        raise UserInputError(f"{where}: {'; '.join(parts)}; the recorded states do not fit this version's robot/objects")
    qidx, vidx = np.zeros(new_model.nq, dtype=np.int64), np.zeros(new_model.nv, dtype=np.int64)
    for name, (jtype, qadr, vadr) in new.items():
        otype, oq, ov = old[name]
        if otype != jtype:
            raise UserInputError(f"{where}: joint '{name}' changed type between the recorded model and this version's")
        nq, nv = _JOINT_WIDTH[jtype]
        qidx[qadr:qadr + nq] = np.arange(oq, oq + nq)
        vidx[vadr:vadr + nv] = np.arange(ov, ov + nv)
    return qidx, vidx


def map_states(states: np.ndarray, old_model, qidx: np.ndarray, vidx: np.ndarray, where: str) -> np.ndarray:
    """Flattened [time, qpos, qvel] states of the recorded model -> the same for this version's."""
    width = 1 + old_model.nq + old_model.nv + old_model.na
    if states.ndim != 2 or states.shape[1] != width:
        raise UserInputError(f"{where}: states have {states.shape[-1]} columns; the recorded model's "
                             f"[time, qpos, qvel] has {width}")
    qpos = states[:, 1:1 + old_model.nq]
    qvel = states[:, 1 + old_model.nq:1 + old_model.nq + old_model.nv]
    return np.concatenate([states[:, :1], qpos[:, qidx], qvel[:, vidx]], axis=1)


def object_prefixes(raw_env) -> list[str]:
    """Name prefixes of the task's objects (their sizes and fixed placements vary per demo)."""
    objs = list(getattr(raw_env.model, "mujoco_objects", []) or [])
    return sorted({o.naming_prefix for o in objs if getattr(o, "naming_prefix", "")})


# Attributes of object elements that carry a demo's sizes and fixed placements; an orientation is
# one of several spellings, so the recorded one replaces whichever this version's element uses.
_ORIENTATION = ("quat", "euler", "axisangle", "xyaxes", "zaxis")
_KEPT_ATTRS = {"geom": ("size", "pos", "fromto") + _ORIENTATION, "body": ("pos",) + _ORIENTATION,
               "site": ("pos", "size") + _ORIENTATION}


def regenerate_xml(base_xml: str, recorded_xml: str, prefixes, where: str) -> tuple[str, int]:
    """This version's model XML with the recorded demo's object sizes and placements.

    Every named geom/body/site of the task's objects in ``base_xml`` takes those attributes from the
    element of the same name in the recorded XML (a visual geom ``X_vis`` the recorded model lacks
    takes ``X``'s). Returns (xml, number of elements copied).
    """
    try:
        rec_root = ET.fromstring(recorded_xml)
    except ET.ParseError as err:
        raise UserInputError(f"{where}: the recorded model XML is not valid XML ({err})") from None
    recorded = {(el.tag, el.get("name")): el for el in rec_root.iter() if el.tag in _KEPT_ATTRS and el.get("name")}
    root = ET.fromstring(base_xml)
    copied = 0
    for el in root.iter():
        name = el.get("name")
        if el.tag not in _KEPT_ATTRS or not name or not any(name.startswith(p) for p in prefixes):
            continue
        src = recorded.get((el.tag, name))
        if src is None and name.endswith("_vis"):
            src = recorded.get((el.tag, name[: -len("_vis")]))
        if src is None:
            if el.tag == "site":
                continue  # markers only; nothing of the scene depends on them
            raise UserInputError(f"{where}: object {el.tag} '{name}' of this version's model is not in the "
                                 "recorded model XML; its size in the demo is unknown")
        if el.tag == "geom" and src.get("type", "sphere") != el.get("type", "sphere"):
            raise UserInputError(f"{where}: object geom '{name}' is a {src.get('type', 'sphere')} in the recorded "
                                 f"model and a {el.get('type', 'sphere')} in this version's")
        for attr in _KEPT_ATTRS[el.tag]:
            if attr in src.attrib:
                el.set(attr, src.get(attr))
            elif attr in el.attrib and attr != "size":
                el.attrib.pop(attr)  # absent in the recorded model: MJCF's default (pos 0, no rotation) held there
        copied += 1
    return ET.tostring(root, encoding="unicode"), copied


def body_positions(model, qpos: np.ndarray) -> dict:
    import mujoco

    data = mujoco.MjData(model)
    data.qpos[:] = qpos
    mujoco.mj_kinematics(model, data)
    return {mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_BODY, b): data.xpos[b].copy() for b in range(model.nbody)}


def largest_body_gap(old_model, old_qpos, new_model, new_qpos) -> tuple[float, str]:
    a, b = body_positions(old_model, old_qpos), body_positions(new_model, new_qpos)
    common = [n for n in a if n and n in b]
    if not common:
        return float("inf"), "(no body names in common)"
    gaps = {n: float(np.linalg.norm(a[n] - b[n])) for n in common}
    worst = max(gaps, key=gaps.get)
    return gaps[worst], worst


# =========================================================================== the port


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
        recorded = {d: _decode(src["data"][d].attrs["model_file"]) for d in info["demos"]}
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
