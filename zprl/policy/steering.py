"""Steering interfaces: how an RL action changes what the frozen base policy does.

SAC only sees ``state_dim``, ``action_dim`` and tensors; each interface says
- ``encode(obs, deterministic)``: run the frozen encoder (+ VIB) once per observation and return
  the RL state plus what ``act`` needs later (this is the next-observation pre-encoding: the
  replay buffer stores these states, never images);
- ``act(encoded, rl_action)``: the env action chunk (B, n_action_steps, Da) from the base policy
  steered by ``rl_action`` in [-1, 1]^action_dim;
- ``warmup_action(B)``: the RL action used before learning starts (the unsteered base policy).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class Encoded:
    state: torch.Tensor                        # (B, state_dim): what the actor and critics see
    parts: dict = field(default_factory=dict)  # what act() reuses (embedding, latent, ...)

    def index(self, idx) -> "Encoded":
        return Encoded(self.state[idx], {k: v[idx] for k, v in self.parts.items()})


class Steering:
    """Base class: holds the frozen policy (never trained here)."""

    name = "base"

    def __init__(self, policy):
        self.policy = policy.eval()
        for p in self.policy.parameters():
            p.requires_grad_(False)

    @property
    def device(self) -> torch.device:
        return next(self.policy.parameters()).device

    @property
    def state_dim(self) -> int:
        raise NotImplementedError

    @property
    def action_dim(self) -> int:
        raise NotImplementedError

    def encode(self, obs: dict, deterministic: bool = False) -> Encoded:
        raise NotImplementedError

    def act(self, enc: Encoded, rl_action: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def warmup_action(self, batch_size: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.zeros(batch_size, self.action_dim, device=self.device)

    def diagnostics(self, enc: Encoded, rl_action: torch.Tensor) -> dict:
        return {}

    def extra_state(self) -> dict:
        """Values a checkpoint must keep to rebuild this interface exactly (e.g. a calibrated scale)."""
        return {}


class LatentSteering(Steering):
    """ZPRL: perturb the VIB latent, z' = z + res_scale * dz, and act through the decoder."""

    name = "zprl"

    def __init__(self, policy, res_scale: float = 0.5):
        super().__init__(policy)
        if not getattr(policy, "use_vib", False):
            raise ValueError("latent steering needs a base policy trained with the VIB (policy.use_vib=true)")
        self.res_scale = float(res_scale)
        self._emb_dim = None

    @property
    def latent_dim(self) -> int:
        return self.policy.vib_latent_dim

    @property
    def state_dim(self) -> int:
        if self._emb_dim is None:
            self._emb_dim = self.policy.obs_encoder.output_dim()
        return self._emb_dim + self.latent_dim

    @property
    def action_dim(self) -> int:
        return self.latent_dim

    @torch.no_grad()
    def encode(self, obs: dict, deterministic: bool = False) -> Encoded:
        emb = self.policy.encode_obs(obs)
        mu, logvar = self.policy.vib_posterior(emb)
        z = mu if deterministic else mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return Encoded(torch.cat([emb, z], dim=-1), {"z": z})

    @torch.no_grad()
    def act(self, enc: Encoded, rl_action: torch.Tensor) -> torch.Tensor:
        z = enc.parts["z"] + self.res_scale * rl_action
        return self.policy.sample_action_chunk(self.policy.decode_latent(z))["action"]

    def diagnostics(self, enc: Encoded, rl_action: torch.Tensor) -> dict:
        z = enc.parts["z"]
        rms_z = z.pow(2).mean().sqrt().item()
        rms_dz = (self.res_scale * rl_action).pow(2).mean().sqrt().item()
        return {"rms_z": rms_z, "rms_scaled_dz": rms_dz, "rms_ratio": rms_dz / max(rms_z, 1e-8)}

    def extra_state(self) -> dict:
        return {"res_scale": self.res_scale}
