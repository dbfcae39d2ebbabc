"""Rectified flow: straight paths from Gaussian noise (t=0) to actions (t=1), Euler sampling."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

# velocity_fn(x_t, timestep, cond) -> velocity, all tensors; timestep is (B,) on the train scale.
VelocityFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


class RectifiedFlow:
    """x_t = t * a + (1 - t) * eps; the network predicts the constant velocity a - eps.

    Training draws t ~ U[0, 1): every point of the straight path is equally weighted, and with the
    2-step sampler used in simulation both the noisy start (t=0) and the midpoint (t=0.5) are
    evaluated, so no region of t deserves less weight. The network sees t * num_train_timesteps
    so its sinusoidal step embedding works on the range it was designed for.
    """

    def __init__(self, num_train_timesteps: int = 100, num_inference_steps: int = 2):
        if num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be >= 1, got {num_inference_steps}")
        self.num_train_timesteps = num_train_timesteps
        self.num_inference_steps = num_inference_steps

    def network_time(self, t: torch.Tensor) -> torch.Tensor:
        return t * self.num_train_timesteps

    def loss(
        self,
        velocity_fn: VelocityFn,
        actions: torch.Tensor,
        cond: torch.Tensor,
        noise: torch.Tensor | None = None,
        t: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Mean squared velocity error for a batch of (normalized) action chunks (B, T, Da)."""
        if noise is None:
            noise = torch.randn_like(actions)
        if t is None:
            t = torch.rand(actions.shape[0], device=actions.device, dtype=actions.dtype)
        tb = t.view(-1, *([1] * (actions.dim() - 1)))
        x_t = tb * actions + (1 - tb) * noise
        pred = velocity_fn(x_t, self.network_time(t), cond)
        return F.mse_loss(pred, actions - noise)

    def sample(
        self,
        velocity_fn: VelocityFn,
        noise: torch.Tensor,
        cond: torch.Tensor,
        num_inference_steps: int | None = None,
    ) -> torch.Tensor:
        """Integrate dx/dt = v(x, t) with Euler from the given noise at t=0 to t=1."""
        steps = num_inference_steps or self.num_inference_steps
        x, dt = noise, 1.0 / steps
        for i in range(steps):
            t = torch.full((x.shape[0],), i * dt, device=x.device, dtype=x.dtype)
            x = x + dt * velocity_fn(x, self.network_time(t), cond)
        return x
