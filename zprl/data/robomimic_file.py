"""Cheap checks of a robomimic hdf5 file, so bad inputs fail with one line before any work starts.

Only group names, attributes and dataset shapes are read here, never the arrays themselves, so
this is safe to call on multi-gigabyte image datasets.
"""

from __future__ import annotations

import json
import os
import re

from zprl.common.errors import UserInputError
from zprl.data.paths import missing_dataset_message

# Per arm: OSC_POSE pose part (3 + 3) plus one gripper dimension.
ARM_ACTION_DIM = 7
CONVERT_HINT = "make absolute actions with: python -m zprl.data.convert_abs --input IN --output OUT"


def demo_sort_key(name: str):
    m = re.search(r"(\d+)$", name)
    return (int(m.group(1)) if m else -1, name)


def decode_attr(value):
    """An hdf5 attribute or string dataset entry as str (h5py returns bytes for some writers)."""
    return value.decode("utf-8") if isinstance(value, bytes) else value


def _json_attr(group, key: str, path: str):
    raw = decode_attr(group.attrs[key])
    try:
        return json.loads(raw)
    except (TypeError, ValueError):
        raise UserInputError(f"{path}: attribute data.attrs['{key}'] is not valid JSON") from None


def uses_absolute_actions(env_meta: dict) -> bool:
    ctrl = env_meta.get("env_kwargs", {}).get("controller_configs", {}) or {}
    return ctrl.get("control_delta", True) is False


def num_arms(env_meta: dict) -> int:
    robots = env_meta.get("env_kwargs", {}).get("robots", ["Panda"])
    return 1 if isinstance(robots, str) else len(robots)


def open_robomimic_h5(path, missing_message: str, directory_message: str | None = None):
    """``path`` as an h5py.File opened read-only, with a top-level 'data' group; UserInputError
    (one line) for a path that is missing, a directory, not HDF5, unreadable or without 'data'.
    The caller closes it (``with open_robomimic_h5(...) as f:``).

    The lines for a missing path and a directory are the caller's, as their users need different
    fixes: check_robomimic_file (what training reads) names the command that makes a missing
    dataset, port_source.read_source (the port and check commands) asks for a file. With
    directory_message None a directory is reported as not an HDF5 file.
    """
    import h5py

    path = os.fspath(path)
    if not os.path.exists(path):
        raise UserInputError(missing_message)
    if os.path.isdir(path) and directory_message is not None:
        raise UserInputError(directory_message)
    if os.path.isdir(path) or not h5py.is_hdf5(path):
        raise UserInputError(f"{path} is not an HDF5 file; expected a robomimic hdf5 dataset")
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise UserInputError(f"{path} cannot be opened as HDF5 ({err}); is it complete?") from None
    if "data" not in f or not isinstance(f["data"], h5py.Group):
        f.close()
        raise UserInputError(f"{path} is not a robomimic dataset: no 'data' group at the top level")
    return f


def check_robomimic_file(path, need_obs_keys=(), action_dim=None, filter_key=None, abs_action=None) -> dict:
    """Validate a robomimic hdf5 file and describe it; raise UserInputError (one line) if unusable.

    need_obs_keys: observation keys every demo must have under ``obs/``.
    action_dim: expected width of ``actions`` (7 per arm for OSC_POSE + gripper).
    filter_key: a key that must exist under ``mask/`` and list at least one demo.
    abs_action: True/False requires absolute/delta actions (from env_args ``control_delta``).

    Returns a dict with: path, env_meta, demos (in index order; the filter key's demos if one is
    given), num_demos, num_samples (per listed demo), action_dim, obs_keys, obs_shapes (per-step
    shape of each obs key), masks, abs_action, is_generated, generated (the zprl_generated record
    or None), converted (the zprl_converted record or None).
    """
    import h5py

    path = os.fspath(path)
    with open_robomimic_h5(path, missing_dataset_message(path),
                           directory_message=f"{path} is a directory; expected a robomimic hdf5 file") as f:
        data = f["data"]
        if "env_args" not in data.attrs:
            raise UserInputError(
                f"{path} is not a robomimic dataset: data.attrs has no 'env_args' (the env metadata)")
        env_meta = _json_attr(data, "env_args", path)
        if not isinstance(env_meta, dict) or "env_name" not in env_meta:
            raise UserInputError(f"{path}: data.attrs['env_args'] has no 'env_name'; not robomimic env metadata")
        all_demos = sorted((k for k in data.keys() if isinstance(data[k], h5py.Group)), key=demo_sort_key)
        if not all_demos:
            raise UserInputError(f"{path} is not a usable robomimic dataset: 'data' holds no demo groups")

        masks = sorted(f["mask"].keys()) if "mask" in f else []
        demos = all_demos
        if filter_key is not None:
            if filter_key not in masks:
                have = ", ".join(masks) if masks else "no mask/ group"
                raise UserInputError(
                    f"filter key '{filter_key}' not found under mask/ in {path} (has: {have}); "
                    "set the filter key to one of these or to null")
            demos = [decode_attr(d) for d in f["mask"][filter_key][()]]
            if not demos:
                raise UserInputError(f"filter key '{filter_key}' in {path} lists no demos; choose another filter key")
            unknown = [d for d in demos if d not in data]
            if unknown:
                raise UserInputError(
                    f"filter key '{filter_key}' in {path} names demos that do not exist: {', '.join(unknown[:5])}")

        for name in demos:
            if "actions" not in data[name]:
                raise UserInputError(f"{path}: data/{name} has no 'actions' dataset; not a robomimic demo")
        first = data[demos[0]]
        found_dim = int(first["actions"].shape[-1]) if first["actions"].ndim == 2 else -1
        for name in demos:
            shape = data[name]["actions"].shape
            if len(shape) != 2 or shape[1] != found_dim:
                raise UserInputError(
                    f"{path}: data/{name}/actions has shape {tuple(shape)}, expected (T, {found_dim}) like {demos[0]}")

        obs_shapes = {}
        if "obs" in first:
            obs_shapes = {k: tuple(first["obs"][k].shape[1:]) for k in first["obs"].keys()}
        for key in need_obs_keys:
            for name in demos:
                have = list(data[name]["obs"].keys()) if "obs" in data[name] else []
                if key not in have:
                    listed = ", ".join(sorted(have)) if have else "no obs group"
                    raise UserInputError(
                        f"obs key '{key}' not in {path} (data/{name}/obs has: {listed}); "
                        "fix shape_meta.obs or use a dataset with that key")

        is_abs = uses_absolute_actions(env_meta)
        if action_dim is not None and int(action_dim) != found_dim:
            arms = num_arms(env_meta)
            hint = (f"the file stores delta actions; {CONVERT_HINT}" if not is_abs else
                    f"absolute actions are pos(3)+axis-angle(3)+gripper(1) = {ARM_ACTION_DIM} per arm; "
                    "check the action shape in shape_meta")
            raise UserInputError(
                f"action dimension mismatch in {path}: expected {int(action_dim)}, found {found_dim} "
                f"({arms} arm(s)); {hint}")
        if abs_action is True and not is_abs:
            raise UserInputError(
                f"{path} stores delta actions (env_args control_delta is not false); {CONVERT_HINT}")
        if abs_action is False and is_abs:
            raise UserInputError(f"{path} already stores absolute actions (env_args control_delta=false)")

        generated = _json_attr(data, "zprl_generated", path) if "zprl_generated" in data.attrs else None
        converted = _json_attr(data, "zprl_converted", path) if "zprl_converted" in data.attrs else None
        num_samples = {}
        for name in demos:
            n = data[name].attrs.get("num_samples")
            num_samples[name] = int(n) if n is not None else int(data[name]["actions"].shape[0])

    return {
        "path": path,
        "env_meta": env_meta,
        "demos": demos,
        "num_demos": len(demos),
        "num_samples": num_samples,
        "action_dim": found_dim,
        "obs_keys": sorted(obs_shapes),
        "obs_shapes": obs_shapes,
        "masks": masks,
        "abs_action": is_abs,
        "is_generated": generated is not None,
        "generated": generated,
        "converted": converted,
    }
