"""Variational information bottleneck between the observation embedding and the policy condition."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from zprl.model.batch_shard import randn_rows


def mlp(in_dim: int, hidden_dims: Sequence[int], out_dim: int | None = None) -> nn.Sequential:
    """Linear+GELU per hidden width; a final plain Linear to out_dim when given."""
    layers, width = [], in_dim
    for h in hidden_dims:
        layers += [nn.Linear(width, h), nn.GELU()]
        width = h
    if out_dim is not None:
        layers.append(nn.Linear(width, out_dim))
    return nn.Sequential(*layers)


class VIBEncoder(nn.Module):
    """obs_emb (B, Do) -> posterior (mu, logvar), each (B, latent_dim)."""

    def __init__(self, input_dim: int, latent_dim: int = 16, hidden_dims: Sequence[int] = (256, 256, 256)):
        super().__init__()
        self.trunk = mlp(input_dim, hidden_dims)
        self.mu = nn.Linear(hidden_dims[-1], latent_dim)
        self.logvar = nn.Linear(hidden_dims[-1], latent_dim)
        self.latent_dim = latent_dim

    def forward(self, obs_emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.trunk(obs_emb)
        return self.mu(h), self.logvar(h)


class VIBDecoder(nn.Module):
    """latent z (B, latent_dim) -> condition (B, Do) that stands in for obs_emb."""

    def __init__(self, latent_dim: int, output_dim: int, hidden_dims: Sequence[int] = (256, 256, 256)):
        super().__init__()
        self.net = mlp(latent_dim, hidden_dims, output_dim)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    if generator is None:  # one draw per sample, the same whatever the data-parallel split (batch_shard)
        eps = randn_rows(mu.shape, device=mu.device, dtype=mu.dtype)
    else:
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
    return mu + torch.exp(0.5 * logvar) * eps


def kl_to_standard_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) averaged over latent dims and batch (not summed over dims)."""
    return -0.5 * torch.mean(1 + logvar - mu.pow(2) - logvar.exp())
