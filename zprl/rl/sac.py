"""Soft actor-critic for steering a frozen base policy.

The actor outputs a bounded steering action (tanh-Gaussian in [-1, 1]^action_dim); a sigmoid
critic ensemble scores it for a sparse 0/1 task reward. ``SAC.update`` is one gradient step as the
online workspace calls it; ``update_critic``, ``update_actor_and_alpha`` and ``update_target`` are
its parts, public so each can be run and checked on its own.

Batches are dicts of tensors on the training device:
``state (B, S)``, ``action (B, A)``, ``reward (B,)``, ``next_state (B, S)``,
``terminal (B,)`` (1 = do not bootstrap: success or time-out).

The critics may score a different view of (state, action) than the actor sees: ``critic_view``
(from the steering interface, e.g. the action residual's executed chunk a_base + alpha * da) maps
a stored (state, action) to the critic's (state, action). SAC itself never knows the interface.
"""

from __future__ import annotations

import copy
import math
from contextlib import contextmanager
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from zprl.model.vib import mlp


class TanhGaussianActor(nn.Module):
    """s -> a = tanh(u), u ~ N(mean(s), std(s)^2).

    As the authors initialise it: the mean and log-std heads are orthogonal with gain 0.01 and zero
    bias, so both heads start out near zero. The log-std is bounded softly,
    log_std_min + (max - min) * (tanh(x) + 1) / 2 (so the bound never cuts the gradient the way a
    hard clamp does), and a zero head output sits in the middle of the range: log-std -4
    (std ~0.02) for the default [-10, 2], i.e. the first steered actions stay close to action 0;
    log-std 0 (std 1) for noise steering's [-2, 2], where the actor should start as spread as
    the warm-up's N(0, I) noise. The range is the steering interface's (``actor_log_std_range``).
    """

    def __init__(self, state_dim: int, action_dim: int, hidden: Sequence[int] = (256, 256, 256),
                 log_std_min: float = -10.0, log_std_max: float = 2.0):
        super().__init__()
        if not log_std_min < log_std_max:
            raise ValueError(f"log_std_min={log_std_min} must be below log_std_max={log_std_max}")
        self.action_dim = action_dim
        self.log_std_min, self.log_std_max = float(log_std_min), float(log_std_max)
        self.trunk = mlp(state_dim, hidden)
        self.mean = nn.Linear(hidden[-1], action_dim)
        self.log_std = nn.Linear(hidden[-1], action_dim)
        for head in (self.mean, self.log_std):
            nn.init.orthogonal_(head.weight, gain=0.01)
            nn.init.zeros_(head.bias)

    def distribution_params(self, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-std of the pre-tanh Gaussian."""
        h = self.trunk(state)
        unit = (torch.tanh(self.log_std(h)) + 1.0) / 2.0
        return self.mean(h), self.log_std_min + (self.log_std_max - self.log_std_min) * unit

    def forward(self, state: torch.Tensor, generator: torch.Generator | None = None):
        """(action, log_prob (B,), mean_action): a reparameterized sample and tanh(mean)."""
        mean, log_std = self.distribution_params(state)
        eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        u = mean + log_std.exp() * eps
        return torch.tanh(u), squashed_gaussian_log_prob(u, mean, log_std), torch.tanh(mean)

    @torch.no_grad()
    def act(self, state: torch.Tensor, deterministic: bool = False,
            generator: torch.Generator | None = None) -> torch.Tensor:
        action, _, mean_action = self(state, generator)
        return mean_action if deterministic else action


def squashed_gaussian_log_prob(u: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """log density of a = tanh(u) for u ~ N(mean, exp(log_std)^2), summed over action dims.

    Change of variables: log p(a) = log N(u) - sum log(1 - tanh(u)^2), with the Jacobian written as
    2 * (log 2 - u - softplus(-2u)), which stays finite where tanh saturates.
    """
    gauss = -0.5 * ((u - mean) / log_std.exp()) ** 2 - log_std - 0.5 * math.log(2 * math.pi)
    log_det = 2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))
    return (gauss - log_det).sum(-1)


class EnsembleLinear(nn.Module):
    """n independent Linear layers applied in one batched matmul: (n, B, in) -> (n, B, out)."""

    def __init__(self, n: int, in_dim: int, out_dim: int):
        super().__init__()
        bound = 1.0 / math.sqrt(in_dim)  # nn.Linear's default init, per member
        self.weight = nn.Parameter(torch.empty(n, in_dim, out_dim).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(n, 1, out_dim).uniform_(-bound, bound))

    def params(self, members: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(weight, bias) of all members, or of the given member indices."""
        if members is None:
            return self.weight, self.bias
        return self.weight[members], self.bias[members]

    def forward(self, x: torch.Tensor, members: torch.Tensor | None = None) -> torch.Tensor:
        weight, bias = self.params(members)
        return torch.baddbmm(bias, x, weight)


class CriticEnsemble(nn.Module):
    """n_critics Q(s, a) MLPs evaluated together; Q = sigmoid(logit) in [0, 1] for 0/1 rewards.

    Where the weights need no gradient (the actor loss, the TD target) the first layer is applied to
    the state and action parts separately (same weights, same sum), so backpropagation to the action
    stops at its few columns instead of the whole (state, action) input; the critic's own step
    multiplies (state, action) at once. ``members`` evaluates only
    those members (the TD target uses 2 of 10), at a fraction of the cost.
    """

    def __init__(self, state_dim: int, action_dim: int, n_critics: int = 2,
                 hidden: Sequence[int] = (256, 256, 256)):
        super().__init__()
        self.n_critics, self.state_dim = n_critics, state_dim
        dims = [state_dim + action_dim, *hidden]
        self.hidden = nn.ModuleList(EnsembleLinear(n_critics, i, o) for i, o in zip(dims[:-1], dims[1:]))
        self.out = EnsembleLinear(n_critics, dims[-1], 1)

    def forward(self, state: torch.Tensor, action: torch.Tensor, members: torch.Tensor | None = None) -> torch.Tensor:
        """(n_critics, B) Q values, or (len(members), B) for the given member indices."""
        w0, b0 = self.hidden[0].params(members)
        n = w0.shape[0]
        if w0.requires_grad and torch.is_grad_enabled():
            # the critic's own step: one product over (state, action); slicing w0 here would make autograd
            # zero-fill and copy a full-size gradient for each slice
            x = torch.baddbmm(b0, torch.cat([state, action], dim=-1).unsqueeze(0).expand(n, -1, -1), w0)
        else:
            x = torch.baddbmm(b0, state.unsqueeze(0).expand(n, -1, -1), w0[:, : self.state_dim])
            x = torch.baddbmm(x, action.unsqueeze(0).expand(n, -1, -1), w0[:, self.state_dim:])
        x = F.gelu(x)
        for layer in self.hidden[1:]:
            x = F.gelu(layer(x, members))
        # the 1-wide output layer as a dot product: a batched matmul with one output column (and, backward,
        # one inner dimension) runs ~4x slower on a CPU than the same sums done elementwise
        w, b = self.out.params(members)
        return torch.sigmoid(torch.linalg.vecdot(x, w.transpose(1, 2)) + b.squeeze(-1))


CriticView = Callable[[torch.Tensor, torch.Tensor], "tuple[torch.Tensor, torch.Tensor]"]


def _identity_view(state: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return state, action


@contextmanager
def _no_param_grads(module: nn.Module):
    """Let gradients flow through ``module`` to its inputs without computing them for its weights."""
    flags = [p.requires_grad for p in module.parameters()]
    for p in module.parameters():
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, f in zip(module.parameters(), flags):
            p.requires_grad_(f)


class SAC:
    """Actor, critic ensemble, its Polyak target, temperature and their optimizers.

    ``gamma`` is the discount per agent step, i.e. per chunk: ``chunk.chunk_gamma(0.99, n_action_steps)``.
    ``target_entropy`` defaults to -action_dim / 2; ``alpha_lr`` is the temperature's Adam lr.
    ``generator`` (seeded by ``seed``, on ``device``) draws every random number the updates use
    (the target members, the actor's noise), so a run restored from ``state_dict`` repeats the
    original update for update. Collection noise comes from the global RNG unless a generator
    on the state's device is passed to ``act``.

    ``log_std_min``/``log_std_max``: the actor's log-std range (its zero output is the middle).
    ``critic_view(state, action) -> (critic_state, critic_action)``: what the critics score for a
    stored transition, applied alike in the critic regression, the TD target (to the next state
    and the actor's next action) and the actor loss, so it must be differentiable in ``action``.
    The critics are built on the view's sizes. Identity by default.
    """

    def __init__(self, state_dim: int, action_dim: int, device, gamma: float,
                 tau: float = 0.005, actor_lr: float = 1e-4, critic_lr: float = 3e-4,
                 alpha_lr: float = 3e-4, alpha_init: float = 0.01, target_entropy: float | None = None,
                 n_critics: int = 2, n_target_min: int = 2, actor_update_every: int = 2,
                 grad_clip: float = 50.0, backup_entropy: bool = False, auto_alpha: bool = True,
                 actor_hidden: Sequence[int] = (256, 256, 256),
                 critic_hidden: Sequence[int] = (256, 256, 256), log_std_min: float = -10.0,
                 log_std_max: float = 2.0, critic_view: CriticView | None = None, seed: int = 0):
        if not 1 <= n_target_min <= n_critics:
            raise ValueError(f"n_target_min={n_target_min} must lie in [1, n_critics={n_critics}]")
        self.device = torch.device(device)
        self.state_dim, self.action_dim = state_dim, action_dim
        self.gamma, self.tau, self.grad_clip = gamma, tau, grad_clip
        self.n_target_min, self.actor_update_every = n_target_min, actor_update_every
        self.backup_entropy, self.auto_alpha = backup_entropy, auto_alpha
        self.target_entropy = -action_dim / 2.0 if target_entropy is None else float(target_entropy)

        self.critic_view = critic_view or _identity_view
        # the critic's input sizes are whatever the view makes of a stored (state, action)
        with torch.no_grad():
            view_state, view_action = self.critic_view(torch.zeros(1, state_dim, device=self.device),
                                                       torch.zeros(1, action_dim, device=self.device))
        self.critic_state_dim, self.critic_action_dim = view_state.shape[-1], view_action.shape[-1]

        self.actor = TanhGaussianActor(state_dim, action_dim, actor_hidden, log_std_min, log_std_max).to(self.device)
        self.critic = CriticEnsemble(self.critic_state_dim, self.critic_action_dim, n_critics,
                                     critic_hidden).to(self.device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.log_alpha = torch.tensor(math.log(alpha_init), device=self.device, requires_grad=True)

        # fused Adam: one kernel per step instead of ~10 elementwise passes per parameter tensor
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=actor_lr, fused=True)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=critic_lr, fused=True)
        self.alpha_opt = torch.optim.Adam([self.log_alpha], lr=alpha_lr)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.critic_steps = 0
        self.actor_steps = 0

    @classmethod
    def for_steering(cls, steering, n_action_steps: int, device, seed: int = 0, gamma_step: float = 0.99,
                     log_std_min: float | None = None, log_std_max: float | None = None,
                     actor_hidden: Sequence[int] = (256, 256, 256), critic_hidden: Sequence[int] = (256, 256, 256),
                     **kwargs) -> "SAC":
        """The SAC that drives ``steering``, built from the ``sac`` config node (its ``_target_``).

        The interface gives the sizes, the critic view and, where ``log_std_min``/``log_std_max`` are
        null, the actor's log-std range (``Steering.log_std_bounds``); ``gamma_step`` is the discount
        per env step, so the per-chunk gamma is ``gamma_step ** n_action_steps``. ``kwargs`` are the
        constructor's own (tau, learning rates, n_critics, ...).
        """
        from omegaconf import OmegaConf

        from zprl.rl.chunk import chunk_gamma

        lo, hi = steering.log_std_bounds(OmegaConf.create({"log_std_min": log_std_min, "log_std_max": log_std_max}))
        return cls(steering.state_dim, steering.action_dim, device, gamma=chunk_gamma(gamma_step, n_action_steps),
                   actor_hidden=tuple(actor_hidden), critic_hidden=tuple(critic_hidden), log_std_min=lo,
                   log_std_max=hi, critic_view=steering.critic_input, seed=seed, **kwargs)

    @property
    def alpha(self) -> torch.Tensor:
        return self.log_alpha.detach().exp()

    @torch.no_grad()
    def act(self, state: torch.Tensor, deterministic: bool = False,
            generator: torch.Generator | None = None) -> torch.Tensor:
        """Steering action for collection (sampled) or evaluation (tanh(mean))."""
        return self.actor.act(state, deterministic, generator)

    # ---- one update -------------------------------------------------------------------------

    def update(self, batch: dict) -> dict:
        """One critic step; every ``actor_update_every`` critic steps also actor, alpha and target."""
        metrics = self.update_critic(batch)
        if self.critic_steps % self.actor_update_every == 0:
            metrics.update(self.update_actor_and_alpha(batch))
            self.update_target()
        return metrics

    @torch.no_grad()
    def compute_td_target(self, batch: dict) -> torch.Tensor:
        """y = r + gamma * (1 - terminal) * min over n_target_min random target members of Q'(s', a')."""
        next_action, next_log_prob, _ = self.actor(batch["next_state"], self.generator)
        members = torch.randperm(self.critic.n_critics, generator=self.generator, device=self.device)
        # only the chosen members are evaluated: 2 of 10 forward passes instead of 10; all of them (the min
        # does not depend on their order) without gathering their weights
        chosen = members[: self.n_target_min] if self.n_target_min < self.critic.n_critics else None
        q_next = self.critic_target(*self.critic_view(batch["next_state"], next_action), members=chosen)
        q_next = q_next.min(dim=0).values
        if self.backup_entropy:
            q_next = q_next - self.alpha * next_log_prob
        return batch["reward"] + self.gamma * (1.0 - batch["terminal"]) * q_next

    def update_critic(self, batch: dict) -> dict:
        target = self.compute_td_target(batch)
        q = self.critic(*self.critic_view(batch["state"], batch["action"]))
        # each member regresses on the shared target; summing keeps per-member gradients unscaled
        loss = F.mse_loss(q, target.expand_as(q), reduction="none").mean(dim=1).sum()
        self.critic_opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = nn.utils.clip_grad_norm_(self.critic.parameters(), self.grad_clip)
        self.critic_opt.step()
        self.critic_steps += 1
        q = q.detach()
        return self._floats({
            "critic_loss": loss.detach(), "td_error": (target - q).abs().mean(),
            "q_mean": q.mean(), "q_min": q.min(), "q_max": q.max(),
            "target_q_mean": target.mean(), "critic_grad_norm": grad_norm,
        })

    def update_actor_and_alpha(self, batch: dict) -> dict:
        """Actor step on alpha*log pi - mean_i Q_i(s, pi(s)) (the MEAN over all members, as the
        authors: the min is kept for the TD target), then the temperature step.

        Touches neither the critics nor their targets (their weights get no gradient here).
        """
        action, log_prob, _ = self.actor(batch["state"], self.generator)
        with _no_param_grads(self.critic):
            q = self.critic(*self.critic_view(batch["state"], action)).mean(dim=0)
        actor_loss = (self.alpha * log_prob - q).mean()
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        grad_norm = nn.utils.clip_grad_norm_(self.actor.parameters(), self.grad_clip)
        self.actor_opt.step()

        log_prob = log_prob.detach()
        # entropy below target -> (log_prob + target) > 0 -> this loss raises log_alpha
        alpha_loss = -(self.log_alpha * (log_prob + self.target_entropy)).mean()
        if self.auto_alpha:
            self.alpha_opt.zero_grad(set_to_none=True)
            alpha_loss.backward()
            self.alpha_opt.step()
        self.actor_steps += 1
        return self._floats({
            "actor_loss": actor_loss.detach(), "alpha_loss": alpha_loss.detach(), "alpha": self.alpha,
            "entropy": -log_prob.mean(), "actor_grad_norm": grad_norm,
        })

    @torch.no_grad()
    def update_target(self) -> None:
        """Polyak average: target <- target + tau * (online - target)."""
        for p_targ, p in zip(self.critic_target.parameters(), self.critic.parameters()):
            p_targ.lerp_(p, self.tau)

    @staticmethod
    def _floats(metrics: dict) -> dict:
        # one device->host copy per update instead of one per metric
        values = torch.stack([v.detach().float().reshape(()) for v in metrics.values()]).tolist()
        return dict(zip(metrics.keys(), values))

    # ---- checkpointing ----------------------------------------------------------------------

    def state_dict(self) -> dict:
        return {
            "dims": {"state_dim": self.state_dim, "action_dim": self.action_dim,
                     "critic_state_dim": self.critic_state_dim, "critic_action_dim": self.critic_action_dim,
                     "n_critics": self.critic.n_critics},
            "actor": self.actor.state_dict(),
            "critic": self.critic.state_dict(),
            "critic_target": self.critic_target.state_dict(),
            "log_alpha": self.log_alpha.detach().clone(),
            "actor_opt": self.actor_opt.state_dict(),
            "critic_opt": self.critic_opt.state_dict(),
            "alpha_opt": self.alpha_opt.state_dict(),
            "generator": self.generator.get_state(),
            "critic_steps": self.critic_steps,
            "actor_steps": self.actor_steps,
        }

    def load_state_dict(self, state: dict) -> None:
        mine = self.state_dict()["dims"]
        # checkpoints from before critic views had critics on (state, action) itself
        theirs = {"critic_state_dim": state["dims"]["state_dim"], "critic_action_dim": state["dims"]["action_dim"],
                  **state["dims"]}
        if theirs != mine:
            raise ValueError(f"SAC checkpoint has {theirs}, this agent was built with {mine}")
        self.actor.load_state_dict(state["actor"])
        self.critic.load_state_dict(state["critic"])
        self.critic_target.load_state_dict(state["critic_target"])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
        self.actor_opt.load_state_dict(state["actor_opt"])
        self.critic_opt.load_state_dict(state["critic_opt"])
        for opt in (self.actor_opt, self.critic_opt):  # checkpoints from before fused Adam carry fused=None
            for group in opt.param_groups:
                group["fused"] = True
        self.alpha_opt.load_state_dict(state["alpha_opt"])
        self.generator.set_state(state["generator"].cpu())
        self.critic_steps = int(state["critic_steps"])
        self.actor_steps = int(state["actor_steps"])
