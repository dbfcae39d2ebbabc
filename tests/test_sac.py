"""SAC core: actor density, critic ensemble, update parts, checkpoint round trip, a bandit; chunk helpers."""

import io
import math

import numpy as np
import pytest
import torch
from torch.distributions import Normal, TanhTransform, TransformedDistribution

from zprl.rl.chunk import chunk_gamma, discounted_chunk_reward, env_steps
from zprl.rl.replay import EmbeddingReplayBuffer
from zprl.rl.sac import SAC, CriticEnsemble, TanhGaussianActor, _no_param_grads, squashed_gaussian_log_prob

S, A = 6, 3




def make_sac(**kw):
    kw = {"actor_hidden": (32, 32), "critic_hidden": (32, 32), "seed": 0, **kw}
    return SAC(S, A, "cpu", gamma=0.99 ** 4, **kw)


def make_batch(n=64, seed=0, state_dim=S, action_dim=A):
    g = torch.Generator().manual_seed(seed)
    batch = {
        "state": torch.randn(n, state_dim, generator=g),
        "action": torch.rand(n, action_dim, generator=g) * 2 - 1,
        "reward": (torch.rand(n, generator=g) < 0.3).float(),
        "next_state": torch.randn(n, state_dim, generator=g),
        "terminal": (torch.rand(n, generator=g) < 0.5).float(),
    }
    # sparse task reward: a success ends the episode, so targets stay inside the sigmoid's [0, 1]
    batch["terminal"] = torch.maximum(batch["terminal"], batch["reward"])
    return batch


def snapshot(module):
    return [p.detach().clone() for p in module.parameters()]


def all_equal(a, b):
    return all(torch.equal(x, y) for x, y in zip(a, b))


# ---- actor ----------------------------------------------------------------------------------

def test_actor_log_prob_matches_torch_tanh_transform():
    torch.manual_seed(0)
    actor = TanhGaussianActor(S, A, hidden=(32, 32), log_std_min=-3.0, log_std_max=1.0).double()
    with torch.no_grad():
        actor.mean.weight.normal_(0, 0.5)  # spread the means so the tanh correction matters
    state = torch.randn(512, S, dtype=torch.float64)
    action, log_prob, mean_action = actor(state)
    mean, log_std = actor.distribution_params(state)
    reference = TransformedDistribution(Normal(mean, log_std.exp()), TanhTransform())
    expected = reference.log_prob(action.clamp(-1 + 1e-12, 1 - 1e-12)).sum(-1)
    assert action.shape == (512, A) and log_prob.shape == (512,)
    assert action.abs().max() < 1
    torch.testing.assert_close(log_prob, expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(mean_action, torch.tanh(mean))
    torch.testing.assert_close(actor.act(state, deterministic=True), torch.tanh(mean))


def test_squashed_log_prob_is_the_density_of_tanh_samples():
    # Monte-Carlo: histogram of a = tanh(u) against the density integrated over each bin
    g = torch.Generator().manual_seed(1)
    mean, log_std = torch.tensor([[0.4]], dtype=torch.float64), torch.tensor([[math.log(0.9)]], dtype=torch.float64)
    u = mean + log_std.exp() * torch.randn(400_000, 1, generator=g, dtype=torch.float64)
    counts = torch.histc(torch.tanh(u), bins=40, min=-1, max=1)
    fine = torch.linspace(-1, 1, 40 * 200 + 1, dtype=torch.float64)[1:-1]
    fine_u = torch.atanh(fine).unsqueeze(-1)
    density = squashed_gaussian_log_prob(fine_u, mean.expand_as(fine_u), log_std.expand_as(fine_u)).exp()
    step = 2 / (40 * 200)
    assert abs(density.sum().item() * step - 1) < 2e-3  # a density on (-1, 1)
    per_bin = torch.cat([density, density[-1:]]).reshape(40, 200).sum(-1) * step
    torch.testing.assert_close(counts / counts.sum(), per_bin, atol=2.5e-3, rtol=0)


def test_actor_init_as_the_authors_heads_orthogonal_gain_001_std_from_the_range():
    torch.manual_seed(0)
    actor = TanhGaussianActor(S, A, hidden=(64, 64, 64))
    for head in (actor.mean, actor.log_std):  # orthogonal rows scaled by the gain, zero bias
        torch.testing.assert_close(head.weight @ head.weight.T, 1e-4 * torch.eye(A), atol=1e-9, rtol=0)
        assert torch.equal(head.bias, torch.zeros(A))
    mean, log_std = actor.distribution_params(torch.randn(256, S) * 3)
    assert mean.abs().max() < 0.01
    # default range [-10, 2]: zero head output = the middle, log-std -4, std ~0.018
    torch.testing.assert_close(log_std, torch.full_like(log_std, -4.0), atol=0.05, rtol=0)
    # noise steering's range [-2, 2]: std ~1, as spread as the warm-up's N(0, I) noise
    wide = TanhGaussianActor(S, A, hidden=(64, 64, 64), log_std_min=-2.0, log_std_max=2.0)
    torch.testing.assert_close(wide.distribution_params(torch.randn(256, S) * 3)[1].exp(),
                               torch.ones(256, A), atol=0.02, rtol=0)
    assert make_sac(log_std_min=-2.0, log_std_max=2.0).actor.log_std_max == 2.0
    with torch.no_grad():  # the soft bound holds for any head output
        actor.log_std.bias.fill_(1e3)
        assert actor.distribution_params(torch.randn(4, S))[1].max() <= 2.0
        actor.log_std.bias.fill_(-1e3)
        assert actor.distribution_params(torch.randn(4, S))[1].min() >= -10.0


# ---- critic ---------------------------------------------------------------------------------

def test_critic_ensemble_shape_range_and_independent_members():
    torch.manual_seed(0)
    critic = CriticEnsemble(S, A, n_critics=5, hidden=(32, 32))
    q = critic(torch.randn(17, S), torch.rand(17, A))
    assert q.shape == (5, 17)
    assert ((q > 0) & (q < 1)).all()
    assert (q[0] - q[1]).abs().max() > 1e-3  # members are initialized independently


def test_critic_members_and_split_first_layer_compute_each_members_mlp():
    # member i is the plain MLP [s, a] -> gelu(W1) -> gelu(W2) -> sigmoid(W3) with its own weights,
    # whether the ensemble is evaluated whole or only some members (the TD target's subset)
    torch.manual_seed(0)
    critic = CriticEnsemble(S, A, n_critics=5, hidden=(32, 32))
    state, action = torch.randn(17, S), torch.rand(17, A)
    x = torch.cat([state, action], -1)
    want = []
    for i in range(5):
        h = x
        for layer in critic.hidden:
            h = torch.nn.functional.gelu(h @ layer.weight[i] + layer.bias[i])
        want.append(torch.sigmoid(h @ critic.out.weight[i] + critic.out.bias[i]).squeeze(-1))
    want = torch.stack(want)
    # with weight gradients (the critic's step: one product over [s, a]) and without (split first layer)
    torch.testing.assert_close(critic(state, action), want)
    with torch.no_grad():
        torch.testing.assert_close(critic(state, action), want)
    members = torch.tensor([3, 0])
    torch.testing.assert_close(critic(state, action, members=members), want[members])
    # the critic's step: each member's weights get the gradient of its own plain MLP
    critic(state, action).sum().backward()
    first = critic.hidden[0].weight.grad.clone()
    want[1].sum().backward()
    torch.testing.assert_close(first[1], critic.hidden[0].weight.grad[1] - first[1])
    # the actor's pass: gradient reaches the action, none is asked of the state or the weights
    critic.zero_grad(set_to_none=True)
    action.requires_grad_(True)
    with _no_param_grads(critic):
        critic(state, action).mean().backward()
    assert action.grad is not None and action.grad.abs().sum() > 0 and state.grad is None
    assert all(p.grad is None for p in critic.parameters())


def test_critic_updates_lower_td_error_on_a_fixed_batch():
    torch.manual_seed(0)
    sac = make_sac(critic_lr=1e-3)
    batch = make_batch(64)
    batch["reward"] = (batch["state"][:, 0] > 0).float()  # a value the critic can fit from the state
    batch["terminal"] = torch.maximum(batch["terminal"], batch["reward"])
    errors = [sac.update_critic(batch)["td_error"] for _ in range(400)]
    assert sac.critic_steps == 400 and sac.actor_steps == 0
    assert errors[-1] < 0.2 * errors[0]


def test_update_schedule_actor_and_target_every_second_critic_step():
    sac = make_sac()
    batch = make_batch()
    target0 = snapshot(sac.critic_target)
    m1 = sac.update(batch)
    assert (sac.critic_steps, sac.actor_steps) == (1, 0) and "actor_loss" not in m1
    assert all_equal(target0, snapshot(sac.critic_target))
    m2 = sac.update(batch)
    assert (sac.critic_steps, sac.actor_steps) == (2, 1)
    assert {"actor_loss", "alpha", "entropy", "actor_grad_norm", "critic_loss", "td_error", "q_mean",
            "q_min", "q_max", "target_q_mean", "critic_grad_norm"} <= set(m2)
    assert all(isinstance(v, float) and math.isfinite(v) for v in m2.values())
    assert not all_equal(target0, snapshot(sac.critic_target))


def test_actor_update_changes_only_actor_and_alpha():
    sac = make_sac()
    batch = make_batch()
    sac.update_critic(batch)
    critic, target, actor = snapshot(sac.critic), snapshot(sac.critic_target), snapshot(sac.actor)
    critic_grads = [p.grad.clone() for p in sac.critic.parameters()]
    alpha = sac.alpha.item()
    sac.update_actor_and_alpha(batch)
    assert all_equal(critic, snapshot(sac.critic))
    assert all_equal(target, snapshot(sac.critic_target))
    assert all_equal(critic_grads, [p.grad for p in sac.critic.parameters()])  # no stray gradient either
    assert all(p.requires_grad for p in sac.critic.parameters())
    assert not torch.equal(actor[-1], snapshot(sac.actor)[-1])
    assert sac.alpha.item() != alpha


def test_target_moves_by_exactly_tau():
    sac = make_sac(tau=0.05)
    sac.update_critic(make_batch())
    old, online = snapshot(sac.critic_target), snapshot(sac.critic)
    assert not all_equal(old, online)
    sac.update_target()
    for o, t, new in zip(old, online, snapshot(sac.critic_target)):
        torch.testing.assert_close(new, o + 0.05 * (t - o), rtol=0, atol=1e-7)


def _set_target_logits(sac, logits):
    with torch.no_grad():  # constant member outputs: Q_i = sigmoid(logits[i]) for any input
        sac.critic_target.out.weight.zero_()
        sac.critic_target.out.bias.copy_(torch.tensor(logits).view(-1, 1, 1))


def test_td_target_takes_min_of_two_members_and_masks_terminals():
    sac = make_sac()
    _set_target_logits(sac, [1.5, -0.7])
    batch = make_batch(32)
    y = sac.compute_td_target(batch)
    expected = batch["reward"] + sac.gamma * (1 - batch["terminal"]) * torch.sigmoid(torch.tensor(-0.7))
    torch.testing.assert_close(y, expected)
    done = batch["terminal"] == 1
    assert done.any() and torch.equal(y[done], batch["reward"][done])


def test_td_target_draws_two_random_members_of_a_larger_ensemble():
    sac = make_sac(n_critics=4, n_target_min=2)
    logits = [2.0, -1.0, 0.5, -3.0]
    _set_target_logits(sac, logits)
    batch = make_batch(8)
    batch["reward"].zero_()
    batch["terminal"].zero_()
    q = torch.stack([sac.compute_td_target(batch)[0] / sac.gamma for _ in range(600)])
    values = torch.sigmoid(torch.tensor(logits))
    # a pair minimum is never the largest member; the smallest member is in 3 of the 6 pairs
    is_member = (q.unsqueeze(-1) - values).abs().min(-1).values < 1e-6
    assert is_member.all()
    assert not torch.isclose(q, values[0]).any()
    share_min = torch.isclose(q, values[3]).float().mean().item()
    assert 0.4 < share_min < 0.6
    assert torch.isclose(q, values[1]).any() and torch.isclose(q, values[2]).any()


def _replay_generator(sac):
    """A copy of the agent's generator, to redraw exactly what its next update draws."""
    g = torch.Generator(device=sac.device)
    g.set_state(sac.generator.get_state())
    return g


def test_actor_maximises_the_mean_over_all_critics():
    # distinct constant members; the loss and its gradient must be those of mean_i Q_i (not the min)
    import copy

    sac = make_sac(n_critics=4, auto_alpha=False)
    with torch.no_grad():
        sac.critic.out.bias.copy_(torch.tensor([2.0, -1.0, 0.5, -3.0]).view(-1, 1, 1))
    batch = make_batch(32)
    actor, g = copy.deepcopy(sac.actor), _replay_generator(sac)
    action, log_prob, _ = actor(batch["state"], g)
    q_all = sac.critic(batch["state"], action)
    expected = (sac.alpha * log_prob - q_all.mean(dim=0)).mean()
    with_min = (sac.alpha * log_prob - q_all.min(dim=0).values).mean()
    assert abs(expected.item() - with_min.item()) > 0.05  # the two objectives are told apart
    actor.zero_grad()
    expected.backward()
    metrics = sac.update_actor_and_alpha(batch)
    assert metrics["actor_loss"] == pytest.approx(expected.item(), abs=1e-6)
    for mine, want in zip(sac.actor.parameters(), actor.parameters()):  # .grad: before the (unclipped) step
        torch.testing.assert_close(mine.grad, want.grad, atol=1e-7, rtol=1e-5)


def test_critic_view_feeds_critic_update_td_target_and_actor_loss():
    # the action residual's view: state = [emb (2), base (3)], critic scores (emb, base + 0.1 * da)
    def view(state, action):
        return state[:, :2], state[:, 2:] + 0.1 * action

    sac = SAC(2 + A, A, "cpu", gamma=0.99 ** 4, actor_hidden=(32, 32), critic_hidden=(32, 32), critic_view=view)
    assert (sac.critic_state_dim, sac.critic_action_dim) == (2, A)
    assert sac.critic.hidden[0].weight.shape[1] == 2 + A  # the critics are built on the view's sizes
    batch = make_batch(32, state_dim=2 + A)
    # TD target: min over n_target_min random target members of Q'(view(s', a'))
    g = _replay_generator(sac)
    next_action, _, _ = sac.actor(batch["next_state"], g)
    q_next = sac.critic_target(*view(batch["next_state"], next_action))
    members = torch.randperm(q_next.shape[0], generator=g)[: sac.n_target_min]
    want = batch["reward"] + sac.gamma * (1 - batch["terminal"]) * q_next[members].min(0).values
    torch.testing.assert_close(sac.compute_td_target(batch), want)
    # critic regression on Q(view(s, a))
    q = sac.critic(*view(batch["state"], batch["action"])).detach()
    assert sac.update_critic(batch)["q_mean"] == pytest.approx(q.mean().item(), abs=1e-6)
    # actor loss on Q(view(s, pi(s)))
    g = _replay_generator(sac)
    action, log_prob, _ = sac.actor(batch["state"], g)
    want = (sac.alpha * log_prob - sac.critic(*view(batch["state"], action)).mean(0)).mean()
    assert sac.update_actor_and_alpha(batch)["actor_loss"] == pytest.approx(want.item(), abs=1e-6)


def test_alpha_moves_toward_target_entropy():
    batch = make_batch()
    low = make_sac()  # init std ~0.02: entropy ~ -2.6 per dim, below the target -0.5 per dim
    m = low.update_actor_and_alpha(batch)
    assert m["entropy"] < low.target_entropy and m["alpha"] > 0.01
    high = make_sac(target_entropy=-30.0)
    assert high.update_actor_and_alpha(batch)["alpha"] < 0.01
    fixed = make_sac(auto_alpha=False)
    assert fixed.update_actor_and_alpha(batch)["alpha"] == pytest.approx(0.01, rel=1e-6)


def test_state_dict_round_trip_continues_identically():
    torch.manual_seed(0)
    batches = [make_batch(32, seed=i) for i in range(10)]
    a = make_sac(seed=3)
    for b in batches[:5]:
        a.update(b)
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    b_agent = make_sac(seed=99)
    b_agent.load_state_dict(torch.load(buf, weights_only=True))
    assert (b_agent.critic_steps, b_agent.actor_steps) == (5, 2)
    for b in batches[5:]:
        assert a.update(b) == b_agent.update(b)
    for name in ("actor", "critic", "critic_target"):
        assert all_equal(snapshot(getattr(a, name)), snapshot(getattr(b_agent, name)))
    assert torch.equal(a.log_alpha, b_agent.log_alpha)
    assert torch.equal(a.generator.get_state(), b_agent.generator.get_state())
    for opt in ("actor_opt", "critic_opt", "alpha_opt"):
        sa, sb = getattr(a, opt).state_dict()["state"], getattr(b_agent, opt).state_dict()["state"]
        assert all(torch.equal(sa[k]["exp_avg_sq"], sb[k]["exp_avg_sq"]) for k in sa)
    with pytest.raises(ValueError, match="action_dim"):
        SAC(S, A + 1, "cpu", gamma=0.9).load_state_dict(a.state_dict())


def test_sac_solves_a_one_step_bandit():
    # reward 1 iff action[0] > 0.5, every step terminal: Q(s, pi(s)) -> 1 and tanh(mean)[0] > 0.5
    torch.manual_seed(0)
    sd, ad = 2, 2
    sac = SAC(sd, ad, "cpu", gamma=0.99, actor_hidden=(64, 64), critic_hidden=(64, 64), seed=0)
    buf = EmbeddingReplayBuffer(5000, sd, ad)
    g = torch.Generator().manual_seed(0)

    def collect(n, uniform):
        s = torch.randn(n, sd, generator=g)
        a = torch.rand(n, ad, generator=g) * 2 - 1 if uniform else sac.act(s, generator=g)
        buf.add(s, a, (a[:, 0] > 0.5).float(), s, torch.ones(n))

    collect(256, uniform=True)
    for _ in range(1000):
        collect(4, uniform=False)
        sac.update(buf.sample(128, g))
    s = torch.randn(256, sd, generator=g)
    a = sac.act(s, deterministic=True)
    assert (a[:, 0] > 0.5).all()
    assert sac.critic(s, a).mean() > 0.95


# ---- chunk helpers --------------------------------------------------------------------------

def test_discounted_chunk_reward_torch_and_numpy():
    rewards = [[0, 0, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1]]
    expected = [0.99 ** 2, 1.0, 0.0, 1 + 0.99 + 0.99 ** 2 + 0.99 ** 3]
    out_t = discounted_chunk_reward(torch.tensor(rewards, dtype=torch.float32))
    assert out_t.shape == (4,) and out_t.dtype == torch.float32
    torch.testing.assert_close(out_t, torch.tensor(expected, dtype=torch.float32))
    out_n = discounted_chunk_reward(np.array(rewards, dtype=np.float64), gamma_step=0.99)
    assert isinstance(out_n, np.ndarray) and out_n.dtype == np.float64
    np.testing.assert_allclose(out_n, expected, rtol=1e-12)
    np.testing.assert_allclose(discounted_chunk_reward(np.array([[0, 2]]), gamma_step=0.5), [1.0])


def test_chunk_gamma_and_env_steps():
    assert chunk_gamma(0.99, 4) == pytest.approx(0.96059601, abs=1e-12)
    assert chunk_gamma(0.99, 1) == pytest.approx(0.99)
    assert env_steps(1_000_000, 4) == 4_000_000
    assert env_steps(2000, 5) == 10_000
