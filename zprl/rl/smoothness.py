"""Smoothness of executed actions, per env and across chunk boundaries.

Defined on the commanded end-effector position of each arm (the first 3 dims of every 10-D arm
block of the policy's absolute action), in metres per control step (20 Hz):
- ``action_delta``: mean over steps of ||p_t - p_{t-1}||  (how far the command jumps per step);
- ``action_jerk``:  mean over steps of ||p_t - 3 p_{t-1} + 3 p_{t-2} - p_{t-3}||^2  (squared third
  difference, i.e. squared jerk up to the constant 1/dt^6).
Differences never span an episode boundary. The means pool every difference measured (over envs
and episodes), so long episodes weigh more than short ones.

Used on training rollouts (the online loop's ``train/action_delta``/``train/action_jerk``) and on
evaluation rollouts (the runner's per-episode values and ``test/action_delta``/``test/action_jerk``,
logged online as ``eval/action_delta``/``eval/action_jerk``).
"""

from __future__ import annotations

import numpy as np


def position_dims(action_dim: int, arm_dim: int = 10) -> np.ndarray:
    return np.concatenate([np.arange(a, a + 3) for a in range(0, action_dim, arm_dim)])


class SmoothnessTracker:
    def __init__(self, n_envs: int, action_dim: int):
        self.dims = position_dims(action_dim)
        self.history = [[] for _ in range(n_envs)]  # last up to 3 positions per env
        self.delta_sum = self.delta_n = 0.0
        self.jerk_sum = self.jerk_n = 0.0

    def add(self, executed: np.ndarray, n_executed, ended) -> None:
        """executed: (n_envs, k, Da) as returned in info['executed_actions']; n_executed: valid rows."""
        for i, hist in enumerate(self.history):
            for a in executed[i, : int(n_executed[i])]:
                p = np.asarray(a)[self.dims]
                if hist:
                    self.delta_sum += float(np.linalg.norm(p - hist[-1]))
                    self.delta_n += 1
                if len(hist) == 3:
                    jerk = p - 3 * hist[-1] + 3 * hist[-2] - hist[-3]
                    self.jerk_sum += float(jerk @ jerk)
                    self.jerk_n += 1
                hist.append(p)
                del hist[:-3]
            if ended[i]:
                hist.clear()

    def totals(self) -> tuple[float, float, float, float]:
        """(delta_sum, delta_n, jerk_sum, jerk_n) since the last pop: what pooling needs."""
        return (self.delta_sum, self.delta_n, self.jerk_sum, self.jerk_n)

    def pop(self) -> dict:
        """Means since the last pop (NaN-free: keys are left out when nothing was measured)."""
        out = smoothness_means([self.totals()])
        self.delta_sum = self.delta_n = self.jerk_sum = self.jerk_n = 0.0
        return out


def smoothness_means(totals) -> dict:
    """Pooled ``action_delta``/``action_jerk`` from (delta_sum, delta_n, jerk_sum, jerk_n) tuples;
    a key is left out when nothing was measured."""
    d_sum = d_n = j_sum = j_n = 0.0
    for ds, dn, js, jn in totals:
        d_sum, d_n, j_sum, j_n = d_sum + ds, d_n + dn, j_sum + js, j_n + jn
    out = {}
    if d_n:
        out["action_delta"] = d_sum / d_n
    if j_n:
        out["action_jerk"] = j_sum / j_n
    return out
