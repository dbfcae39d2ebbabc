"""The composed policy: frozen base policy + steering interface + SAC actor, as one predict_action."""

from __future__ import annotations

import torch


class SteeredPolicy:
    """``predict_action(obs)`` for env runners. Deterministic by default: z = mu and
    rl_action = tanh(mean); ``actor=None`` runs the unsteered base through the same interface."""

    def __init__(self, steering, actor=None, deterministic: bool = True):
        self.steering, self.actor, self.deterministic = steering, actor, deterministic

    @property
    def device(self) -> torch.device:
        return self.steering.device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.steering.policy.parameters()).dtype

    @torch.no_grad()
    def predict_action(self, obs: dict) -> dict:
        enc = self.steering.encode(obs, deterministic=self.deterministic)
        if self.actor is None:
            rl_action = self.steering.base_action(enc.state.shape[0])
        else:
            rl_action = self.actor.act(enc.state, deterministic=self.deterministic)
        return {"action": self.steering.act(enc, rl_action), "rl_action": rl_action}


def load_steered_policy(ckpt_path: str, device="cpu", base_ckpt: str | None = None):
    """Rebuild the composed policy of an online checkpoint: (SteeredPolicy, base cfg, online state)."""
    import hydra
    from omegaconf import OmegaConf

    from zprl.common.checkpoint import file_sha256
    from zprl.common.errors import UserInputError
    from zprl.policy.checkpoint import load_base_policy, read_checkpoint
    from zprl.rl.sac import TanhGaussianActor

    payload = read_checkpoint(ckpt_path)
    state = payload["state"]
    if "sac" not in state:
        raise UserInputError(f"{ckpt_path} is not an online checkpoint (no SAC state); "
                             "for an offline checkpoint use eval_base.py")
    base_path = base_ckpt or state["base_ckpt"]
    policy, base_cfg, _ = load_base_policy(base_path, device=device)
    if file_sha256(base_path) != state["base_ckpt_sha256"]:
        raise UserInputError(f"base checkpoint {base_path} differs from the one this run was trained on "
                             f"(sha256 mismatch); pass the original with --base_ckpt")
    cfg = OmegaConf.create(payload["cfg"])
    policy.n_action_steps = state["n_action_steps"]
    overrides = {k: v for k, v in state["steering"].items() if k != "name"}
    steering = hydra.utils.instantiate(cfg.steering, policy=policy, **overrides)
    s = cfg.sac
    actor = TanhGaussianActor(steering.state_dim, steering.action_dim, tuple(s.actor_hidden),
                              *steering.log_std_bounds(s))
    actor.load_state_dict(state["sac"]["actor"])
    actor.to(steering.device).eval()
    return SteeredPolicy(steering, actor, deterministic=True), base_cfg, state
