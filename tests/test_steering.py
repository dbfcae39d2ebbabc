"""Steering interfaces: semantics of encode/act on a real (tiny) base policy, res_scale=auto, and a
short real-robosuite online run + eval_sum rebuild for every interface."""

from __future__ import annotations

import glob
import inspect
import json
import math
import os

import pytest
import torch
from conftest import compose_config
from omegaconf import OmegaConf

from zprl.common.errors import UserInputError
from zprl.common.logging import read_json_lines
from zprl.policy import baselines as B
from zprl.policy import steering as S
from zprl.policy.checkpoint import load_base_policy, read_checkpoint

INTERFACES = {"zprl": S.LatentSteering, "action_residual": B.ActionResidualSteering,
              "noise": B.NoiseSteering, "embedding_residual": B.EmbeddingResidualSteering}




def compose_cfg(name, overrides):
    cfg = compose_config(name, overrides)
    OmegaConf.resolve(cfg)
    return cfg


@pytest.fixture(scope="module")
def base_ckpt(tiny_base_ckpt):
    """The session's tiny VIB base policy (conftest: scripted lift demos -> a few offline steps)."""
    return tiny_base_ckpt


@pytest.fixture(scope="module")
def base(base_ckpt):
    policy, cfg, _ = load_base_policy(base_ckpt)
    return policy, cfg


def dataset_obs(cfg, n=8):
    return next(S.dataset_observations(cfg, n, seed=1, batch_size=n))


def seeded(fn, seed=7):
    torch.manual_seed(seed)
    return fn()


# ------------------------------------------------------------------ contract and semantics
@pytest.mark.parametrize("name", INTERFACES)
def test_contract_shapes(base, name):
    policy, cfg = base
    steering = INTERFACES[name](policy)
    obs = dataset_obs(cfg)
    enc = steering.encode(obs)
    E, Z, K, H, D = policy.obs_dim, policy.vib_latent_dim, policy.n_action_steps, policy.horizon, policy.action_dim
    expected_action_dim = {"zprl": Z, "action_residual": K * D, "noise": H * D, "embedding_residual": E}[name]
    expected_state_dim = E + {"zprl": Z, "action_residual": K * D, "noise": 0, "embedding_residual": 0}[name]
    assert steering.action_dim == expected_action_dim and steering.state_dim == expected_state_dim
    assert enc.state.shape == (8, expected_state_dim)
    rl_action = torch.rand(8, steering.action_dim) * 2 - 1
    assert steering.act(enc, rl_action).shape == (8, policy.n_action_steps, policy.action_dim)
    assert steering.act(enc.index(slice(2, 5)), rl_action[2:5]).shape == (3, K, D)
    # what a checkpoint keeps must be constructor arguments (load_steered_policy passes them back)
    assert set(steering.extra_state()) <= set(inspect.signature(INTERFACES[name]).parameters)


def test_unsteered_residual_and_latent_run_bit_identical_base_chunks(base):
    """Action 0 of the residual and of ZPRL is the same deployed base: the same chunk, bit for bit, for
    the same flow noise (rounding through normalize/unnormalize once flipped held-out outcomes)."""
    from zprl.policy.steered import SteeredPolicy

    policy, cfg = base
    obs = dataset_obs(cfg)
    chunks = {}
    for name in ("zprl", "action_residual"):
        steered = SteeredPolicy(INTERFACES[name](policy), None, deterministic=True)
        chunks[name] = seeded(lambda: steered.predict_action(obs)["action"])
    assert torch.equal(chunks["zprl"], chunks["action_residual"])


def test_zprl_moves_the_latent_through_the_decoder(base):
    policy, cfg = base
    steering = S.LatentSteering(policy, res_scale=0.5)
    enc = steering.encode(dataset_obs(cfg), deterministic=True)
    mu, _ = policy.vib_posterior(policy.encode_obs(dataset_obs(cfg)))
    torch.testing.assert_close(enc.parts["z"], mu)
    dz = torch.rand(8, policy.vib_latent_dim) * 2 - 1
    got = seeded(lambda: steering.act(enc, dz))
    want = seeded(lambda: policy.sample_action_chunk(policy.decode_latent(mu + 0.5 * dz))["action"])
    torch.testing.assert_close(got, want)
    obs = dataset_obs(cfg)  # outside seeded(): a DataLoader draws from the global RNG
    base_chunk = seeded(lambda: policy.predict_action(obs)["action"])
    torch.testing.assert_close(seeded(lambda: steering.act(enc, steering.warmup_action(8))), base_chunk)


def test_action_residual_adds_scaled_residual_in_normalized_space(base):
    policy, cfg = base
    steering = B.ActionResidualSteering(policy, alpha_res=0.1)
    obs = dataset_obs(cfg)
    enc = seeded(lambda: steering.encode(obs))
    # the base chunk in the state is the deployed base policy's chunk (same flow noise)
    base_chunk = seeded(lambda: policy.predict_action(obs)["action"])
    torch.testing.assert_close(steering.act(enc, torch.zeros(8, steering.action_dim)), base_chunk, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(enc.state[:, policy.obs_dim:], enc.parts["base"].flatten(1))
    da = torch.rand(8, steering.action_dim) * 2 - 1
    moved = policy.normalizer["action"].normalize(steering.act(enc, da)) - enc.parts["base"]
    torch.testing.assert_close(moved, 0.1 * da.view(8, policy.n_action_steps, policy.action_dim), atol=1e-5, rtol=1e-4)


def test_action_residual_warmup_is_random_and_executed(base):
    policy, cfg = base
    steering = B.ActionResidualSteering(policy, alpha_res=0.1)
    warm = steering.warmup_action(4000, torch.Generator().manual_seed(0))
    # da ~ U(-1, 1) per dimension: non-zero, bounded, mean 0, variance 1/3; reproducible from a generator
    assert warm.shape == (4000, steering.action_dim) and (warm != 0).all() and warm.abs().max() <= 1
    assert abs(warm.mean().item()) < 0.01 and abs(warm.var().item() - 1 / 3) < 0.01
    torch.testing.assert_close(warm, steering.warmup_action(4000, torch.Generator().manual_seed(0)))
    enc = steering.encode(dataset_obs(cfg))
    moved = policy.normalizer["action"].normalize(steering.act(enc, warm[:8])) - enc.parts["base"]
    torch.testing.assert_close(moved, 0.1 * warm[:8].view(8, policy.n_action_steps, policy.action_dim),
                               atol=1e-5, rtol=1e-4)
    # the base-only evaluation still runs the base chunk
    assert torch.equal(steering.base_action(8), torch.zeros(8, steering.action_dim))


def test_action_residual_critic_scores_the_executed_chunk(base):
    from zprl.rl.sac import SAC

    policy, cfg = base
    steering = B.ActionResidualSteering(policy, alpha_res=0.1)
    sac = SAC(steering.state_dim, steering.action_dim, "cpu", gamma=0.96, critic_hidden=(32, 32),
              actor_hidden=(32, 32), critic_view=steering.critic_input)
    assert (sac.critic_state_dim, sac.critic_action_dim) == (policy.obs_dim, steering.action_dim)
    enc = steering.encode(dataset_obs(cfg))
    da = torch.rand(8, steering.action_dim) * 2 - 1
    executed = policy.normalizer["action"].normalize(steering.act(enc, da)).flatten(1)
    emb = policy.encode_obs(dataset_obs(cfg))
    torch.testing.assert_close(sac.critic(*steering.critic_input(enc.state, da)), sac.critic(emb, executed),
                               atol=1e-5, rtol=1e-4)
    # (base, da) and (base + 0.1 * da, 0) execute the same chunk, so they get the same value
    moved = torch.cat([emb, executed], dim=-1)
    torch.testing.assert_close(sac.critic(*steering.critic_input(moved, torch.zeros_like(da))),
                               sac.critic(*steering.critic_input(enc.state, da)), atol=1e-5, rtol=1e-4)


def test_actor_log_std_range_per_interface_sets_the_initial_std(base):
    from zprl.rl.sac import TanhGaussianActor

    policy, cfg = base
    for name, cls in INTERFACES.items():
        steering = cls(policy)
        want = 1.0 if name == "noise" else math.exp(-4.0)  # noise [-2, 2]: std ~1; else [-10, 2]: ~0.018
        assert steering.actor_log_std_range == ((-2.0, 2.0) if name == "noise" else (-10.0, 2.0))
        actor = TanhGaussianActor(steering.state_dim, steering.action_dim, (64, 64), *steering.actor_log_std_range)
        _, log_std = actor.distribution_params(steering.encode(dataset_obs(cfg)).state)
        torch.testing.assert_close(log_std.exp(), torch.full_like(log_std, want), atol=0, rtol=0.05)


def test_action_residual_progressive_exploration(base):
    steering = B.ActionResidualSteering(base[0], progressive_steps=1000)
    gen = torch.Generator().manual_seed(0)
    da = torch.rand(20000, steering.action_dim) * 2 - 1
    # explore takes steps since the END of warm-up: probability 0 right there, 1 after H more
    assert steering.residual_probability(0) == 0.0 and steering.residual_probability(1000) == 1.0
    assert steering.explore(da, 0, gen).abs().sum() == 0
    assert steering.explore(da, 1000, gen) is da and steering.explore(da, 5000, gen) is da
    out = steering.explore(da, 250, gen)
    used = out.abs().amax(-1) > 0
    assert abs(used.float().mean().item() - 0.25) < 0.015  # binomial sd 0.003
    torch.testing.assert_close(out[used], da[used])  # a row is either the residual or exactly zero
    assert B.ActionResidualSteering(base[0], progressive_steps=0).residual_probability(0) == 1.0


def test_noise_steering_is_bounded_and_warmup_is_clipped_gaussian(base):
    policy, cfg = base
    steering = B.NoiseSteering(policy)
    enc = steering.encode(dataset_obs(cfg), deterministic=True)  # evaluation: the base conditioned as deployed
    shape = (8, policy.horizon, policy.action_dim)
    rl = torch.rand(8, steering.action_dim) * 2 - 1
    want = policy.sample_action_chunk(enc.parts["cond"], noise=1.5 * rl.view(shape))["action"]
    torch.testing.assert_close(steering.act(enc, rl), want)
    # zero action = the deployed base policy started from zero noise
    zero = policy.predict_action(dataset_obs(cfg), noise=torch.zeros(shape))["action"]
    torch.testing.assert_close(steering.act(enc, torch.zeros(8, steering.action_dim)), zero)
    warm = steering.warmup_action(4000, torch.Generator().manual_seed(0))
    assert warm.abs().max() <= 1.0
    clipped = (warm.abs() == 1.0).float().mean().item()
    assert abs(clipped - math.erfc(1.5 / math.sqrt(2))) < 0.005  # P(|N(0,1)| > 1.5) = 0.1336
    inside = warm[warm.abs() < 1.0] * 1.5
    assert abs(inside.std().item() - 0.74) < 0.02  # sd of N(0,1) truncated to +-1.5


def test_noise_collects_from_the_posterior_sample_and_evaluates_from_mu(base):
    policy, cfg = base
    steering = B.NoiseSteering(policy)
    obs = dataset_obs(cfg)
    mu, logvar = policy.vib_posterior(policy.encode_obs(obs))
    assert logvar.exp().sqrt().mean() > 0.1  # the posterior is not a point, so the two differ
    evaluated = steering.encode(obs, deterministic=True)
    torch.testing.assert_close(evaluated.parts["cond"], policy.decode_latent(mu))
    collected = seeded(lambda: steering.encode(obs))
    sample = seeded(lambda: mu + torch.randn_like(mu) * torch.exp(0.5 * logvar))
    torch.testing.assert_close(collected.parts["cond"], policy.decode_latent(sample))
    assert (collected.parts["cond"] - evaluated.parts["cond"]).abs().max() > 1e-3
    # and so the executed chunk: same noise, different condition
    rl = torch.rand(8, steering.action_dim) * 2 - 1
    assert (steering.act(collected, rl) - steering.act(evaluated, rl)).abs().max() > 1e-4
    # the base-only action is the base sampler's own unclipped N(0, I) noise
    start = steering.base_action(4000, torch.Generator().manual_seed(0)) * 1.5
    assert start.abs().max() > 1.5 and abs(start.std().item() - 1.0) < 0.01


def test_posterior_logvar_max_caps_the_collected_latent(base):
    """On unfamiliar observations the VIB's log-variance head extrapolates (can runs: up to 88): the
    authors' uncapped sample is then astronomically far from mu; posterior_logvar_max=0 keeps it no
    wider than the prior, for ZPRL's z and for the noise interface's decoded condition alike. Evaluation
    (mu) is the same either way."""
    import copy

    policy, cfg = base
    wide = copy.deepcopy(policy)
    with torch.no_grad():
        wide.vib_encoder.logvar.bias += 60.0  # sigma ~ e^30, as on the can runs' worst observations
    obs = dataset_obs(cfg)
    mu, logvar = wide.vib_posterior(wide.encode_obs(obs))
    uncapped = seeded(lambda: S.LatentSteering(wide, res_scale=0.5).encode(obs).parts["z"])
    capped = seeded(lambda: S.LatentSteering(wide, res_scale=0.5, posterior_logvar_max=0).encode(obs).parts["z"])
    assert (uncapped - mu).abs().max() > 1e10
    torch.testing.assert_close(capped, seeded(lambda: mu + torch.randn_like(mu)))  # sigma capped at 1
    evaluated = [S.LatentSteering(wide, res_scale=0.5, posterior_logvar_max=m).encode(obs, deterministic=True)
                 for m in (None, 0)]
    torch.testing.assert_close(evaluated[0].parts["z"], mu)
    torch.testing.assert_close(evaluated[1].parts["z"], mu)
    noise = seeded(lambda: B.NoiseSteering(wide, posterior_logvar_max=0).encode(obs).parts["cond"])
    torch.testing.assert_close(noise, wide.decode_latent(seeded(lambda: mu + torch.randn_like(mu))))
    # a cap above every log-variance the observations give changes nothing
    above = policy.vib_posterior(policy.encode_obs(obs))[1].max().item() + 0.1
    torch.testing.assert_close(seeded(lambda: S.LatentSteering(policy, 0.5, posterior_logvar_max=above).encode(obs).parts["z"]),
                               seeded(lambda: S.LatentSteering(policy, 0.5).encode(obs).parts["z"]), rtol=0, atol=0)
    with pytest.raises(UserInputError, match="steering.posterior_logvar_max='wide': give a number"):
        S.LatentSteering(policy, res_scale=0.5, posterior_logvar_max="wide")


def test_latent_diagnostics_log_cond_delta_rms(base):
    policy, cfg = base
    steering = S.LatentSteering(policy, res_scale=0.3)
    obs = dataset_obs(cfg)
    enc = steering.encode(obs)
    dz = torch.rand(8, policy.vib_latent_dim) * 2 - 1
    got = steering.diagnostics(enc, dz)
    emb = policy.encode_obs(obs)
    cond = policy.decode_latent(enc.parts["z"] + 0.3 * dz)
    assert got["cond_delta_rms"] == pytest.approx((cond - emb).pow(2).mean().sqrt().item(), rel=1e-5)
    assert got["rms_z"] == pytest.approx(enc.parts["z"].pow(2).mean().sqrt().item(), rel=1e-5)
    assert got["rms_scaled_dz"] == pytest.approx((0.3 * dz).pow(2).mean().sqrt().item(), rel=1e-5)
    torch.testing.assert_close(enc.parts["emb"], emb)


@pytest.mark.parametrize("name", INTERFACES)
def test_encoder_mode_train_while_collecting_eval_at_evaluation(base, name):
    # the obs encoder runs in train mode (random crop) for deterministic=False, eval mode otherwise,
    # and everything is back in eval mode afterwards
    policy, cfg = base
    steering = INTERFACES[name](policy)
    modes = []
    hook = policy.obs_encoder.register_forward_pre_hook(lambda module, args: modes.append(module.training))
    try:
        steering.encode(dataset_obs(cfg))
        steering.encode(dataset_obs(cfg), deterministic=True)
    finally:
        hook.remove()
    assert modes == [True, False]
    assert not any(m.training for m in policy.modules())


def test_image_crop_random_while_collecting_centered_at_evaluation():
    from zprl.model.normalizer import LinearNormalizer
    from zprl.model.obs_encoder import MultiImageObsEncoder
    from zprl.policy.flow_vib import FlowMatchVIBUnetImagePolicy

    meta = {"obs": {"agentview_image": {"shape": [3, 20, 20], "type": "rgb"},
                    "robot0_eef_pos": {"shape": [3], "type": "low_dim"}}, "action": {"shape": [4]}}
    torch.manual_seed(0)
    enc = MultiImageObsEncoder(meta, crop_shape=(16, 16), feature_dim=8)
    policy = FlowMatchVIBUnetImagePolicy(meta, enc, down_dims=(16, 32), diffusion_step_embed_dim=16,
                                         vib_latent_dim=4)
    normalizer = LinearNormalizer()
    normalizer.fit({"action": torch.randn(100, 4), "robot0_eef_pos": torch.randn(100, 3)})
    policy.set_normalizer(normalizer)
    steering = S.LatentSteering(policy)
    obs = {"agentview_image": torch.rand(4, 1, 3, 20, 20), "robot0_eef_pos": torch.randn(4, 1, 3)}
    centered = steering.encode(obs, deterministic=True).parts["emb"]
    torch.testing.assert_close(steering.encode(obs, deterministic=True).parts["emb"], centered)
    policy.obs_encoder.eval()
    torch.testing.assert_close(policy.encode_obs(obs), centered)  # the center crop
    cropped = [seeded(lambda: steering.encode(obs).parts["emb"], seed=s) for s in (0, 1)]
    assert (cropped[0] - centered).abs().max() > 1e-4 and (cropped[0] - cropped[1]).abs().max() > 1e-4
    assert not any(m.training for m in policy.modules())


def test_embedding_residual_conditions_the_unet_directly(base):
    policy, cfg = base
    steering = B.EmbeddingResidualSteering(policy)
    obs = dataset_obs(cfg)
    enc = steering.encode(obs)
    d = torch.rand(8, policy.obs_dim) * 2 - 1
    emb = policy.encode_obs(obs)
    torch.testing.assert_close(seeded(lambda: steering.act(enc, d)),
                               seeded(lambda: policy.sample_action_chunk(emb + 0.025 * d)["action"]))
    no_vib = seeded(lambda: policy.predict_action(obs, use_vib=False)["action"])
    torch.testing.assert_close(seeded(lambda: steering.act(enc, torch.zeros(8, policy.obs_dim))), no_vib)


def test_res_scale_auto_hits_the_target_ratio(base):
    policy, cfg = base
    steering = S.LatentSteering(policy, res_scale="auto", calibration_target=0.2, calibration_samples=10000)
    with pytest.raises(RuntimeError, match="prepare"):
        steering.act(steering.encode(dataset_obs(cfg)), torch.zeros(8, policy.vib_latent_dim))
    logged = steering.prepare(cfg)
    assert logged["steering/res_scale"] == steering.res_scale > 0
    # independent Monte Carlo check: posterior samples of every dataset observation, dz ~ U(-1, 1)
    torch.manual_seed(0)
    obs = list(S.dataset_observations(cfg, 10000, batch_size=64))
    zs = [S.LatentSteering(policy).encode(o).parts["z"] for _ in range(100) for o in obs]
    rms_z = torch.cat(zs).pow(2).mean().sqrt().item()
    assert logged["steering/calibration_rms_z"] == pytest.approx(rms_z, rel=0.02)
    dz = torch.rand(200000, policy.vib_latent_dim) * 2 - 1
    ratio = (steering.res_scale * dz).pow(2).mean().sqrt().item() / rms_z
    assert ratio == pytest.approx(0.2, rel=0.02)
    assert S.res_scale_for_ratio(2.0, 0.1) == pytest.approx(0.2 * math.sqrt(3))
    assert steering.extra_state() == {"res_scale": steering.res_scale}


def test_res_scale_auto_without_dataset_is_one_line_error(base, tmp_path):
    policy, cfg = base
    cfg = OmegaConf.create(OmegaConf.to_container(cfg))
    missing = str(tmp_path / "gone.hdf5")
    cfg.task.dataset.dataset_path = missing
    with pytest.raises(UserInputError) as err:
        S.LatentSteering(policy, res_scale="auto").prepare(cfg)
    assert missing in str(err.value) and "steering.res_scale" in str(err.value) and "\n" not in str(err.value)


def test_reach_is_measured_with_shared_noise_and_match_action_residual_equalises_it(base):
    from zprl.policy.calibration import ChunkReach

    policy, cfg = base
    obs = dataset_obs(cfg, 64)
    reach = ChunkReach(policy, obs, seed=3)
    # the same flow noise on both sides: no perturbation, no distance
    assert reach.latent(0.0) == 0.0 and reach.action_residual(0.0) == 0.0
    assert reach.flow_noise_m > 0 and reach.latent(0.5) > reach.latent(0.1) > 0
    # the action residual acts linearly on the normalized chunk, so its reach is linear in alpha_res
    assert reach.action_residual(0.2) == pytest.approx(2 * reach.action_residual(0.1), rel=1e-4)
    # the embedding residual is measured from its own base (the U-Net on the raw embedding) and grows with
    # its scale; noise steering's reach is of the order of two N(0, I) starts' spread
    assert reach.embedding_residual(0.0) == 0.0 < reach.embedding_residual(0.025) < reach.embedding_residual(0.5)
    assert 0.2 * reach.flow_noise_m < reach.noise_steering(1.5) < 5 * reach.flow_noise_m

    steering = S.LatentSteering(policy, res_scale="match_action_residual", calibration_samples=64,
                                calibration_seed=3, calibration_alpha_res=0.1)
    logged = steering.prepare(cfg)
    lam = steering.res_scale
    assert logged["steering/res_scale"] == lam > 0 and steering.extra_state() == {"res_scale": lam}
    # measured again from scratch on the same observations and draws: equal reach
    again = ChunkReach(policy, next(S.dataset_observations(cfg, 64, seed=3, batch_size=64)), seed=3)
    assert again.latent(lam) == pytest.approx(again.action_residual(0.1), rel=0.01)
    assert logged["steering/calibration_reach_m"] == pytest.approx(again.action_residual(0.1), rel=1e-5)
    # a larger residual to match needs a larger lambda
    wider = S.LatentSteering(policy, res_scale="match_action_residual", calibration_samples=64,
                             calibration_seed=3, calibration_alpha_res=0.3)
    wider.prepare(cfg)
    assert wider.res_scale > 1.5 * lam


def test_res_scale_must_be_a_number_or_a_rule(base):
    with pytest.raises(UserInputError, match="steering.res_scale='bigger'.*auto, match_action_residual"):
        S.LatentSteering(base[0], res_scale="bigger")
    with pytest.raises(RuntimeError, match="match_action_residual is calibrated by prepare"):
        steering = S.LatentSteering(base[0], res_scale="match_action_residual")
        steering.act(steering.encode(dataset_obs(base[1])), torch.zeros(8, base[0].vib_latent_dim))


def test_base_noise_spread_prints_the_reach_table(base_ckpt, capsys):
    from conftest import load_script

    script = load_script("scripts/base_noise_spread.py")
    assert script.main([base_ckpt, "-n", "32", "--lambdas", "0.1,1"]) == 0
    rows = [line.split("|")[1:-1] for line in capsys.readouterr().out.splitlines() if line.startswith(f"| {base_ckpt}")]
    # checkpoint, flow noise, residual, 2 lambdas, embedding residual, noise steering, matching lambda
    assert len(rows) == 2 and len(rows[1]) == 8
    reach = [float(c) for c in rows[1][1:]]
    assert all(v > 0 for v in reach) and reach[3] > reach[2]  # lambda 1 reaches further than 0.1


def test_resume_refuses_another_interface(base):
    steering = B.NoiseSteering(base[0])
    steering.load_extra_state({"name": "noise", "noise_bound": 2.0})
    assert steering.noise_bound == 2.0
    with pytest.raises(UserInputError, match="steering=zprl"):
        steering.load_extra_state({"name": "zprl", "res_scale": 0.5})


# ------------------------------------------------------------------ short online runs (real robosuite)
TINY_RUN = ["training.device=cpu", "logging.mode=disabled", "online_task.n_envs=2", "online_task.n_eval_envs=1",
            "online_task.n_eval_episodes=1", "online_task.n_eval_vis=0", "online_task.max_steps=40",
            "training.total_agent_steps=48", "training.warmup_agent_steps=16", "training.training_freq=8",
            "training.batch_size=16", "training.buffer_size=1000", "training.eval_every=48",
            "training.checkpoint_every=48", "training.log_every=8"]
RUN_OVERRIDES = {"zprl": ["steering.res_scale=auto"], "action_residual": ["steering.progressive_steps=16"],
                 "noise": [], "embedding_residual": []}


def run_online(base_ckpt, name, out_dir):
    """The run's logged records, and the workspace (its buffer, SAC and steering) after it.

    Also checks, transition by transition, that the stored action is the one just executed.
    """
    from zprl.workspace.online import OnlineWorkspace

    cfg = compose_cfg("train_online_vib_robomimic_workspace", [
        "online_task=lift_lowdim_abs", f"online_task.base_ckpt={base_ckpt}", f"steering={name}",
        *TINY_RUN, *RUN_OVERRIDES[name]])
    workspace = OnlineWorkspace(cfg, output_dir=out_dir)
    executed, act, add = [], workspace.steering.act, workspace.buffer.add

    def act_spy(enc, rl_action):
        executed.append(rl_action.clone())
        return act(enc, rl_action)

    def add_spy(state, action, *args, **kwargs):
        # the loop acts, steps, then stores: the last act() call is this transition's
        assert torch.equal(action, executed[-1]), "the stored action differs from the executed one"
        executed.append(None)  # an evaluation's act() calls may follow; none may be mistaken for the next
        return add(state, action, *args, **kwargs)

    workspace.steering.act, workspace.buffer.add = act_spy, add_spy
    workspace.run()
    return read_json_lines(os.path.join(out_dir, "logs.json.txt")), workspace


@pytest.mark.parametrize("name", INTERFACES)  # every interface trains on real robosuite in the default suite (~15 s each)
def test_online_run_and_eval_sum_rebuild(base_ckpt, name, tmp_path):
    import eval_sum
    from zprl.policy.steered import load_steered_policy

    records, workspace = run_online(base_ckpt, name, str(tmp_path / "run"))
    evals = [r for r in records if "eval/success_rate" in r]
    assert [r["eval/base_only"] for r in evals] == [1, 0] and [r["env_steps"] for r in evals] == [0, 48 * 4]
    train = [r for r in records if "train/warmup" in r]
    assert [r["train/warmup"] for r in train] == [1, 1, 0, 0, 0, 0]
    assert train[-1]["updates"] > 0 and train[-1]["buffer_size"] == 48
    assert all("train/action_delta" in r for r in train)

    ckpt = os.path.join(str(tmp_path / "run"), "checkpoints", "step_000048.ckpt")
    state = read_checkpoint(ckpt)["state"]
    assert state["steering"]["name"] == name
    policy, _, _ = load_steered_policy(ckpt)
    assert type(policy.steering) is INTERFACES[name]
    assert policy.steering.extra_state() == {k: v for k, v in state["steering"].items() if k != "name"}
    if name == "zprl":  # calibrated once, logged, stored, rebuilt
        (cal,) = [r for r in records if "steering/res_scale" in r]
        assert state["steering"]["res_scale"] == pytest.approx(cal["steering/res_scale"]) and cal["env_steps"] == 0
        assert [r for r in train if "rms_ratio" in r][-1]["rms_ratio"] > 0
        assert [r for r in train if "cond_delta_rms" in r][-1]["cond_delta_rms"] > 0
    # the SAC the workspace built: the interface's log-std range (sac.log_std_min/max null) and view
    assert (workspace.sac.actor.log_std_min, workspace.sac.actor.log_std_max) == INTERFACES[name].actor_log_std_range
    assert workspace.sac.critic_view == workspace.steering.critic_input
    stored = workspace.buffer.data["action"][:48].view(24, 2, -1)  # (agent step / 2 envs, env, action)
    if name == "action_residual":
        assert state["steering"]["progressive_steps"] == 16
        assert workspace.sac.critic_action_dim == workspace.steering.action_dim
        assert workspace.sac.critic_state_dim == workspace.steering.emb_dim
        assert (stored[:8] != 0).all()  # warm-up (agent steps 0-15): random residuals, stored
        assert (stored[8] == 0).all()   # agent step 16, the end of warm-up: residual probability 0
        assert (stored[16:].abs().amax(-1) > 0).all()  # 16 agent steps later: probability 1
        assert train[-1]["residual_used"] == 1.0
    for key, value in state["sac"]["actor"].items():
        torch.testing.assert_close(policy.actor.state_dict()[key], value)

    out = str(tmp_path / "eval")
    assert eval_sum.main(["-c", ckpt, "-o", out, "-d", "cpu", "-n", "1", "--n_vis", "0", "--n_envs", "1"]) == 0
    log = json.load(open(os.path.join(out, "eval_log.json")))
    assert log["n_episodes"] == 1 and log["steering"]["name"] == name and 0.0 <= log["mean_score"] <= 1.0
    assert not glob.glob(os.path.join(out, "media", "*.mp4"))


def test_embedding_residual_matches_the_action_residual_reach(base):
    from zprl.policy.calibration import ChunkReach

    policy, cfg = base
    steering = B.EmbeddingResidualSteering(policy, res_scale="match_action_residual", calibration_samples=64,
                                           calibration_seed=3, calibration_alpha_res=0.1)
    with pytest.raises(RuntimeError, match="calibrated by prepare"):
        steering.act(steering.encode(dataset_obs(cfg)), torch.zeros(8, steering.action_dim))
    logged = steering.prepare(cfg)
    scale = steering.res_scale
    assert logged["steering/res_scale"] == scale > 0 and steering.extra_state() == {"res_scale": scale}
    again = ChunkReach(policy, next(S.dataset_observations(cfg, 64, seed=3, batch_size=64)), seed=3)
    assert again.embedding_residual(scale) == pytest.approx(again.action_residual(0.1), rel=0.01)
    # a number stays a number, prepare leaves it alone; anything else is refused in one line
    fixed = B.EmbeddingResidualSteering(policy, res_scale=0.025)
    assert fixed.prepare(cfg) == {} and fixed.res_scale == 0.025
    with pytest.raises(UserInputError, match="steering.res_scale='auto'.*match_action_residual"):
        B.EmbeddingResidualSteering(policy, res_scale="auto")


def test_configs_written_before_the_baselines_moved_still_instantiate(base):
    import hydra

    policy = base[0]
    for name in ("ActionResidualSteering", "NoiseSteering", "EmbeddingResidualSteering"):
        old = hydra.utils.instantiate({"_target_": f"zprl.policy.steering.{name}"}, policy=policy)
        assert type(old) is getattr(B, name)
    with pytest.raises(AttributeError):
        S.NoSuchSteering  # noqa: B018
