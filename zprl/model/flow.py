"""Rectified flow as the authors run it: diffusers' ``FlowMatchEulerDiscreteScheduler``.

Conventions (the scheduler's): sigma = 1 is pure noise, sigma = 0 the action chunk;
x_sigma = sigma * noise + (1 - sigma) * action; the network predicts the velocity
``noise - action`` and sees the timestep sigma * num_train_timesteps.

- Training draws one of the scheduler's ``num_train_timesteps`` discrete training timesteps per
  sample (sigma in {1.00, 0.99, ..., 0.01} for 100; never 0).
- Sampling calls ``set_timesteps(num_inference_steps)`` and ``step()``. With 2 steps the
  timesteps are [100, 1] and the sigmas [1.0, 0.01, 0.0]: one jump of 0.99 from pure noise, then
  a 0.01 correction, so the first step already returns (almost exactly) the network's estimate of
  the conditional-mean chunk E[a | cond] and the policy hardly depends on its noise.

The scheduler is stateful (``set_timesteps`` replaces its grid), so training and sampling each
keep their own copy: sampling can never change the grid training draws from.
"""

from __future__ import annotations

import copy
from typing import Callable

import torch
import torch.nn.functional as F
from diffusers import FlowMatchEulerDiscreteScheduler

from zprl.model.batch_shard import randint_rows, randn_rows

# velocity_fn(x, timestep, cond) -> velocity; timestep is (B,) on the scheduler's scale (100 ... 1).
VelocityFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


class FlowMatchSampler:
    """Flow-matching loss and Euler sampling driven by a ``FlowMatchEulerDiscreteScheduler``."""

    def __init__(self, scheduler: FlowMatchEulerDiscreteScheduler, num_inference_steps: int = 2):
        if not isinstance(scheduler, FlowMatchEulerDiscreteScheduler):
            raise TypeError(f"policy.noise_scheduler must build a diffusers FlowMatchEulerDiscreteScheduler, "
                            f"got {type(scheduler).__name__}")
        if num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be >= 1, got {num_inference_steps}")
        self.train_scheduler = scheduler
        self.sample_scheduler = copy.deepcopy(scheduler)
        self.num_inference_steps = int(num_inference_steps)
        # the training grid as built by the scheduler (before any set_timesteps): timesteps 100 ... 1
        self.train_timesteps = scheduler.timesteps.clone().float()
        self.train_sigmas = scheduler.sigmas[: len(self.train_timesteps)].clone().float()

    @property
    def num_train_timesteps(self) -> int:
        return int(self.train_scheduler.config.num_train_timesteps)

    def noisy_sample(self, actions: torch.Tensor, noise: torch.Tensor, index: torch.Tensor) -> tuple:
        """(x, timesteps) at the training grid's ``index`` (B,): what ``scale_noise`` computes, without its
        per-sample Python lookup (one host sync per sample on a GPU); a test pins the equality."""
        sigma = self.train_sigmas.to(actions.device, actions.dtype)[index]
        timesteps = self.train_timesteps.to(actions.device)[index]
        s = sigma.view(-1, *([1] * (actions.dim() - 1)))
        return s * noise + (1.0 - s) * actions, timesteps

    def loss(
        self,
        velocity_fn: VelocityFn,
        actions: torch.Tensor,
        cond: torch.Tensor,
        noise: torch.Tensor | None = None,
        index: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Mean squared error to the target ``noise - action`` for (normalized) chunks (B, T, Da)."""
        if noise is None:
            noise = randn_rows(actions.shape, device=actions.device, dtype=actions.dtype)
        if index is None:
            index = randint_rows(len(self.train_timesteps), actions.shape[0], device=actions.device)
        x, timesteps = self.noisy_sample(actions, noise, index)
        pred = velocity_fn(x, timesteps, cond)
        return F.mse_loss(pred, noise - actions)

    def sample(
        self,
        velocity_fn: VelocityFn,
        noise: torch.Tensor,
        cond: torch.Tensor,
        num_inference_steps: int | None = None,
    ) -> torch.Tensor:
        """From the given noise (sigma = 1) to an action chunk (sigma = 0) with the scheduler's Euler steps."""
        scheduler = self.sample_scheduler
        scheduler.set_timesteps(num_inference_steps or self.num_inference_steps, device=noise.device)
        x = noise
        for t in scheduler.timesteps:
            v = velocity_fn(x, t.expand(x.shape[0]), cond)
            x = scheduler.step(v, t, x).prev_sample
        return x
