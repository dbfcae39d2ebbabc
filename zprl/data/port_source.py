"""Reading the file to port: what a robomimic (or raw robosuite) hdf5 holds, and which kind of
actions it stores, from names, attributes, shapes and the action values.

Apart from port.py (the command) because ``zprl.data.check`` reads files the same way before
anything is ported; ``zprl.data.port`` re-exports these names.
"""

from __future__ import annotations

import json
import os

import numpy as np

from zprl.common.errors import UserInputError
from zprl.data.robomimic_file import decode_attr, demo_sort_key, open_robomimic_h5


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
    with open_robomimic_h5(path, f"{path} does not exist; give the path of a robomimic hdf5 file") as f:
        data = f["data"]
        attrs = {k: decode_attr(v) for k, v in data.attrs.items()}
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
        demos = sorted((k for k in data.keys() if isinstance(data[k], h5py.Group)), key=demo_sort_key)
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
                masks[k] = [decode_attr(d) for d in f["mask"][k][()]]
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
