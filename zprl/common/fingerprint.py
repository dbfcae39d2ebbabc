"""Content hashes that tell whether two machines built the same thing, one line per input.

    python -m zprl.common.fingerprint CKPT_OR_HDF5 [...]

- a checkpoint (.ckpt): ``weights_sha256`` of its EMA weights, the hash an online run from it writes as
  ``base_policy.sha256`` (compare with ``docs/results/<task>/<method>/<seed>/base_policy.sha256``);
- a robomimic hdf5 (.hdf5): one sha256 per demo field (``actions``, ``states``, ``obs``, ...) over every
  demo in order, then one for the whole file's data, so a rebuilt base that differs can be traced to its
  demos (they differ) or to its training (they match).

Why: the lift base of the evidence runs rebuilds to other weights on some CPUs (docs/cpu_runs.md, "base C");
these lines, printed by the evidence scripts into their logs, locate where two builds part.
"""

from __future__ import annotations

import hashlib
import os
import sys


def ckpt_weights_sha256(path: str) -> tuple[str, str]:
    """(weights_sha256, which weights): the EMA weights of an offline checkpoint, else its model's."""
    from zprl.common.checkpoint import load_checkpoint, weights_sha256

    state = load_checkpoint(path).get("state", {})
    if "ema_model" in state:
        weights, which = state["ema_model"], "ema_model"
    elif "model" in state:
        weights, which = state["model"], "model"
    else:
        raise SystemExit(f"zprl.common.fingerprint: {path} holds no 'model' or 'ema_model' weights (not a zprl offline checkpoint)")
    return weights_sha256(weights), which


def ckpt_line(path: str) -> str:
    sha, which = ckpt_weights_sha256(path)
    return f"{path}: weights_sha256 {sha} ({which})"


def _hash_node(h: "hashlib._Hash", node) -> None:
    import h5py

    if isinstance(node, h5py.Dataset):
        data = node[()]
        h.update(f"{node.name}|{data.dtype}|{getattr(data, 'shape', ())}|".encode())
        h.update(data.tobytes() if hasattr(data, "tobytes") else repr(data).encode())
    else:
        for key in sorted(node):
            _hash_node(h, node[key])


def hdf5_hashes(path: str) -> dict[str, str]:
    """sha256 per demo field over every demo in order, and "data" for the whole file's data."""
    import h5py

    with h5py.File(path, "r") as f:
        if "data" not in f:
            raise SystemExit(f"zprl.common.fingerprint: {path} has no 'data' group (not a robomimic hdf5)")
        data = f["data"]
        # demo_0, demo_1, ... in numeric order, as robomimic sorts them
        demos = sorted(data, key=lambda k: int(k.split("_")[-1]) if k.split("_")[-1].isdigit() else k)
        fields = sorted({key for d in demos for key in data[d]})
        hashes, whole = {}, hashlib.sha256()
        for field in fields:
            h = hashlib.sha256()
            for d in demos:
                if field in data[d]:
                    _hash_node(h, data[d][field])
            whole.update(h.digest())
            hashes[field] = h.hexdigest()
        hashes["n_demos"], hashes["data"] = str(len(demos)), whole.hexdigest()
    return hashes


def hdf5_lines(path: str) -> list[str]:
    hashes = hdf5_hashes(path)
    n, whole = hashes.pop("n_demos"), hashes.pop("data")
    return [f"{path}: {field} sha256 {sha}" for field, sha in hashes.items()] + [
        f"{path}: {n} demos, data sha256 {whole}"]


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if argv else 2
    for path in argv:
        if not os.path.isfile(path):
            raise SystemExit(f"zprl.common.fingerprint: no file {path}")
        if path.endswith(".ckpt"):
            print(ckpt_line(path))
        elif path.endswith((".hdf5", ".h5")):
            print("\n".join(hdf5_lines(path)))
        else:
            raise SystemExit(f"zprl.common.fingerprint: {path}: expected a .ckpt or .hdf5 file")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
