"""Small robomimic-layout hdf5 files whose values encode (episode, time), for exact assertions.

Per frame t of demo e:
- actions, per arm a: pos = (e, t, 100 * a + t); orientation = a realistic Panda gripper
  orientation (pi about x, i.e. pointing down) followed by a yaw of 0.05 t + 0.3 e + 0.1 a,
  written as axis-angle with robosuite's own transform_utils; gripper = +1 on even t, -1 on odd.
- low-dim obs: ``robot0_eef_pos`` = (e, t, 1000 e + t), ``object`` = 10 values t + 0.5 e + k / 10.
- rgb obs (uint8 HWC): channel 0 = t, channel 1 = e, channel 2 = 200.
- states: (e, t, 0, 0, 0) as float64.
"""

from __future__ import annotations

import json

import h5py
import numpy as np

LOWDIM_KEYS = {"robot0_eef_pos": 3, "object": 10}


def env_meta(n_arms: int = 1, abs_action: bool = True) -> dict:
    robots = ["Panda"] * n_arms
    return {
        "env_name": "Lift" if n_arms == 1 else "TwoArmTransport",
        "type": 1,
        "env_version": "1.4.1",
        "env_kwargs": {"robots": robots, "control_freq": 20,
                       "controller_configs": {"type": "OSC_POSE", "control_delta": not abs_action}},
    }


def arm_quat(e: int, t: int, arm: int = 0) -> np.ndarray:
    from robosuite.utils import transform_utils as T

    down = T.axisangle2quat(np.array([np.pi, 0.0, 0.0]))
    yaw = T.axisangle2quat(np.array([0.0, 0.0, 0.05 * t + 0.3 * e + 0.1 * arm]))
    return T.quat_multiply(down, yaw)


def abs_actions(e: int, length: int, n_arms: int = 1) -> np.ndarray:
    from robosuite.utils import transform_utils as T

    rows = []
    for t in range(length):
        row = []
        for a in range(n_arms):
            row += [e, t, 100 * a + t, *T.quat2axisangle(arm_quat(e, t, a)), 1.0 if t % 2 == 0 else -1.0]
        rows.append(row)
    return np.asarray(rows, dtype=np.float64)


def write_robomimic_file(path, lengths=(10, 12, 8), rgb_keys=(), image_size=84, n_arms=1,
                         abs_action=True, masks=None, lowdim=True):
    """Write a robomimic-layout file; returns its path. ``masks``: {key: [demo names]}."""
    masks = masks if masks is not None else {
        "train": [f"demo_{i}" for i in range(len(lengths)) if i % 3 != 2],
        "valid": [f"demo_{i}" for i in range(len(lengths)) if i % 3 == 2],
    }
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        total = 0
        for e, length in enumerate(lengths):
            g = data.create_group(f"demo_{e}")
            t = np.arange(length)
            g.create_dataset("actions", data=abs_actions(e, length, n_arms))
            g.create_dataset("states", data=np.stack([np.full(length, e), t, *[np.zeros(length)] * 3], 1).astype(np.float64))
            g.create_dataset("rewards", data=(t == length - 1).astype(np.float64))
            g.create_dataset("dones", data=(t == length - 1).astype(np.int64))
            g.attrs["num_samples"] = length
            g.attrs["model_file"] = "<mujoco/>"
            for group in ("obs", "next_obs"):
                o = g.create_group(group)
                if lowdim:
                    o.create_dataset("robot0_eef_pos", data=np.stack([np.full(length, e), t, 1000 * e + t], 1).astype(np.float64))
                    o.create_dataset("object", data=(t[:, None] + 0.5 * e + np.arange(10)[None] / 10).astype(np.float64))
                for key in rgb_keys:
                    img = np.zeros((length, image_size, image_size, 3), dtype=np.uint8)
                    img[..., 0] = t[:, None, None]
                    img[..., 1] = e
                    img[..., 2] = 200
                    o.create_dataset(key, data=img)
            total += length
        data.attrs["total"] = total
        data.attrs["env_args"] = json.dumps(env_meta(n_arms, abs_action))
        m = f.create_group("mask")
        for key, names in masks.items():
            m.create_dataset(key, data=np.array([n.encode() for n in names], dtype="S"))
    return str(path)


def lowdim_shape_meta(n_arms: int = 1, action_dim: int | None = None) -> dict:
    return {
        "obs": {k: {"shape": [d], "type": "low_dim"} for k, d in LOWDIM_KEYS.items()},
        "action": {"shape": [action_dim if action_dim is not None else 10 * n_arms]},
    }


def image_shape_meta(rgb_keys=("agentview_image",), image_size=84) -> dict:
    meta = lowdim_shape_meta()
    meta["obs"].update({k: {"shape": [3, image_size, image_size], "type": "rgb"} for k in rgb_keys})
    return meta
