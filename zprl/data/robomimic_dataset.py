"""Windows of robomimic demos for offline training, driven by the task's ``shape_meta``."""

from __future__ import annotations

import copy
import os

import numpy as np
import torch

from zprl.common.errors import UserInputError
from zprl.data import replay_cache
from zprl.data.robomimic_file import ARM_ACTION_DIM, check_robomimic_file
from zprl.data.rotation import ROT6D_ARM_DIM, abs_action_to_rot6d
from zprl.data.sampler import SequenceSampler, split_validation, subsample
from zprl.model.normalizer import LinearNormalizer

ROTATION_REPS = ("rotation_6d", "axis_angle")


def parse_shape_meta(shape_meta) -> tuple[dict, int]:
    """``{key: {"type", "shape"}}`` for obs and the action width, from a dict or DictConfig."""
    obs = {}
    for key, spec in shape_meta["obs"].items():
        kind = spec.get("type", "low_dim")
        if kind not in ("rgb", "low_dim"):
            raise UserInputError(f"shape_meta.obs.{key}.type is {kind!r}; use 'rgb' or 'low_dim'")
        obs[str(key)] = {"type": kind, "shape": tuple(int(s) for s in spec["shape"])}
    return obs, int(shape_meta["action"]["shape"][0])


class RobomimicReplayDataset(torch.utils.data.Dataset):
    """Samples ``{"obs": {key: (n_obs_steps, *shape)}, "action": (horizon, action_dim)}``.

    rgb obs come out float32 CHW in [0, 1] (stored as the file's uint8 HWC); low-dim obs and
    actions float32. With ``abs_action`` and ``rotation_rep="rotation_6d"`` each arm's
    pos + axis-angle + gripper (7) becomes pos + rot6d + gripper (10).
    """

    def __init__(self, shape_meta, dataset_path, horizon=16, n_obs_steps=1, n_action_steps=4,
                 pad_before=None, pad_after=None, abs_action=True, rotation_rep="rotation_6d",
                 use_cache=True, cache_dir=None, seed=42, val_ratio=0.0, filter_key=None,
                 max_train_episodes=None):
        self.obs_specs, self.action_dim = parse_shape_meta(shape_meta)
        self.rgb_keys = [k for k, v in self.obs_specs.items() if v["type"] == "rgb"]
        self.lowdim_keys = [k for k, v in self.obs_specs.items() if v["type"] == "low_dim"]
        self.abs_action = bool(abs_action)
        self.rotation_rep = rotation_rep
        self.horizon, self.n_obs_steps = int(horizon), int(n_obs_steps)
        if rotation_rep not in ROTATION_REPS:
            raise UserInputError(f"rotation_rep={rotation_rep!r} is not supported; use one of {', '.join(ROTATION_REPS)}")
        if not 1 <= self.n_obs_steps <= self.horizon:
            raise UserInputError(f"n_obs_steps={n_obs_steps} must be between 1 and horizon={horizon}")
        self.rot6d = self.abs_action and rotation_rep == "rotation_6d"
        file_action_dim = self._file_action_dim()
        dataset_path = os.fspath(dataset_path)

        # All checks before anything (the cache included) is written.
        info = check_robomimic_file(dataset_path, need_obs_keys=list(self.obs_specs), action_dim=file_action_dim,
                                    filter_key=filter_key, abs_action=True if self.abs_action else None)
        self._check_obs_shapes(dataset_path, info["obs_shapes"])

        convert = abs_action_to_rot6d if self.rot6d else (lambda a: a)
        if use_cache:
            self.replay = replay_cache.load_cached(dataset_path, self.obs_specs, convert, self.abs_action,
                                                   rotation_rep, cache_dir=cache_dir)
        else:
            self.replay = replay_cache.load_in_memory(dataset_path, self.obs_specs, convert)

        index_of = {name: i for i, name in enumerate(self.replay.demos)}
        chosen = np.array([index_of[name] for name in info["demos"]], dtype=np.int64)
        val_mask = split_validation(len(chosen), float(val_ratio), int(seed))
        self.train_ids = subsample(chosen[~val_mask], max_train_episodes, int(seed))
        self.val_ids = chosen[val_mask]
        self.pad_before = self.n_obs_steps - 1 if pad_before is None else int(pad_before)
        self.pad_after = int(n_action_steps) - 1 if pad_after is None else int(pad_after)
        self._use(self.train_ids)

    # -- setup helpers ----------------------------------------------------------------------
    def _file_action_dim(self) -> int:
        if not self.rot6d:
            return self.action_dim
        if self.action_dim % ROT6D_ARM_DIM:
            raise UserInputError(
                f"shape_meta.action.shape is [{self.action_dim}], but rot6d absolute actions need 10 per arm "
                "(pos 3 + rot6d 6 + gripper 1); set it to 10 x number of arms")
        return self.action_dim // ROT6D_ARM_DIM * ARM_ACTION_DIM

    def _check_obs_shapes(self, path: str, file_shapes: dict) -> None:
        for key, spec in self.obs_specs.items():
            have = tuple(file_shapes.get(key, ()))
            if spec["type"] == "rgb":
                want = (spec["shape"][1], spec["shape"][2], spec["shape"][0])  # file is HWC
            else:
                want = spec["shape"]
            if have != want:
                raise UserInputError(
                    f"shape_meta.obs.{key}.shape is {list(spec['shape'])} but {path} stores per-step shape "
                    f"{list(have)}; fix shape_meta or use a dataset with that shape")
        if self.rgb_keys:
            import h5py

            # Samples scale rgb by 1/255, which is only right for uint8 frames; the dtype is metadata, so this is cheap.
            with h5py.File(path, "r") as f:
                first = f["data"][replay_cache.list_demos(f)[0]]["obs"]
                for key in self.rgb_keys:
                    if first[key].dtype != np.uint8:
                        raise UserInputError(
                            f"obs key '{key}' in {path} has dtype {first[key].dtype}, expected uint8 images; "
                            "mark it type: low_dim in shape_meta or regenerate the dataset")

    def _use(self, episode_ids) -> None:
        self.episode_ids = np.asarray(episode_ids, dtype=np.int64)
        self.sampler = SequenceSampler(self.replay.episode_ends, self.episode_ids, self.horizon,
                                       self.pad_before, self.pad_after)

    # -- public API -------------------------------------------------------------------------
    @property
    def num_episodes(self) -> int:
        return len(self.episode_ids)

    @property
    def episode_ends(self) -> np.ndarray:
        """Cumulative lengths of this split's episodes, in the order of ``get_all_actions``."""
        ends = self.replay.episode_ends
        starts = np.concatenate([[0], ends[:-1]])
        return np.cumsum(ends[self.episode_ids] - starts[self.episode_ids])

    def _frames_of(self, episode_ids) -> np.ndarray:
        ends = self.replay.episode_ends
        starts = np.concatenate([[0], ends[:-1]])
        parts = [np.arange(starts[e], ends[e]) for e in episode_ids]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def get_validation_dataset(self) -> "RobomimicReplayDataset":
        val = copy.copy(self)
        val._use(self.val_ids)
        return val

    def get_all_actions(self) -> torch.Tensor:
        """Every action (converted) of this split's episodes, shape (frames, action_dim)."""
        return torch.from_numpy(self.replay.arrays["action"][self._frames_of(self.episode_ids)])

    def get_normalizer(self) -> LinearNormalizer:
        """Limits (to [-1, 1]) on actions and low-dim obs of the training episodes; rgb identity.

        rot6d entries are components of unit column vectors, so they already live in [-1, 1];
        stretching them by their (often narrow) data range would turn small errors of the policy
        into large rotation errors after Gram-Schmidt, so they pass through unchanged. Position
        and gripper dims use limits.
        """
        frames = self._frames_of(self.train_ids)
        data = {"action": self.replay.arrays["action"][frames]}
        data.update({k: self.replay.arrays[f"obs/{k}"][frames] for k in self.lowdim_keys})
        norm = LinearNormalizer().fit(data, mode="limits")
        if self.rot6d:
            rot_dims = [a * ROT6D_ARM_DIM + d for a in range(self.action_dim // ROT6D_ARM_DIM) for d in range(3, 9)]
            norm["action"].set_identity_dims(rot_dims)
        for key in self.rgb_keys:
            norm.set_identity(key)
        return norm

    def __len__(self) -> int:
        return len(self.sampler)

    def __getitem__(self, i: int) -> dict:
        idx = self.sampler.window(i)
        obs_idx = idx[: self.n_obs_steps]
        obs = {}
        for key in self.lowdim_keys:
            obs[key] = torch.from_numpy(self.replay.arrays[f"obs/{key}"][obs_idx])
        for key in self.rgb_keys:
            img = self.replay.frames(f"obs/{key}", obs_idx)  # (n_obs_steps, H, W, C) uint8
            obs[key] = torch.from_numpy(np.ascontiguousarray(img)).permute(0, 3, 1, 2).float().div_(255.0)
        return {"obs": obs, "action": torch.from_numpy(self.replay.arrays["action"][idx])}
