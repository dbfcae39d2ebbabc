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

The interfaces (config group ``steering``; see docs/steering.md): ``zprl`` LatentSteering here;
the baselines ``action_residual`` ActionResidualSteering, ``noise`` NoiseSteering and
``embedding_residual`` EmbeddingResidualSteering in zprl/policy/baselines.py.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch

from zprl.policy.calibration import (  # noqa: F401  (dataset_observations: scripts and tests use it from here)
    dataset_latent_rms,
    dataset_observations,
    match_action_residual,
    res_scale_for_ratio,
)

log = logging.getLogger("zprl")


@dataclass
class Encoded:
    state: torch.Tensor                        # (B, state_dim): what the actor and critics see
    parts: dict = field(default_factory=dict)  # what act() reuses (embedding, latent, ...)

    def index(self, idx) -> "Encoded":
        return Encoded(self.state[idx], {k: v[idx] for k, v in self.parts.items()})

    @staticmethod
    def cat(parts: list["Encoded"]) -> "Encoded":
        """Consecutive batches as one (the inverse of index() over slices)."""
        return Encoded(torch.cat([e.state for e in parts]), {k: torch.cat([e.parts[k] for e in parts])
                                                              for k in parts[0].parts})


class Steering:
    """Base class: holds the frozen policy (never trained here)."""

    name = "base"
    # The authors' actor: log-std in [-10, 2]; its zero output, the middle, is log-std -4 (std ~0.02),
    # so the first learned actions stay near action 0, which is the base policy.
    actor_log_std_range: tuple[float, float] = (-10.0, 2.0)
    # Cap on the posterior's log-variance where an interface samples z while collecting (None: the
    # authors' uncapped posterior). Set by the interfaces that sample it (zprl, noise).
    posterior_logvar_max: float | None = None

    def log_std_bounds(self, sac_cfg) -> tuple[float, float]:
        """The actor's log-std range: ``sac.log_std_min/max`` where set, else this interface's."""
        lo, hi = self.actor_log_std_range
        return (lo if sac_cfg.get("log_std_min") is None else sac_cfg.log_std_min,
                hi if sac_cfg.get("log_std_max") is None else sac_cfg.log_std_max)

    def __init__(self, policy):
        self.policy = policy.eval()
        for p in self.policy.parameters():
            p.requires_grad_(False)

    def _set_posterior_logvar_max(self, value) -> None:
        if value is not None:
            try:
                value = float(value)
            except (TypeError, ValueError):
                from zprl.common.errors import UserInputError

                raise UserInputError(f"steering.posterior_logvar_max={value!r}: give a number (0: never wider "
                                     "than the prior) or null (the authors' uncapped posterior)") from None
        self.posterior_logvar_max = value

    def posterior_sample(self, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """z ~ N(mu, exp(logvar)), the log-variance capped at ``posterior_logvar_max`` where set.

        Why a cap exists: the VIB's log-variance head is trained only on the dataset's observations;
        on unfamiliar ones (a steered arm far off the demonstrations) it extrapolates, and in can runs
        it reached 88 (sigma ~1e19), so the collected z, its decoded condition and the executed chunk
        became garbage for tens of steps (docs/steering.md, "The posterior on unfamiliar observations")."""
        if self.posterior_logvar_max is not None:
            logvar = logvar.clamp(max=self.posterior_logvar_max)
        return mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)

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
            z = self.posterior_sample(mu, logvar) if posterior_sample else mu
            return self.policy.decode_latent(z)
        return emb


def rms(x: torch.Tensor) -> float:
    return x.float().pow(2).mean().sqrt().item()


def parse_res_scale(value, rules: tuple[str, ...]) -> float | str:
    """A scale as a number, or one of the rules ``prepare`` turns into one; anything else is refused."""
    if value in rules:
        return value
    try:
        return float(value)
    except (TypeError, ValueError):
        from zprl.common.errors import UserInputError

        raise UserInputError(f"steering.res_scale={value!r}: give a number or one of {', '.join(rules)}") from None


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
                 calibration_samples: int = 4096, calibration_seed: int = 0, calibration_alpha_res: float = 0.1,
                 posterior_logvar_max: float | None = None):
        super().__init__(policy)
        if not getattr(policy, "use_vib", False):
            raise ValueError("latent steering needs a base policy trained with the VIB (policy.use_vib=true)")
        self._set_posterior_logvar_max(posterior_logvar_max)
        self.res_scale = parse_res_scale(res_scale, self.RULES)
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
        z = mu if deterministic else self.posterior_sample(mu, logvar)
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
            self.res_scale, logged = match_action_residual(self.policy, base_cfg, "latent", self.calibration_samples,
                                                           self.calibration_seed, self.calibration_alpha_res)
            return logged
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


# Run configs and checkpoints written before the baselines moved name them zprl.policy.steering.<Class>.
_MOVED_TO_BASELINES = ("ActionResidualSteering", "NoiseSteering", "EmbeddingResidualSteering")


def __getattr__(name: str):
    if name in _MOVED_TO_BASELINES:
        from zprl.policy import baselines

        return getattr(baselines, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
