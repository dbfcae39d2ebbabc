"""Fixed-length windows over concatenated episodes, and the seeded episode splits."""

from __future__ import annotations

import numpy as np


class SequenceSampler:
    """Windows of ``horizon`` frames inside single episodes, padded by repeating the edge frame.

    A window may start up to ``pad_before`` frames before an episode's first frame and end up to
    ``pad_after`` frames after its last one; those out-of-episode positions read the first/last
    frame. ``episode_ends`` are cumulative frame counts of the stored episodes; ``episode_ids``
    picks which of them this sampler draws from.
    """

    def __init__(self, episode_ends, episode_ids, horizon: int, pad_before: int = 0, pad_after: int = 0):
        if horizon < 1 or pad_before < 0 or pad_after < 0:
            raise ValueError(f"need horizon >= 1 and non-negative padding, got {horizon}, {pad_before}, {pad_after}")
        ends = np.asarray(episode_ends, dtype=np.int64)
        starts = np.concatenate([[0], ends[:-1]])
        self.horizon = int(horizon)
        ep_start, ep_len, first = [], [], []
        for ep in episode_ids:
            length = int(ends[ep] - starts[ep])
            # Window start (episode time) runs from -pad_before to length - horizon + pad_after.
            t0 = np.arange(-pad_before, length - horizon + pad_after + 1, dtype=np.int64)
            ep_start.append(np.full_like(t0, starts[ep]))
            ep_len.append(np.full_like(t0, length))
            first.append(t0)
        cat = (lambda xs: np.concatenate(xs) if xs else np.zeros(0, dtype=np.int64))
        self._start, self._len, self._t0 = cat(ep_start), cat(ep_len), cat(first)

    def __len__(self) -> int:
        return len(self._t0)

    def window(self, i: int) -> np.ndarray:
        """Global frame indices of window ``i``, shape (horizon,)."""
        t = self._t0[i] + np.arange(self.horizon)
        return self._start[i] + np.clip(t, 0, self._len[i] - 1)


def split_validation(n_episodes: int, val_ratio: float, seed: int) -> np.ndarray:
    """Boolean mask of validation episodes: whole episodes, chosen with ``seed``.

    At least one validation episode when ``val_ratio > 0`` and at least one training episode
    remains, so a small ratio on a small dataset still gives a usable split.
    """
    mask = np.zeros(n_episodes, dtype=bool)
    if val_ratio <= 0 or n_episodes < 2:
        return mask
    n_val = min(max(1, int(round(n_episodes * val_ratio))), n_episodes - 1)
    mask[np.random.default_rng(seed).choice(n_episodes, size=n_val, replace=False)] = True
    return mask


def subsample(ids, max_n: int | None, seed: int) -> np.ndarray:
    """At most ``max_n`` of ``ids`` (kept in their order), picked with ``seed``."""
    ids = np.asarray(ids, dtype=np.int64)
    if max_n is None or len(ids) <= max_n:
        return ids
    keep = np.random.default_rng(seed).choice(len(ids), size=int(max_n), replace=False)
    return ids[np.sort(keep)]
