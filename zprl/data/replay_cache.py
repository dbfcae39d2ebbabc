"""Converted robomimic episodes, in memory or in a zarr 3 cache next to the hdf5 file.

Every demo of the file is converted once (actions to the policy's rotation form, obs keys picked
by shape_meta) and concatenated per key with ``episode_ends``. Which demos a run trains on
(filter key, split, subsampling) is decided later, so those settings never invalidate the cache.

Cache layout: ``<cache_dir>/<file name>.zprl_cache/<content>-<obs>-<settings>.zarr`` where
- ``content`` hashes the file's size and each demo's name, num_samples, actions and states (cheap
  to read, and unlike the mtime it survives copies);
- ``obs`` hashes the observations the cache stores, i.e. the obs keys of these settings: low-dim
  arrays whole, camera arrays by shape and dtype plus five frames per demo (first, quartiles, last),
  so a hit on a 100-demo image file reads a few MB instead of every frame. An edit to camera frames
  that touches none of those five is not seen: pass ``use_cache=false`` (or delete the cache folder)
  after editing images in place;
- ``settings`` hashes everything else that changes what is stored (obs keys, types and shapes,
  abs_action, rotation_rep, layout version).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import uuid

import numpy as np

from zprl.common.errors import UserInputError
from zprl.data.robomimic_file import demo_sort_key

CACHE_FORMAT = 1
# Frames per shard file for image arrays: chunks stay one frame (random access per sample)
# while the number of files stays manageable for datasets with ~100k frames.
IMAGE_SHARD_FRAMES = 64


def list_demos(h5file) -> list[str]:
    data = h5file["data"]
    return sorted((k for k in data.keys() if "actions" in data[k]), key=demo_sort_key)


def content_signature(path: str) -> str:
    import h5py

    h = hashlib.sha256(f"size={os.path.getsize(path)}".encode())
    with h5py.File(path, "r") as f:
        data = f["data"]
        for name in list_demos(f):
            g = data[name]
            h.update(f"|{name}|{g.attrs.get('num_samples', -1)}".encode())
            for key in ("actions", "states"):
                if key in g:
                    arr = np.ascontiguousarray(g[key][()])
                    h.update(f"|{key}{arr.shape}{arr.dtype.str}".encode())
                    h.update(arr.tobytes())
    return h.hexdigest()[:16]


# camera frames hashed per demo, as fractions of its length (first, quartiles, last)
RGB_SIGNATURE_FRACTIONS = (0.0, 0.25, 0.5, 0.75, 1.0)


def obs_signature(path: str, obs_specs: dict) -> str:
    """Hash of the observations a cache with these obs keys stores (see the module docstring)."""
    import h5py

    h = hashlib.sha256()
    with h5py.File(path, "r") as f:
        data = f["data"]
        for name in list_demos(f):
            obs = data[name]["obs"] if "obs" in data[name] else {}
            for key, spec in sorted(obs_specs.items()):
                if key not in obs:  # reported by the dataset's own checks when it is read
                    h.update(f"|{name}/{key}:missing".encode())
                    continue
                ds = obs[key]
                h.update(f"|{name}/{key}{ds.shape}{ds.dtype.str}".encode())
                if spec["type"] == "rgb" and len(ds):
                    idx = sorted({int(round(q * (len(ds) - 1))) for q in RGB_SIGNATURE_FRACTIONS})
                    arr = ds[idx]
                else:
                    arr = ds[()]
                h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()[:16]


def settings_signature(obs_specs: dict, abs_action: bool, rotation_rep: str) -> str:
    desc = {
        "format": CACHE_FORMAT,
        "obs": {k: [v["type"], list(v["shape"])] for k, v in sorted(obs_specs.items())},
        "abs_action": bool(abs_action),
        "rotation_rep": rotation_rep,
    }
    return hashlib.sha256(json.dumps(desc, sort_keys=True).encode()).hexdigest()[:16]


def iter_episodes(path: str, obs_specs: dict, convert_action):
    """Yield (demo name, {"action": ..., "obs/<key>": ...}) for every demo, converted."""
    import h5py

    with h5py.File(path, "r") as f:
        for name in list_demos(f):
            g = f["data"][name]
            ep = {"action": np.asarray(convert_action(g["actions"][()]), dtype=np.float32)}
            for key, spec in obs_specs.items():
                arr = g["obs"][key][()]
                ep[f"obs/{key}"] = arr if spec["type"] == "rgb" else arr.astype(np.float32)
            yield name, ep


class ReplayData:
    """Concatenated episodes: actions and low-dim obs in memory, images in memory or in zarr.

    Image arrays from a cache are opened lazily and per process (they are dropped when the
    object is pickled for a DataLoader worker), so workers never share file handles.
    """

    def __init__(self, arrays: dict, episode_ends, demos, zarr_path: str | None = None, attrs=None):
        self.arrays = arrays  # key -> np.ndarray; image keys absent when read from zarr lazily
        self.episode_ends = np.asarray(episode_ends, dtype=np.int64)
        self.demos = list(demos)
        self.zarr_path = zarr_path
        self.attrs = dict(attrs or {})
        self._lazy = None
        self._lazy_pid = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_lazy"], state["_lazy_pid"] = None, None
        return state

    def get(self, key: str):
        if key in self.arrays:
            return self.arrays[key]
        if self.zarr_path is None:
            raise KeyError(key)
        if self._lazy is None or self._lazy_pid != os.getpid():
            import zarr

            self._lazy = {"/": zarr.open_group(self.zarr_path, mode="r")}
            self._lazy_pid = os.getpid()
        if key not in self._lazy:
            # Looking an array up in the group re-reads its metadata, so keep the handle.
            self._lazy[key] = self._lazy["/"][key]
        return self._lazy[key]

    def frames(self, key: str, idx: np.ndarray) -> np.ndarray:
        """Rows ``idx`` of ``key``; one contiguous read, since sample windows are contiguous."""
        lo, hi = int(idx.min()), int(idx.max()) + 1
        return np.asarray(self.get(key)[lo:hi])[idx - lo]


def load_in_memory(path: str, obs_specs: dict, convert_action) -> ReplayData:
    names, parts = [], {}
    for name, ep in iter_episodes(path, obs_specs, convert_action):
        names.append(name)
        for k, v in ep.items():
            parts.setdefault(k, []).append(v)
    ends = np.cumsum([len(a) for a in parts["action"]])
    return ReplayData({k: np.concatenate(v) for k, v in parts.items()}, ends, names)


def _write_store(tmp: str, path: str, obs_specs: dict, convert_action, attrs: dict) -> None:
    import h5py
    import zarr

    with h5py.File(path, "r") as f:
        lengths = [int(f["data"][n]["actions"].shape[0]) for n in list_demos(f)]
    total = int(sum(lengths))
    root = zarr.open_group(tmp, mode="w")
    arrays, names, offset = {}, [], 0
    # Episodes are streamed one at a time, so image datasets larger than memory can be cached.
    for name, ep in iter_episodes(path, obs_specs, convert_action):
        names.append(name)
        if not arrays:
            for key, first in ep.items():
                frame = first.shape[1:]
                if key.startswith("obs/") and obs_specs[key[4:]]["type"] == "rgb":
                    chunks, shards = (1, *frame), (IMAGE_SHARD_FRAMES, *frame)
                else:
                    chunks, shards = (max(1, min(total, 4096)), *frame), None
                arrays[key] = root.create_array(key, shape=(total, *frame), dtype=first.dtype,
                                                chunks=chunks, shards=shards)
        n = len(ep["action"])
        for key, value in ep.items():
            arrays[key][offset:offset + n] = value
        offset += n
    root.create_array("meta/episode_ends", data=np.cumsum(lengths).astype(np.int64))
    root.attrs.update({**attrs, "demos": names})


def load_cached(path: str, obs_specs: dict, convert_action, abs_action: bool, rotation_rep: str,
                cache_dir: str | None = None) -> ReplayData:
    """Open the cache for these settings, building it first (under a file lock) if needed."""
    import filelock
    import zarr

    cache_root = os.path.abspath(cache_dir) if cache_dir else os.path.dirname(os.path.abspath(path))
    probe = cache_root
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.access(probe, os.W_OK):
        raise UserInputError(f"cannot write the dataset cache in {cache_root}; set cache_dir to a writable folder or use_cache=false")

    content = content_signature(path)
    observed = obs_signature(path, obs_specs)
    settings = settings_signature(obs_specs, abs_action, rotation_rep)
    folder = os.path.join(cache_root, os.path.basename(path) + ".zprl_cache")
    final = os.path.join(folder, f"{content}-{observed}-{settings}.zarr")
    os.makedirs(folder, exist_ok=True)
    with filelock.FileLock(os.path.join(folder, ".lock")):
        if not os.path.isdir(final):
            tmp = tempfile.mkdtemp(prefix=".building-", dir=folder)
            try:
                attrs = {"format": CACHE_FORMAT, "content": content, "obs_signature": observed, "settings": settings,
                         "abs_action": bool(abs_action), "rotation_rep": rotation_rep,
                         "obs": {k: [v["type"], list(v["shape"])] for k, v in obs_specs.items()},
                         "source": os.path.abspath(path), "build_id": uuid.uuid4().hex}
                _write_store(tmp, path, obs_specs, convert_action, attrs)
                # The rename is the commit: a crash before it leaves only a hidden temp dir.
                os.replace(tmp, final)
            finally:
                if os.path.isdir(tmp):
                    shutil.rmtree(tmp, ignore_errors=True)
            # Caches that can never be hit again: of an older version of the file (other actions or
            # states), or of these settings with observations the file no longer holds.
            for other in os.listdir(folder):
                stale = not other.startswith(content + "-") or other.endswith(f"-{settings}.zarr")
                if other.endswith(".zarr") and stale and other != os.path.basename(final):
                    shutil.rmtree(os.path.join(folder, other), ignore_errors=True)

    root = zarr.open_group(final, mode="r")
    attrs = dict(root.attrs)
    with_names = {}
    for key in ["action"] + [f"obs/{k}" for k, v in obs_specs.items() if v["type"] != "rgb"]:
        with_names[key] = np.asarray(root[key][:])
    return ReplayData(with_names, root["meta/episode_ends"][:], attrs["demos"], zarr_path=final, attrs=attrs)
