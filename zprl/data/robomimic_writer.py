"""Write demonstrations in robomimic's hdf5 layout, atomically.

Everything goes to a temporary file beside the output; ``finish`` renames it into place, so a
crash or Ctrl-C never leaves a half-written dataset under the real name. Datasets are written
without modification times so the same demonstrations give the same bytes.
"""

from __future__ import annotations

import json
import os
import tempfile

import h5py
import numpy as np


class RobomimicWriter:
    def __init__(self, path: str, env_meta: dict, attrs: dict | None = None, compress_images: bool = True):
        self.path = os.path.abspath(os.fspath(path))
        out_dir = os.path.dirname(self.path)
        os.makedirs(out_dir, exist_ok=True)
        fd, self.tmp_path = tempfile.mkstemp(prefix=".tmp_", suffix=".hdf5", dir=out_dir)
        os.close(fd)
        self.file = h5py.File(self.tmp_path, "w", track_order=True)
        self.data = self.file.create_group("data")
        self.data.attrs["env_args"] = json.dumps(env_meta)
        for key, value in (attrs or {}).items():
            self.data.attrs[key] = value if isinstance(value, (str, int, float)) else json.dumps(value)
        self.compress_images = compress_images
        self.names: list[str] = []
        self.total = 0

    def _put(self, group, name: str, array) -> None:
        arr = np.asarray(array)
        kwargs = {"track_times": False}
        if arr.dtype == np.uint8 and arr.ndim == 4 and self.compress_images:
            # one chunk per frame: readers that sample single steps decompress only that frame
            kwargs.update(compression="gzip", chunks=(1,) + arr.shape[1:])
        group.create_dataset(name, data=arr, **kwargs)

    def add_demo(self, states, actions, rewards, dones, obs: dict, next_obs: dict, model_file: str) -> str:
        name = f"demo_{len(self.names)}"
        g = self.data.create_group(name)
        n = len(actions)
        self._put(g, "states", np.asarray(states, dtype=np.float64))
        self._put(g, "actions", np.asarray(actions, dtype=np.float32))
        self._put(g, "rewards", np.asarray(rewards, dtype=np.float32))
        self._put(g, "dones", np.asarray(dones, dtype=np.int64))
        for group_name, frames in (("obs", obs), ("next_obs", next_obs)):
            og = g.create_group(group_name)
            for key in sorted(frames):
                if len(frames[key]) != n:
                    raise ValueError(f"{group_name}/{key} has {len(frames[key])} steps, actions have {n}")
                self._put(og, key, np.stack(frames[key]))
        g.attrs["num_samples"] = n
        g.attrs["model_file"] = model_file
        self.names.append(name)
        self.total += n
        return name

    def finish(self, masks: dict[str, list[str]]) -> str:
        """Write ``total`` and the filter keys, close, and move the file into place."""
        self.data.attrs["total"] = self.total
        mg = self.file.create_group("mask")
        for key, names in masks.items():
            mg.create_dataset(key, data=np.array(sorted(names, key=lambda s: int(s.split("_")[-1])), dtype="S"),
                              track_times=False)
        self.file.close()
        # mkstemp makes the file private; give it the permissions a normally created file gets
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(self.tmp_path, 0o666 & ~umask)
        os.replace(self.tmp_path, self.path)
        return self.path

    def abort(self) -> None:
        try:
            self.file.close()
        finally:
            if os.path.exists(self.tmp_path):
                os.remove(self.tmp_path)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self.abort()
        return False
