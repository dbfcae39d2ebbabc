"""Action-chunk bookkeeping: one agent step executes ``n_action_steps`` env steps.

The RL agent acts once per chunk, so the per-env-step rewards of a chunk are folded into one
reward and the bootstrap discount covers the whole chunk. Curves report env steps, never agent
steps, so runs with different chunk lengths stay comparable.
"""

from __future__ import annotations

import numpy as np
import torch


def discounted_chunk_reward(rewards, gamma_step: float = 0.99):
    """sum_i gamma_step**i * r_i over the chunk axis: (n_envs, k) -> (n_envs,).

    Keeps the input's kind (torch tensor or numpy array) so it fits either side of the env boundary.
    """
    if isinstance(rewards, torch.Tensor):
        weights = gamma_step ** torch.arange(rewards.shape[-1], dtype=torch.float64, device=rewards.device)
        return (rewards.to(torch.float64) * weights).sum(-1).to(
            rewards.dtype if rewards.is_floating_point() else torch.float32)
    rewards = np.asarray(rewards)
    weights = gamma_step ** np.arange(rewards.shape[-1], dtype=np.float64)
    out = (rewards.astype(np.float64) * weights).sum(-1)
    return out.astype(rewards.dtype if np.issubdtype(rewards.dtype, np.floating) else np.float32)


def chunk_gamma(gamma_step: float, n_action_steps: int) -> float:
    """The RL discount between consecutive agent steps: a chunk spans n_action_steps env steps."""
    return float(gamma_step) ** int(n_action_steps)


def env_steps(agent_steps: int, n_action_steps: int) -> int:
    """Env steps taken by ``agent_steps`` agent steps (the x-axis of every curve)."""
    return int(agent_steps) * int(n_action_steps)
