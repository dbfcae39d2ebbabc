"""Choosing ZPRL's lambda before training: ``steering.res_scale=auto`` and ``=match_action_residual``.

Two rules, both measured on the base policy's own training dataset:

- ``auto`` (the authors' README advice): RMS(lambda * dz) = target * RMS(z) for dz ~ U(-1, 1),
  a rule in latent units.
- ``match_action_residual``: lambda such that a random dz ~ U(-1, 1) moves the executed chunk's
  end-effector targets as far (mean Euclidean distance, metres) as the action residual's random
  da ~ U(-1, 1) at ``alpha_res`` does, with the same flow noise. A rule in action units: it gives
  both interfaces the same reach, so a comparison between them is not a comparison of step sizes.

``steering_levers`` measures every interface's reach (and the flow noise's own spread) for any
lambda, which is what ``scripts/base_noise_spread.py --lambdas`` prints.
"""

from __future__ import annotations

import functools
import logging
import math
import os

import torch

from zprl.rl.smoothness import position_dims

# RMS of a unit uniform action, dz ~ U(-1, 1): the reference size of an actor's dz for res_scale=auto.
UNIT_UNIFORM_RMS = 1.0 / math.sqrt(3.0)
log = logging.getLogger("zprl")


def res_scale_for_ratio(rms_z: float, target: float, rms_dz: float = UNIT_UNIFORM_RMS) -> float:
    """lambda with RMS(lambda * dz) = target * RMS(z)."""
    return float(target) * float(rms_z) / float(rms_dz)


def dataset_observations(base_cfg, max_samples: int, seed: int = 0, batch_size: int = 256):
    """Batches of observation dicts (B, n_obs_steps, ...) from up to ``max_samples`` random windows
    of the base policy's training dataset (``base_cfg.task.dataset``)."""
    import hydra

    from zprl.common.errors import UserInputError
    from zprl.data.paths import missing_dataset_message

    path = str(base_cfg.task.dataset.dataset_path)
    if not os.path.isfile(path):
        raise UserInputError(f"{missing_dataset_message(path)} (steering.res_scale=auto and match_action_residual "
                             "calibrate on the base policy's dataset; or set steering.res_scale to a number)")
    dataset = hydra.utils.instantiate(base_cfg.task.dataset)
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:max_samples].tolist()
    subset = torch.utils.data.Subset(dataset, order)
    loader = torch.utils.data.DataLoader(subset, batch_size=batch_size, shuffle=False, num_workers=0)
    for batch in loader:
        yield batch["obs"]


@torch.no_grad()
def latent_rms(policy, obs_batches) -> float:
    """RMS of z as collected online (z ~ N(mu, sigma^2), the posterior), taken in expectation:
    sqrt(mean over observations and dims of mu^2 + sigma^2), so no sampling noise enters lambda."""
    total, count = 0.0, 0
    for obs in obs_batches:
        obs = {k: v.to(policy.device) for k, v in obs.items()}
        mu, logvar = policy.vib_posterior(policy.encode_obs(obs))
        total += (mu.double().pow(2) + logvar.double().exp()).sum().item()
        count += mu.numel()
    if count == 0:
        raise ValueError("no observations to calibrate res_scale on")
    return math.sqrt(total / count)


def dataset_latent_rms(policy, base_cfg, max_samples: int, seed: int = 0) -> float:
    return latent_rms(policy, dataset_observations(base_cfg, max_samples, seed))


class ChunkReach:
    """How far perturbations move the executed chunk of one batch of observations.

    Everything is drawn once (flow noise, a second flow noise, dz ~ U(-1, 1) per latent dim, da ~ U(-1, 1)
    per executed action entry) and the base is conditioned as deployed (decoded posterior mean),
    so reach(lambda) is a deterministic, continuous function of lambda.
    """

    @torch.no_grad()
    def __init__(self, policy, obs: dict, seed: int = 0):
        self.policy = policy
        obs = {k: v.to(policy.device) for k, v in obs.items()}
        g = torch.Generator().manual_seed(seed)
        self.emb = policy.encode_obs(obs)
        self.mu = policy.vib_posterior(self.emb)[0]
        b = self.mu.shape[0]
        shape = (b, policy.horizon, policy.action_dim)
        self.noise = torch.randn(shape, generator=g).to(self.mu)
        other_noise = torch.randn(shape, generator=g).to(self.mu)
        self.dz = (torch.rand(self.mu.shape, generator=g) * 2 - 1).to(self.mu)
        self.da = (torch.rand((b, policy.n_action_steps, policy.action_dim), generator=g) * 2 - 1).to(self.mu)
        # drawn after the draws above, so adding these interfaces left the ZPRL/residual reach unchanged
        self.d_emb = (torch.rand(self.emb.shape, generator=g) * 2 - 1).to(self.mu)
        self.u_noise = (torch.rand(shape, generator=g) * 2 - 1).to(self.mu)
        self.pos = torch.as_tensor(position_dims(policy.action_dim), device=self.mu.device)
        self.base = self._chunk(self.mu, self.noise)
        self.flow_noise_m = self.distance_m(self._chunk(self.mu, other_noise))

    def _chunk(self, z: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return self.policy.sample_action_chunk(self.policy.decode_latent(z), noise)["action"]

    def distance_m(self, chunk: torch.Tensor, reference: torch.Tensor | None = None) -> float:
        """Mean end-effector target distance (m) from the base chunk (or ``reference``), over
        observations, steps, arms."""
        d = (chunk - (self.base if reference is None else reference))[..., self.pos].unflatten(-1, (-1, 3))
        return d.norm(dim=-1).mean().item()

    @torch.no_grad()
    def latent(self, res_scale: float) -> float:
        """Reach of ZPRL: z' = mu + lambda * dz."""
        return self.distance_m(self._chunk(self.mu + res_scale * self.dz, self.noise))

    @torch.no_grad()
    def action_residual(self, alpha_res: float) -> float:
        """Reach of the action residual: a_base + alpha_res * da on the normalized executed chunk."""
        norm = self.policy.normalizer["action"]
        nb = norm.normalize(self.base)
        # as ActionResidualSteering.act: the residual's effect added to the chunk itself (no rounding)
        return self.distance_m(self.base + (norm.unnormalize(nb + alpha_res * self.da) - norm.unnormalize(nb)))


    @torch.no_grad()
    def embedding_residual(self, res_scale: float) -> float:
        """Reach of the no-bottleneck ablation: the U-Net on obs_emb + res_scale * d, from its own base
        (the U-Net on the raw obs_emb, VIB bypassed), same flow noise."""
        chunk = self.policy.sample_action_chunk(self.emb + res_scale * self.d_emb, self.noise)["action"]
        return self.distance_m(chunk, self.embedding_base)

    @functools.cached_property
    def embedding_base(self) -> torch.Tensor:
        """The U-Net on the raw obs_emb, once: the embedding residual's base for every scale compared."""
        with torch.no_grad():
            return self.policy.sample_action_chunk(self.emb, self.noise)["action"]

    @torch.no_grad()
    def noise_steering(self, noise_bound: float) -> float:
        """Reach of noise steering: the flow started from noise_bound * u, u ~ U(-1, 1), against the
        base's start from N(0, I) (compare with flow_noise_m, two N(0, I) starts)."""
        return self.distance_m(self._chunk(self.mu, noise_bound * self.u_noise))


def scale_matching_reach(reach_of, target_m: float, lo: float = 1e-3, hi: float = 20.0,
                         iterations: int = 14) -> float:
    """The scale whose reach ``reach_of(scale)`` is ``target_m`` (bisection on a log scale; reach grows
    with the scale)."""
    if reach_of(hi) < target_m:
        raise ValueError(f"even a scale of {hi} moves the chunk only {1000 * reach_of(hi):.2f} mm "
                         f"< the target {1000 * target_m:.2f} mm: the condition barely moves the policy")
    for _ in range(iterations):
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if reach_of(mid) < target_m else (lo, mid)
    return math.sqrt(lo * hi)


def match_action_residual(policy, base_cfg, reach_of: str, samples: int, seed: int,
                          alpha_res: float) -> tuple[float, dict]:
    """``res_scale=match_action_residual`` for an interface whose reach is ``ChunkReach.<reach_of>``:
    the scale at which a random action moves the executed chunk as far as a random action residual at
    ``alpha_res``. Returns the scale and what to log."""
    # one batch through the U-Net per bisection step: 1024 observations give the mean to ~1%
    reach = dataset_reach(policy, base_cfg, min(samples, 1024), seed)
    target = reach.action_residual(alpha_res)
    scale = scale_matching_reach(getattr(reach, reach_of), target)
    log.info("res_scale=match_action_residual (%s reach): a random action residual (alpha %.3g) moves the executed "
             "chunk %.2f mm on %d dataset observations -> res_scale %.4f moves it as far (flow noise alone: %.2f mm)",
             reach_of, alpha_res, 1000 * target, reach.mu.shape[0], scale, 1000 * reach.flow_noise_m)
    return scale, {"steering/res_scale": scale, "steering/calibration_reach_m": target,
                   "steering/calibration_flow_noise_m": reach.flow_noise_m}


def dataset_reach(policy, base_cfg, samples: int, seed: int = 0) -> ChunkReach:
    obs = next(dataset_observations(base_cfg, samples, seed, batch_size=samples))
    return ChunkReach(policy, obs, seed)


def steering_levers(policy, base_cfg, res_scales, alpha_res: float = 0.1, samples: int = 512,
                    seed: int = 0, emb_res_scale: float = 0.025, noise_bound: float = 1.5) -> dict:
    """Reach (m) of the flow noise, the action residual at alpha_res, ZPRL at each lambda, the embedding
    residual at emb_res_scale and noise steering at noise_bound, plus the lambda that matches the action
    residual."""
    reach = dataset_reach(policy, base_cfg, samples, seed)
    target = reach.action_residual(alpha_res)
    return {"n": int(reach.mu.shape[0]), "flow_noise_m": reach.flow_noise_m, "action_residual_m": target,
            "alpha_res": alpha_res, "zprl_m": {float(s): reach.latent(float(s)) for s in res_scales},
            "embedding_residual_m": reach.embedding_residual(emb_res_scale), "emb_res_scale": emb_res_scale,
            "noise_m": reach.noise_steering(noise_bound), "noise_bound": noise_bound,
            "matching_res_scale": scale_matching_reach(reach.latent, target)}
