"""What ``zprl.data.port`` changes so a recorded demo fits this robosuite: env_args (env kwargs,
controller config) and the model XML, with the recorded states mapped onto the new model joint by
joint and the two models' body positions compared.

Apart from port.py (the command) so each part reads on its own: nothing here simulates, it only
rewrites metadata and compiles models. ``zprl.data.port`` re-exports the names other modules use.
"""

from __future__ import annotations

import copy
import inspect
import xml.etree.ElementTree as ET

import numpy as np

from zprl.common.errors import UserInputError

# robosuite <= 1.3 spelled the OSC damping keys this way (robomimic's v0.1 datasets carry them).
OLD_CONTROLLER_KEYS = {"damping": "damping_ratio", "damping_limits": "damping_ratio_limits"}
# mujoco joint types: qpos / qvel widths
_JOINT_WIDTH = {0: (7, 6), 1: (4, 3), 2: (1, 1), 3: (1, 1)}


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
