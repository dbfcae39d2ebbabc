"""The baselines ZPRL is compared with, as steering interfaces (the contract: zprl/policy/steering.py):
``action_residual`` (Policy Decorator), ``noise`` (DSRL-style initial-noise steering) and
``embedding_residual`` (the no-bottleneck ablation). Each runs as the authors' framework runs it
(docs/steering.md states every choice and its reason).
"""

from __future__ import annotations

import math

import torch

from zprl.policy.calibration import match_action_residual
from zprl.policy.steering import Encoded, Steering, parse_res_scale, rms


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

    def __init__(self, policy, noise_bound: float = 1.5, posterior_logvar_max: float | None = None):
        super().__init__(policy)
        self.noise_bound = float(noise_bound)
        self._set_posterior_logvar_max(posterior_logvar_max)

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
    ``res_scale="match_action_residual"`` picks, in ``prepare``, the scale at which a random d moves the
    executed chunk as far as a random action residual at ``calibration_alpha_res`` (as ZPRL's rule of
    that name): the authors' 0.025 moves it a tenth as far on our lift base (docs/steering.md).
    """

    name = "embedding_residual"

    def __init__(self, policy, res_scale: float | str = 0.025, calibration_samples: int = 1024,
                 calibration_seed: int = 0, calibration_alpha_res: float = 0.1):
        super().__init__(policy)
        self.res_scale = parse_res_scale(res_scale, ("match_action_residual",))
        self.calibration_samples = int(calibration_samples)
        self.calibration_seed = int(calibration_seed)
        self.calibration_alpha_res = float(calibration_alpha_res)

    def prepare(self, base_cfg) -> dict:
        if self.res_scale != "match_action_residual":
            return {}
        self.res_scale, logged = match_action_residual(self.policy, base_cfg, "embedding_residual",
                                                       self.calibration_samples, self.calibration_seed,
                                                       self.calibration_alpha_res)
        return logged

    def _scale(self) -> float:
        if isinstance(self.res_scale, str):
            raise RuntimeError(f"res_scale={self.res_scale} is calibrated by prepare(base_cfg) before acting")
        return self.res_scale

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
        return self.policy.sample_action_chunk(enc.parts["emb"] + self._scale() * rl_action)["action"]

    def diagnostics(self, enc: Encoded, rl_action: torch.Tensor) -> dict:
        rms_emb = rms(enc.parts["emb"])
        rms_d = rms(self._scale() * rl_action)
        return {"rms_emb": rms_emb, "rms_scaled_d": rms_d, "rms_ratio": rms_d / max(rms_emb, 1e-8)}

    def extra_state(self) -> dict:
        return {"res_scale": self.res_scale}
