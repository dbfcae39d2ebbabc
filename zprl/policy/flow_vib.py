"""Offline ZPRL policy: obs encoder -> VIB (encoder, latent, decoder) -> rectified-flow 1D U-Net."""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from diffusers import FlowMatchEulerDiscreteScheduler
from torch import nn
from torch.func import functional_call

from zprl.common.errors import UserInputError
from zprl.model.flow import FlowMatchSampler
from zprl.model.normalizer import LinearNormalizer
from zprl.model.unet1d import ConditionalUnet1D
from zprl.model.vib import VIBDecoder, VIBEncoder, kl_to_standard_normal, reparameterize


class FlowMatchVIBUnetImagePolicy(nn.Module):
    """Works for image and low-dim tasks alike; the obs encoder passed in decides which.

    All tensors inside are in normalized units: low-dim obs and actions go through the policy's
    normalizer (fitted by the dataset, stored in this module's state_dict); rgb obs are used as
    given ([0, 1] floats).
    """

    def __init__(
        self,
        shape_meta: Mapping,
        obs_encoder: nn.Module,
        noise_scheduler=None,
        horizon: int = 16,
        n_action_steps: int = 4,
        n_obs_steps: int = 1,
        num_inference_steps: int = 2,
        down_dims: Sequence[int] = (128, 256, 512),
        diffusion_step_embed_dim: int = 128,
        kernel_size: int = 5,
        n_groups: int = 8,
        cpu_mish: bool = True,
        vib_latent_dim: int = 16,
        vib_beta: float = 2e-4,
        vib_recon: float = 0.01,
        use_vib: bool = True,
    ):
        super().__init__()
        enc_steps = getattr(obs_encoder, "n_obs_steps", n_obs_steps)
        if enc_steps != n_obs_steps:
            raise UserInputError(
                f"task.obs_encoder.n_obs_steps={enc_steps} but policy n_obs_steps={n_obs_steps}; "
                "set task.obs_encoder.n_obs_steps to ${n_obs_steps}"
            )
        if n_obs_steps - 1 + n_action_steps > horizon:
            raise UserInputError(
                f"n_obs_steps - 1 + n_action_steps = {n_obs_steps - 1 + n_action_steps} exceeds horizon={horizon}; "
                "lower n_action_steps or raise horizon"
            )
        self.shape_meta = shape_meta
        self.low_dim_keys = sorted(k for k, v in shape_meta["obs"].items() if v.get("type", "low_dim") == "low_dim")
        self.action_dim = int(shape_meta["action"]["shape"][0])
        self.horizon = horizon
        self.n_action_steps = n_action_steps
        self.n_obs_steps = n_obs_steps
        self.use_vib = bool(use_vib)
        self.vib_latent_dim = vib_latent_dim
        self.vib_beta = vib_beta
        self.vib_recon = vib_recon

        self.obs_encoder = obs_encoder
        obs_dim = obs_encoder.output_dim()
        self.obs_dim = obs_dim
        if horizon % (2 ** (len(down_dims) - 1)):
            raise UserInputError(
                f"horizon={horizon} must be divisible by {2 ** (len(down_dims) - 1)} for "
                f"policy.down_dims={list(down_dims)}; change horizon or use fewer down_dims"
            )
        self.model = ConditionalUnet1D(
            input_dim=self.action_dim,
            global_cond_dim=obs_dim,
            diffusion_step_embed_dim=diffusion_step_embed_dim,
            down_dims=down_dims,
            kernel_size=kernel_size,
            n_groups=n_groups,
            cpu_mish=cpu_mish,
        )
        if self.use_vib:
            self.vib_encoder = VIBEncoder(obs_dim, vib_latent_dim)
            self.vib_decoder = VIBDecoder(vib_latent_dim, obs_dim)
        # the authors' sampler: diffusers' FlowMatchEulerDiscreteScheduler (see zprl/model/flow.py)
        # (None: its defaults, 100 training timesteps, shift 1)
        if noise_scheduler is None:
            noise_scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=100, shift=1.0)
        self.flow = FlowMatchSampler(noise_scheduler, num_inference_steps)
        self.normalizer = LinearNormalizer()
        # the flow's start is start_noise_scale * N(0, I) where no noise is given: 1 is the policy as
        # trained; other values are a probe (eval_base.py --noise_scale), never stored in checkpoints
        self.start_noise_scale = 1.0

    # ----------------------------------------------------------------- setup
    def set_normalizer(self, normalizer: LinearNormalizer) -> None:
        self.normalizer.load_state_dict(normalizer.state_dict())

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # ----------------------------------------------------------------- pieces (also used by online steering)
    def encode_obs(self, obs_dict: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Raw obs dict (B, >=To, ...) -> obs_emb (B, Do); uses the first n_obs_steps steps."""
        obs = {}
        for k in self.shape_meta["obs"]:
            x = obs_dict[k][:, : self.n_obs_steps]
            obs[k] = self.normalizer[k].normalize(x) if k in self.low_dim_keys else x
        return self.obs_encoder(obs)

    def vib_posterior(self, obs_emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._require_vib()
        return self.vib_encoder(obs_emb)

    def decode_latent(self, z: torch.Tensor) -> torch.Tensor:
        self._require_vib()
        return self.vib_decoder(z)

    def sample_action_chunk(self, cond: torch.Tensor, noise: torch.Tensor | None = None) -> dict:
        """Condition (B, Do) -> {"action": executed steps, "action_pred": whole horizon}, unnormalized."""
        shape = (cond.shape[0], self.horizon, self.action_dim)
        if noise is None:
            # scaling by 1.0 is exact: the policy as trained draws the same bits
            noise = self.start_noise_scale * torch.randn(shape, device=cond.device, dtype=cond.dtype)
        elif tuple(noise.shape) != shape:
            raise ValueError(f"noise must have shape {shape}, got {tuple(noise.shape)}")
        sample = self.flow.sample(self.model, noise, cond)
        action_pred = self.normalizer["action"].unnormalize(sample)
        start = self.n_obs_steps - 1
        return {"action": action_pred[:, start : start + self.n_action_steps], "action_pred": action_pred}

    # ----------------------------------------------------------------- inference
    @torch.no_grad()
    def predict_action(
        self,
        obs_dict: Mapping[str, torch.Tensor],
        z: torch.Tensor | None = None,
        dz: torch.Tensor | None = None,
        cond: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        use_vib: bool | None = None,
        deterministic: bool = True,
    ) -> dict:
        """Act through the VIB decoder (or on obs_emb directly with use_vib=False).

        Latent: ``z`` if given, else the posterior mean (deterministic) or a posterior sample;
        then ``+ dz`` if given. ``cond`` replaces the decoded condition (z is still reported).
        ``noise`` (B, horizon, Da) fixes the flow's start; otherwise it is drawn fresh, so
        deterministic=True alone does not make the output repeatable.
        """
        use_vib = self.use_vib if use_vib is None else use_vib
        if use_vib:
            self._require_vib()
        obs_emb = self.encode_obs(obs_dict)
        out = {"obs_emb": obs_emb, "z_mu": None, "z_logvar": None, "z": None}
        if self.use_vib:
            mu, logvar = self.vib_encoder(obs_emb)
            if z is None:
                z = mu if deterministic else reparameterize(mu, logvar)
            if dz is not None:
                z = z + dz
            out.update(z_mu=mu, z_logvar=logvar, z=z)
        elif z is not None or dz is not None:
            raise ValueError("z / dz given but this policy has no VIB (use_vib=False)")
        if cond is None:
            cond = self.vib_decoder(z) if use_vib else obs_emb
        out["cond"] = cond
        out.update(self.sample_action_chunk(cond, noise))
        return out

    # ----------------------------------------------------------------- training
    def compute_loss(self, batch: Mapping) -> tuple[torch.Tensor, dict]:
        """Total = il_loss + vib_loss (see il_path_loss / vib_path_loss for the gradient routing)."""
        obs_emb = self.encode_obs(batch["obs"])
        actions = self.normalizer["action"].normalize(batch["action"])
        loss = self.il_path_loss(obs_emb, actions)
        metrics = {"il_loss": loss.item()}
        if self.use_vib:
            vib_loss, vib_metrics = self.vib_path_loss(obs_emb, actions)
            loss = loss + vib_loss
            metrics.update(vib_metrics)
        metrics["loss"] = loss.item()
        return loss, metrics

    def il_path_loss(self, obs_emb: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Flow loss conditioned on the original obs_emb: trains the obs encoder and the U-Net."""
        return self.flow.loss(self.model, actions, obs_emb)

    def vib_path_loss(self, obs_emb: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Flow loss through the bottleneck + beta * KL + recon * MSE; trains only the VIB."""
        self._require_vib()
        target = obs_emb.detach()
        mu, logvar = self.vib_encoder(target)
        cond = self.vib_decoder(reparameterize(mu, logvar))
        # The VIB learns to produce conditions the U-Net already understands; the U-Net must not
        # bend towards the bottleneck. Running the same U-Net with detached copies of its weights
        # keeps the graph through its inputs (gradients reach cond and the VIB) while its own
        # parameters get nothing from this path, even when both paths share one backward().
        frozen = {n: p.detach() for n, p in self.model.named_parameters()}
        frozen.update(dict(self.model.named_buffers()))

        def frozen_unet(x, t, c):
            return functional_call(self.model, frozen, (x, t, c))

        flow_loss = self.flow.loss(frozen_unet, actions, cond)
        kl = kl_to_standard_normal(mu, logvar)
        recon = F.mse_loss(cond, target)
        vib_loss = flow_loss + self.vib_beta * kl + self.vib_recon * recon
        metrics = {"vib_flow_loss": flow_loss.item(), "kl": kl.item(), "recon": recon.item(), "vib_loss": vib_loss.item()}
        return vib_loss, metrics

    def _require_vib(self):
        if not self.use_vib:
            raise ValueError("this policy was built with use_vib=False and has no VIB encoder/decoder")
