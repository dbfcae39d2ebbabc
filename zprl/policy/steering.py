"""Steering interfaces: how an RL action changes what the frozen base policy does.

SAC only sees ``state_dim``, ``action_dim``, tensors and two hooks; each interface says
- ``encode(obs, deterministic)``: run the frozen encoder (+ VIB) once per observation and return
  the RL state plus what ``act`` needs later (this is the next-observation pre-encoding: the
  replay buffer stores these states, never images). ``deterministic=False`` while collecting
  (image crop random, posterior sample where the interface uses one), True at evaluation;
- ``act(encoded, rl_action)``: the env action chunk (B, n_action_steps, Da) from the base policy
  steered by ``rl_action`` in [-1, 1]^action_dim;
- ``base_action(B)``: the RL action that runs the unsteered base policy (base-only evaluation);
- ``warmup_action(B)``: the RL action executed and stored before learning starts (the base, or
  random residuals / noise where the original baseline explores during warm-up);
- ``explore(rl_action, steps_since_warmup)``: what becomes of SAC's sampled action while collecting
  (identity except for progressive exploration); the returned action is executed AND stored;
- ``critic_input(state, rl_action)``: what the critics score (SAC's ``critic_view``; identity
  except for the action residual, whose critic scores the executed chunk);
- ``actor_log_std_range``: the SAC actor's log-std range (its middle is the initial log-std);
- ``prepare(base_cfg)``: one-time setup before training (e.g. ``res_scale=auto``).

The interfaces (config group ``steering``; see docs/steering.md):
``zprl`` LatentSteering, ``action_residual`` ActionResidualSteering, ``noise`` NoiseSteering,
``embedding_residual`` EmbeddingResidualSteering.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import torch

from zprl.policy.calibration import (  # noqa: F401  (re-exported: scripts and tests use them from here)
    UNIT_UNIFORM_RMS,
    dataset_latent_rms,
    dataset_observations,
    dataset_reach,
    latent_rms,
    res_scale_for_ratio,
    res_scale_matching_reach,
)

log = logging.getLogger("zprl")


@dataclass
class Encoded:
    state: torch.Tensor                        # (B, state_dim): what the actor and critics see
    parts: dict = field(default_factory=dict)  # what act() reuses (embedding, latent, ...)

    def index(self, idx) -> "Encoded":
        return Encoded(self.state[idx], {k: v[idx] for k, v in self.parts.items()})


class Steering:
    """Base class: holds the frozen policy (never trained here)."""

    name = "base"
    # The authors' actor: log-std in [-10, 2]; its zero output, the middle, is log-std -4 (std ~0.02),
    # so the first learned actions stay near action 0, which is the base policy.
    actor_log_std_range: tuple[float, float] = (-10.0, 2.0)

    def log_std_bounds(self, sac_cfg) -> tuple[float, float]:
        """The actor's log-std range: ``sac.log_std_min/max`` where set, else this interface's."""
        lo, hi = self.actor_log_std_range
        return (lo if sac_cfg.get("log_std_min") is None else sac_cfg.log_std_min,
                hi if sac_cfg.get("log_std_max") is None else sac_cfg.log_std_max)

    def __init__(self, policy):
        self.policy = policy.eval()
        for p in self.policy.parameters():
            p.requires_grad_(False)

    @property
    def device(self) -> torch.device:
        return next(self.policy.parameters()).device

    @property
    def emb_dim(self) -> int:
        return self.policy.obs_dim

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

    def base_action(self, batch_size: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """The RL action that runs the unsteered base policy (action 0 for the residual interfaces)."""
        return torch.zeros(batch_size, self.action_dim, device=self.device)

    def warmup_action(self, batch_size: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """The RL action executed and stored during warm-up: the base policy unless overridden."""
        return self.base_action(batch_size, generator)

    def explore(self, rl_action: torch.Tensor, steps_since_warmup: int,
                generator: torch.Generator | None = None) -> torch.Tensor:
        return rl_action

    def critic_input(self, state: torch.Tensor, rl_action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """What SAC's critics score for (state, rl_action); differentiable in rl_action."""
        return state, rl_action

    def encode_obs(self, obs: dict, deterministic: bool) -> torch.Tensor:
        """obs_emb from the frozen encoder, its image crop random (train mode) while collecting
        and centered (eval mode) at evaluation, as the authors run it.

        Only the obs encoder's mode changes, and only for this call: the rest of the frozen policy
        stays in eval mode. The image encoders use GroupNorm (no running statistics), so the
        mode switches nothing but the crop; the low-dim encoder has no mode-dependent layer.
        """
        encoder = self.policy.obs_encoder
        was_training = encoder.training
        encoder.train(not deterministic)
        try:
            return self.policy.encode_obs(obs)
        finally:
            encoder.train(was_training)

    def prepare(self, base_cfg) -> dict:
        """One-time setup before training; returns values worth logging."""
        return {}

    def diagnostics(self, enc: Encoded, rl_action: torch.Tensor) -> dict:
        return {}

    def extra_state(self) -> dict:
        """Values a checkpoint must keep to rebuild this interface exactly (constructor kwargs)."""
        return {}

    def load_extra_state(self, state: dict) -> None:
        from zprl.common.errors import UserInputError

        if state.get("name", self.name) != self.name:
            raise UserInputError(f"cannot resume: the checkpoint was trained with steering={state['name']}, "
                                 f"this run uses steering={self.name}; pass steering={state['name']}")
        for key, value in state.items():
            if key != "name":
                setattr(self, key, value)

    # -- the unsteered base, shared by every interface that does not steer the latent ----------
    def base_condition(self, emb: torch.Tensor, posterior_sample: bool = False) -> torch.Tensor:
        """The U-Net condition of the base policy: with a VIB the policy acts through the decoder,
        VIBDecoder(mu) as deployed (or VIBDecoder(mu + sigma * eps) with ``posterior_sample``);
        without one, the embedding itself."""
        if getattr(self.policy, "use_vib", False):
            mu, logvar = self.policy.vib_posterior(emb)
            z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if posterior_sample else mu
            return self.policy.decode_latent(z)
        return emb


def rms(x: torch.Tensor) -> float:
    return x.float().pow(2).mean().sqrt().item()


class LatentSteering(Steering):
    """ZPRL: perturb the VIB latent, z' = z + res_scale * dz, and act through the decoder.

    ``res_scale`` is lambda, or a rule that ``prepare`` turns into one on the base policy's dataset
    (``zprl/policy/calibration.py``), over up to ``calibration_samples`` observations drawn with
    ``calibration_seed``:
    - ``"auto"`` (the authors' README advice): lambda = calibration_target * RMS(z) / RMS(U(-1,1)), i.e.
      an actor spreading dz evenly over [-1, 1] moves z by ``calibration_target`` of its RMS;
    - ``"match_action_residual"``: lambda such that a random dz moves the executed chunk's end-effector
      targets as far as a random action residual at ``calibration_alpha_res`` does (same reach in
      action units as the baseline it is compared with).
    """

    name = "zprl"
    RULES = ("auto", "match_action_residual")

    def __init__(self, policy, res_scale: float | str = 0.5, calibration_target: float = 0.1,
                 calibration_samples: int = 4096, calibration_seed: int = 0, calibration_alpha_res: float = 0.1):
        super().__init__(policy)
        if not getattr(policy, "use_vib", False):
            raise ValueError("latent steering needs a base policy trained with the VIB (policy.use_vib=true)")
        if res_scale not in self.RULES:
            try:
                res_scale = float(res_scale)
            except (TypeError, ValueError):
                from zprl.common.errors import UserInputError

                raise UserInputError(f"steering.res_scale={res_scale!r}: give a number (lambda) or one of "
                                     f"{', '.join(self.RULES)}") from None
        self.res_scale = res_scale
        self.calibration_target = float(calibration_target)
        self.calibration_samples = int(calibration_samples)
        self.calibration_seed = int(calibration_seed)
        self.calibration_alpha_res = float(calibration_alpha_res)

    @property
    def latent_dim(self) -> int:
        return self.policy.vib_latent_dim

    @property
    def state_dim(self) -> int:
        return self.emb_dim + self.latent_dim

    @property
    def action_dim(self) -> int:
        return self.latent_dim

    @torch.no_grad()
    def encode(self, obs: dict, deterministic: bool = False) -> Encoded:
        emb = self.encode_obs(obs, deterministic)
        mu, logvar = self.policy.vib_posterior(emb)
        z = mu if deterministic else mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return Encoded(torch.cat([emb, z], dim=-1), {"z": z, "emb": emb})

    def _scale(self) -> float:
        if self.res_scale in self.RULES:
            raise RuntimeError(f"res_scale={self.res_scale} is calibrated by prepare(base_cfg) before acting")
        return self.res_scale

    @torch.no_grad()
    def act(self, enc: Encoded, rl_action: torch.Tensor) -> torch.Tensor:
        z = enc.parts["z"] + self._scale() * rl_action
        return self.policy.sample_action_chunk(self.policy.decode_latent(z))["action"]

    def prepare(self, base_cfg) -> dict:
        if self.res_scale == "auto":
            rms_z = dataset_latent_rms(self.policy, base_cfg, self.calibration_samples, self.calibration_seed)
            self.res_scale = res_scale_for_ratio(rms_z, self.calibration_target)
            log.info("res_scale=auto: RMS(z) %.4f over the dataset -> lambda %.4f (RMS(lambda*dz) = %.3g x RMS(z) "
                     "for dz ~ U(-1, 1))", rms_z, self.res_scale, self.calibration_target)
            return {"steering/res_scale": self.res_scale, "steering/calibration_rms_z": rms_z}
        if self.res_scale == "match_action_residual":
            # one batch through the U-Net per bisection step: 1024 observations give the mean to ~1%
            reach = dataset_reach(self.policy, base_cfg, min(self.calibration_samples, 1024), self.calibration_seed)
            target = reach.action_residual(self.calibration_alpha_res)
            self.res_scale = res_scale_matching_reach(reach, target)
            log.info("res_scale=match_action_residual: a random action residual (alpha %.3g) moves the executed "
                     "chunk %.2f mm on %d dataset observations -> lambda %.4f moves it as far (flow noise alone: "
                     "%.2f mm)", self.calibration_alpha_res, 1000 * target, reach.mu.shape[0], self.res_scale,
                     1000 * reach.flow_noise_m)
            return {"steering/res_scale": self.res_scale, "steering/calibration_reach_m": target,
                    "steering/calibration_flow_noise_m": reach.flow_noise_m}
        return {}

    @torch.no_grad()
    def diagnostics(self, enc: Encoded, rl_action: torch.Tensor) -> dict:
        """RMS(z), RMS(lambda*dz) and their ratio, and how far the decoded condition moves from the
        observation's embedding, cond_delta_rms = RMS(VIBDecoder(z') - obs_emb) (the authors'
        measure of how far out of distribution a larger lambda pushes the U-Net's condition)."""
        scaled_dz = self._scale() * rl_action
        rms_z = rms(enc.parts["z"])
        rms_dz = rms(scaled_dz)
        cond = self.policy.decode_latent(enc.parts["z"] + scaled_dz)
        return {"rms_z": rms_z, "rms_scaled_dz": rms_dz, "rms_ratio": rms_dz / max(rms_z, 1e-8),
                "cond_delta_rms": rms(cond - enc.parts["emb"])}

    def extra_state(self) -> dict:
        return {"res_scale": self.res_scale}


class ActionResidualSteering(Steering):
    """Policy Decorator: a = a_base + alpha_res * da on the normalized executed chunk.

    da covers the executed steps only (n_action_steps x Da): the rest of the horizon never
    reaches the env. ``encode`` samples the base chunk once (conditioned on the decoded posterior
    MEAN, see docs/steering.md); it is part of the RL state [obs_emb, base chunk (normalized,
    flattened)] and so is stored in the buffer with it.

    As the original: warm-up executes and stores random residuals da ~ U(-1, 1), so the critic sees
    residual directions from the start; afterwards progressive exploration makes each env use its
    residual with probability min(steps_since_warmup / progressive_steps, 1) (counted from the END
    of warm-up) and otherwise execute (and store) da = 0. The critics score the EXECUTED chunk,
    Q(obs_emb, a_base + alpha_res * da) (``critic_input``), while the actor sees [obs_emb, a_base].
    """

    name = "action_residual"

    def __init__(self, policy, alpha_res: float = 0.1, progressive_steps: int = 50000):
        super().__init__(policy)
        self.alpha_res = float(alpha_res)
        self.progressive_steps = int(progressive_steps)

    @property
    def chunk_shape(self) -> tuple[int, int]:
        return self.policy.n_action_steps, self.policy.action_dim

    @property
    def action_dim(self) -> int:
        return math.prod(self.chunk_shape)

    @property
    def state_dim(self) -> int:
        return self.emb_dim + self.action_dim

    @torch.no_grad()
    def encode(self, obs: dict, deterministic: bool = False) -> Encoded:
        emb = self.encode_obs(obs, deterministic)
        chunk = self.policy.sample_action_chunk(self.base_condition(emb))["action"]
        base = self.policy.normalizer["action"].normalize(chunk)
        return Encoded(torch.cat([emb, base.flatten(1)], dim=-1), {"base": base, "chunk": chunk})

    @torch.no_grad()
    def act(self, enc: Encoded, rl_action: torch.Tensor) -> torch.Tensor:
        base = enc.parts["base"]
        steered = base + self.alpha_res * rl_action.view(base.shape)
        unnormalize = self.policy.normalizer["action"].unnormalize
        # the residual's effect added to the sampled chunk itself: da = 0 executes exactly the base chunk
        # (unnormalize(normalize(chunk)) differs from it by rounding, and contact-rich episodes are
        # chaotic enough that rounding alone changed 4 of 50 held-out outcomes of the base)
        return enc.parts["chunk"] + (unnormalize(steered) - unnormalize(base))

    def critic_input(self, state: torch.Tensor, rl_action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(obs_emb, a_base + alpha_res * da): the critic scores the chunk the env executed
        (normalized, flattened), so (base, da) pairs that execute the same chunk share one value."""
        emb, base = state[:, :self.emb_dim], state[:, self.emb_dim:]
        return emb, base + self.alpha_res * rl_action

    def warmup_action(self, batch_size: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Random residuals da ~ U(-1, 1), executed and stored (the original's warm-up)."""
        return (torch.rand(batch_size, self.action_dim, generator=generator) * 2.0 - 1.0).to(self.device)

    def residual_probability(self, steps_since_warmup: int) -> float:
        if self.progressive_steps <= 0:
            return 1.0
        return min(max(steps_since_warmup, 0) / self.progressive_steps, 1.0)

    def explore(self, rl_action: torch.Tensor, steps_since_warmup: int,
                generator: torch.Generator | None = None) -> torch.Tensor:
        p = self.residual_probability(steps_since_warmup)
        if p >= 1.0:
            return rl_action
        use = torch.rand(rl_action.shape[0], generator=generator) < p
        return rl_action * use.to(rl_action)[:, None]

    def diagnostics(self, enc: Encoded, rl_action: torch.Tensor) -> dict:
        used = (rl_action.abs().amax(dim=-1) > 0).float().mean().item()
        return {"rms_base_action": rms(enc.parts["base"]), "rms_scaled_residual": rms(self.alpha_res * rl_action),
                "residual_used": used}

    def extra_state(self) -> dict:
        return {"alpha_res": self.alpha_res, "progressive_steps": self.progressive_steps}


class NoiseSteering(Steering):
    """DSRL: the actor picks the flow's initial noise, noise = noise_bound * rl_action.

    The whole horizon's noise (horizon x Da) is the action, as the sampler needs it all. Before
    learning, noise ~ N(0, I) clipped to +-noise_bound (returned as rl_action = noise / bound so
    that one act() path serves both). As the original: the actor's log-std range is [-2, 2], so it
    starts at std ~1, spread like the warm-up's noise; the U-Net's condition is decoded from the
    posterior SAMPLE z while collecting (as ZPRL collects) and from mu at evaluation.
    """

    name = "noise"
    actor_log_std_range = (-2.0, 2.0)

    def __init__(self, policy, noise_bound: float = 1.5):
        super().__init__(policy)
        self.noise_bound = float(noise_bound)

    @property
    def noise_shape(self) -> tuple[int, int]:
        return self.policy.horizon, self.policy.action_dim

    @property
    def action_dim(self) -> int:
        return math.prod(self.noise_shape)

    @property
    def state_dim(self) -> int:
        return self.emb_dim

    @torch.no_grad()
    def encode(self, obs: dict, deterministic: bool = False) -> Encoded:
        emb = self.encode_obs(obs, deterministic)
        return Encoded(emb, {"cond": self.base_condition(emb, posterior_sample=not deterministic)})

    @torch.no_grad()
    def act(self, enc: Encoded, rl_action: torch.Tensor) -> torch.Tensor:
        noise = self.noise_bound * rl_action.view(-1, *self.noise_shape)
        return self.policy.sample_action_chunk(enc.parts["cond"], noise=noise.to(enc.parts["cond"]))["action"]

    def base_action(self, batch_size: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """noise ~ N(0, I), unclipped: exactly the base sampler's own start (act() does not clip)."""
        return (torch.randn(batch_size, self.action_dim, generator=generator) / self.noise_bound).to(self.device)

    def warmup_action(self, batch_size: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """noise ~ N(0, I) clipped to +-noise_bound: inside the actor's range, so it can be stored."""
        noise = torch.randn(batch_size, self.action_dim, generator=generator)
        return (noise.clamp(-self.noise_bound, self.noise_bound) / self.noise_bound).to(self.device)

    def diagnostics(self, enc: Encoded, rl_action: torch.Tensor) -> dict:
        return {"rms_noise": rms(self.noise_bound * rl_action)}

    def extra_state(self) -> dict:
        return {"noise_bound": self.noise_bound}


class EmbeddingResidualSteering(Steering):
    """No-bottleneck ablation: cond = obs_emb + res_scale * d, fed straight to the U-Net.

    This bypasses the VIB even when the base has one: the U-Net was trained on the raw obs_emb
    (the imitation path), so d = 0 is that policy, not the decoder path ZPRL steers.
    """

    name = "embedding_residual"

    def __init__(self, policy, res_scale: float = 0.025):
        super().__init__(policy)
        self.res_scale = float(res_scale)

    @property
    def action_dim(self) -> int:
        return self.emb_dim

    @property
    def state_dim(self) -> int:
        return self.emb_dim

    @torch.no_grad()
    def encode(self, obs: dict, deterministic: bool = False) -> Encoded:
        emb = self.encode_obs(obs, deterministic)
        return Encoded(emb, {"emb": emb})

    @torch.no_grad()
    def act(self, enc: Encoded, rl_action: torch.Tensor) -> torch.Tensor:
        return self.policy.sample_action_chunk(enc.parts["emb"] + self.res_scale * rl_action)["action"]

    def diagnostics(self, enc: Encoded, rl_action: torch.Tensor) -> dict:
        rms_emb = rms(enc.parts["emb"])
        rms_d = rms(self.res_scale * rl_action)
        return {"rms_emb": rms_emb, "rms_scaled_d": rms_d, "rms_ratio": rms_d / max(rms_emb, 1e-8)}

    def extra_state(self) -> dict:
        return {"res_scale": self.res_scale}
