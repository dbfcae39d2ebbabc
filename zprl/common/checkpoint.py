"""Atomic checkpoint files and the top-k table of the best ones."""

from __future__ import annotations

import hashlib
import os
import tempfile

import torch


def atomic_save(obj, path: str) -> str:
    """torch.save to a temp file in the same directory, then rename: a reader never sees half a file."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".ckpt", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def file_sha256(path: str) -> str:
    """Content hash of a file (identifies the base checkpoint an online run started from)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_checkpoint(path: str, map_location="cpu") -> dict:
    # Our checkpoints hold configs, numpy RNG states and counters besides tensors.
    return torch.load(path, map_location=map_location, weights_only=False)


class TopKCheckpoints:
    """Keeps the k best checkpoints by a monitored score, named like ``epoch_0012-score_0.840.ckpt``.

    The table is part of the training checkpoint, so a resumed run keeps pruning correctly.
    """

    def __init__(self, directory: str, k: int = 5, mode: str = "max",
                 format_str: str = "epoch_{epoch:04d}-score_{score:.3f}.ckpt"):
        if mode not in ("max", "min"):
            raise ValueError(f"top-k mode must be 'max' or 'min', got {mode!r}")
        self.directory, self.k, self.mode, self.format_str = directory, k, mode, format_str
        self.table: dict[str, float] = {}  # path -> score

    def path_for(self, epoch: int, score: float) -> str | None:
        """Where to save this checkpoint, or None if it does not make the top k. Prunes the loser."""
        if self.k <= 0:
            return None
        path = os.path.join(self.directory, self.format_str.format(epoch=epoch, score=score))
        if len(self.table) < self.k:
            self.table[path] = score
            return path
        ranked = sorted(self.table.items(), key=lambda kv: kv[1], reverse=(self.mode == "min"))
        worst_path, worst = ranked[0]
        better = score > worst if self.mode == "max" else score < worst
        if not better:
            return None
        del self.table[worst_path]
        if os.path.exists(worst_path):
            os.remove(worst_path)
        self.table[path] = score
        return path

    def state_dict(self) -> dict:
        return {"table": dict(self.table)}

    def load_state_dict(self, state: dict) -> None:
        self.table = dict(state["table"])
