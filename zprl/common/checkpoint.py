"""Atomic checkpoint files and the top-k table of the best ones.

A kill at any moment leaves every checkpoint file either as it was or complete: files are written
to a temp file in the same directory, fsynced and renamed over the target (``atomic_save``). A
kill during a save leaves only a ``.tmp-*.ckpt`` file behind, which the next resume removes
(``remove_partial_saves``).
"""

from __future__ import annotations

import glob
import hashlib
import logging
import os
import re
import tempfile

import torch

log = logging.getLogger("zprl")

TMP_PREFIX = ".tmp-"
# an online run writes its base policy's weights_sha256 into this file beside logs.json.txt (zprl.report
# reads it): the weights, not the file, since a file also holds timings and optimizer state that do not
# change what the base does
BASE_SHA_FILE = "base_policy.sha256"
# runs logged before that file existed: their base checkpoint file's sha256, written beside the logs by hand
BASE_CKPT_SHA_FILE = "base_ckpt.sha256"


def atomic_save(obj, path: str) -> str:
    """torch.save to a temp file in the same directory, then rename: a reader never sees half a file."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=".ckpt", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(directory)  # the rename itself survives a power cut, not only a kill
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def _fsync_dir(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_partial_saves(directory: str) -> list[str]:
    """Delete the temp files of saves a kill interrupted (never a complete checkpoint)."""
    removed = sorted(glob.glob(os.path.join(directory, f"{TMP_PREFIX}*.ckpt")))
    for path in removed:
        os.remove(path)
    if removed:
        log.info("removed %d partial checkpoint file(s) left by an interrupted save in %s", len(removed), directory)
    return removed


def weights_sha256(state_dict: dict) -> str:
    """Content hash of a model's weights: names, dtypes, shapes and bytes in name order, wherever they live."""
    h = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name].detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def file_sha256(path: str) -> str:
    """Content hash of a file (identifies the base checkpoint an online run started from)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_checkpoint(path: str, map_location="cpu", mmap: bool = False) -> dict:
    """A checkpoint payload. mmap=True maps the tensors from the file instead of reading them all
    first, so copying a large replay buffer into place does not need twice its memory."""
    # Our checkpoints hold configs, numpy RNG states and counters besides tensors.
    return torch.load(path, map_location=map_location, weights_only=False, mmap=mmap)


class TopKCheckpoints:
    """Keeps the k best checkpoints by a monitored score, named like ``epoch_0012-score_0.840.ckpt``.

    The table (file name -> score) is part of the training checkpoint, so a resumed run keeps
    pruning correctly, also in a moved run directory. ``path_for`` only updates the table; the
    caller writes the new file and the checkpoint that carries the table, then calls ``prune``,
    which deletes the files of this format that the table no longer lists. A kill anywhere in
    between leaves the table of the last complete checkpoint and at most an extra file, which
    the ``prune`` after resume removes.
    """

    def __init__(self, directory: str, k: int = 5, mode: str = "max",
                 format_str: str = "epoch_{epoch:04d}-score_{score:.3f}.ckpt"):
        if mode not in ("max", "min"):
            raise ValueError(f"top-k mode must be 'max' or 'min', got {mode!r}")
        self.directory, self.k, self.mode, self.format_str = directory, k, mode, format_str
        self.table: dict[str, float] = {}  # file name in ``directory`` -> score

    def path_for(self, epoch: int, score: float) -> str | None:
        """Where to save this checkpoint, or None if it does not make the top k."""
        if self.k <= 0:
            return None
        name = self.format_str.format(epoch=epoch, score=score)
        if len(self.table) >= self.k:
            ranked = sorted(self.table.items(), key=lambda kv: kv[1], reverse=(self.mode == "min"))
            worst_name, worst = ranked[0]
            if not (score > worst if self.mode == "max" else score < worst):
                return None
            del self.table[worst_name]
        self.table[name] = score
        return os.path.join(self.directory, name)

    def prune(self) -> list[str]:
        """Delete this format's files in the directory that the table does not list."""
        pattern = re.sub(r"\{[^}]*\}", "*", self.format_str)
        removed = [p for p in sorted(glob.glob(os.path.join(self.directory, pattern)))
                   if os.path.basename(p) not in self.table]
        for path in removed:
            os.remove(path)
        return removed

    def state_dict(self) -> dict:
        return {"table": dict(self.table)}

    def load_state_dict(self, state: dict) -> None:
        # older checkpoints list absolute paths
        self.table = {os.path.basename(name): score for name, score in state["table"].items()}
