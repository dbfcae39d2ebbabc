"""FlowMatchVIBUnetImagePolicy: gradient routing, overrides, overfitting, state round trip, images."""

import math

import pytest
import torch

from zprl.common.errors import UserInputError
from zprl.model.normalizer import LinearNormalizer
from zprl.model.obs_encoder import LowDimObsEncoder, MultiImageObsEncoder
from zprl.policy.flow_vib import FlowMatchVIBUnetImagePolicy

LOW_META = {"obs": {"state": {"shape": [4], "type": "low_dim"}}, "action": {"shape": [3]}}
DEMO_LEN = 40
WINDOW_STARTS = (0, 8, 16, 24)




def demo():
    """One smooth synthetic demonstration: actions (L+16, 3) on unequal ranges and states (L+16, 4)."""
    t = torch.arange(DEMO_LEN + 16, dtype=torch.float32)
    phase = 2 * math.pi * t / DEMO_LEN
    actions = torch.stack([0.2 + 0.1 * phase.sin(), -0.1 + 0.05 * phase.cos(), (2 * phase).sin()], dim=-1)
    states = torch.cat([actions, (phase / 2).sin()[:, None]], dim=-1)
    return states, actions


def demo_batch(repeat=2, n_obs_steps=1, horizon=16):
    states, actions = demo()
    starts = torch.tensor(WINDOW_STARTS).repeat(repeat)
    obs = torch.stack([states[s:s + n_obs_steps] for s in starts])
    act = torch.stack([actions[s:s + horizon] for s in starts])
    return {"obs": {"state": obs}, "action": act}


def fitted_normalizer():
    states, actions = demo()
    normalizer = LinearNormalizer()
    normalizer.fit({"action": actions, "state": states})
    return normalizer


def low_dim_policy(use_vib=True, n_obs_steps=1, seed=0, **kw):
    torch.manual_seed(seed)
    enc = LowDimObsEncoder(LOW_META, hidden_dims=[64], output_dim=32, n_obs_steps=n_obs_steps)
    policy = FlowMatchVIBUnetImagePolicy(
        LOW_META, enc, horizon=16, n_action_steps=4, n_obs_steps=n_obs_steps, down_dims=(16, 32),
        diffusion_step_embed_dim=16, vib_latent_dim=4, use_vib=use_vib, **kw,
    )
    policy.set_normalizer(fitted_normalizer())
    return policy


def grads(module):
    return [p.grad for p in module.parameters()]


# ---------------------------------------------------------------- gradient routing
def test_vib_path_leaves_unet_and_encoder_without_gradient():
    policy = low_dim_policy()
    batch = demo_batch()
    obs_emb = policy.encode_obs(batch["obs"])
    actions = policy.normalizer["action"].normalize(batch["action"])
    vib_loss, metrics = policy.vib_path_loss(obs_emb, actions)
    vib_loss.backward()
    assert all(g is None for g in grads(policy.model))
    assert all(g is None for g in grads(policy.obs_encoder))
    for part in (policy.vib_encoder, policy.vib_decoder):
        assert all(g is not None and g.abs().sum() > 0 for g in grads(part))
    assert set(metrics) == {"vib_flow_loss", "kl", "recon", "vib_loss"}

    policy.zero_grad(set_to_none=True)
    policy.il_path_loss(policy.encode_obs(batch["obs"]), actions).backward()
    assert all(g is None for g in grads(policy.vib_encoder)) and all(g is None for g in grads(policy.vib_decoder))
    assert sum(g.abs().sum() for g in grads(policy.model)) > 0
    assert sum(g.abs().sum() for g in grads(policy.obs_encoder)) > 0


def test_total_loss_gives_unet_exactly_the_il_gradient():
    policy = low_dim_policy()
    batch = demo_batch()
    torch.manual_seed(1)
    loss, metrics = policy.compute_loss(batch)
    loss.backward()
    total_grads = [g.clone() for g in grads(policy.model)]
    enc_grads = [g.clone() for g in grads(policy.obs_encoder)]
    assert set(metrics) == {"il_loss", "vib_flow_loss", "kl", "recon", "vib_loss", "loss"}
    assert metrics["loss"] == pytest.approx(metrics["il_loss"] + metrics["vib_loss"], rel=1e-5)

    policy.zero_grad(set_to_none=True)
    torch.manual_seed(1)  # the il path draws its noise and t first, so it sees the same draws
    actions = policy.normalizer["action"].normalize(batch["action"])
    il = policy.il_path_loss(policy.encode_obs(batch["obs"]), actions)
    assert il.item() == metrics["il_loss"]
    il.backward()
    for a, b in zip(total_grads, grads(policy.model)):
        assert torch.equal(a, b)
    for a, b in zip(enc_grads, grads(policy.obs_encoder)):
        assert torch.equal(a, b)


def test_no_vib_policy_trains_il_only():
    policy = low_dim_policy(use_vib=False)
    assert not hasattr(policy, "vib_encoder")
    loss, metrics = policy.compute_loss(demo_batch())
    assert set(metrics) == {"il_loss", "loss"} and loss.item() == metrics["il_loss"]
    with pytest.raises(ValueError, match="use_vib=False"):
        policy.vib_posterior(torch.zeros(1, 32))


# ---------------------------------------------------------------- predict_action
def test_predict_action_overrides():
    policy = low_dim_policy().eval()
    obs = demo_batch(repeat=1)["obs"]
    noise = torch.randn(4, 16, 3, generator=torch.Generator().manual_seed(0))
    base = policy.predict_action(obs, noise=noise)
    assert base["action"].shape == (4, 4, 3) and base["action_pred"].shape == (4, 16, 3)
    assert base["obs_emb"].shape == (4, 32) and base["z"].shape == base["z_mu"].shape == (4, 4)
    # deterministic: z is the posterior mean and cond its decoding; fixed noise repeats exactly
    assert torch.equal(base["z"], base["z_mu"])
    torch.testing.assert_close(base["cond"], policy.decode_latent(base["z_mu"]))
    again = policy.predict_action(obs, noise=noise)
    assert torch.equal(again["action_pred"], base["action_pred"])
    fresh = policy.predict_action(obs)
    assert not torch.equal(fresh["action_pred"], base["action_pred"])

    z = torch.randn(4, 4)
    with_z = policy.predict_action(obs, z=z, noise=noise)
    assert torch.equal(with_z["z"], z)
    torch.testing.assert_close(with_z["cond"], policy.decode_latent(z))
    assert not torch.allclose(with_z["action_pred"], base["action_pred"])
    dz = torch.full((4, 4), 0.5)
    with_dz = policy.predict_action(obs, dz=dz, noise=noise)
    torch.testing.assert_close(with_dz["z"], base["z_mu"] + dz)
    with_both = policy.predict_action(obs, z=z, dz=dz, noise=noise)
    torch.testing.assert_close(with_both["z"], z + dz)

    cond = torch.randn(4, 32)
    with_cond = policy.predict_action(obs, cond=cond, noise=noise)
    assert torch.equal(with_cond["cond"], cond)
    torch.testing.assert_close(with_cond["action_pred"], policy.sample_action_chunk(cond, noise)["action_pred"])

    direct = policy.predict_action(obs, use_vib=False, noise=noise)
    assert torch.equal(direct["cond"], direct["obs_emb"])
    assert not torch.allclose(direct["action_pred"], base["action_pred"])

    sampled = policy.predict_action(obs, deterministic=False, noise=noise)
    assert not torch.allclose(sampled["z"], sampled["z_mu"])
    with pytest.raises(ValueError, match="noise must have shape"):
        policy.predict_action(obs, noise=torch.zeros(4, 8, 3))


def test_start_noise_scale_scales_the_drawn_start_only():
    # eval_base.py --noise_scale: the flow starts from scale * N(0, I) when no noise is given
    policy = low_dim_policy().eval()
    obs = demo_batch(repeat=1)["obs"]
    torch.manual_seed(3)
    drawn = torch.randn(4, 16, 3)
    for scale in (1.0, 0.5, 0.0):
        policy.start_noise_scale = scale
        torch.manual_seed(3)
        got = policy.predict_action(obs)["action_pred"]
        assert torch.equal(got, policy.predict_action(obs, noise=scale * drawn)["action_pred"]), scale
    # a given noise is used as it is
    assert torch.equal(policy.predict_action(obs, noise=drawn)["action_pred"],
                       low_dim_policy().eval().predict_action(obs, noise=drawn)["action_pred"])
    assert "start_noise_scale" not in str(policy.state_dict().keys())


def test_executed_actions_follow_obs_steps():
    policy = low_dim_policy(n_obs_steps=2).eval()
    out = policy.predict_action(demo_batch(repeat=1, n_obs_steps=2)["obs"])
    assert torch.equal(out["action"], out["action_pred"][:, 1:5])
    with pytest.raises(UserInputError, match="task.obs_encoder.n_obs_steps=1"):
        FlowMatchVIBUnetImagePolicy(LOW_META, LowDimObsEncoder(LOW_META, n_obs_steps=1), n_obs_steps=2)
    with pytest.raises(UserInputError, match="horizon=12 must be divisible by 8"):
        FlowMatchVIBUnetImagePolicy(LOW_META, LowDimObsEncoder(LOW_META), horizon=12, down_dims=(8, 16, 32, 64))
    with pytest.raises(UserInputError, match="exceeds horizon=16"):
        FlowMatchVIBUnetImagePolicy(LOW_META, LowDimObsEncoder(LOW_META), n_action_steps=17)


# ---------------------------------------------------------------- learning
def test_overfits_one_demo_with_two_euler_steps():
    """Four windows of one demo (each needs its own observation) reproduced at low error."""
    policy = low_dim_policy(seed=0)
    batch = demo_batch(repeat=8)
    steps = 400
    opt = torch.optim.AdamW(policy.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    first = None
    for _ in range(steps):
        loss, metrics = policy.compute_loss(batch)
        first = first or metrics
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    policy.eval()
    obs = demo_batch(repeat=1)["obs"]
    target = policy.normalizer["action"].normalize(demo_batch(repeat=1)["action"])
    noise = torch.randn(4, 16, 3, generator=torch.Generator().manual_seed(1))
    assert policy.flow.num_inference_steps == 2
    for use_vib in (True, False):
        pred = policy.predict_action(obs, noise=noise, use_vib=use_vib)["action_pred"]
        mse = (policy.normalizer["action"].normalize(pred) - target).pow(2).mean().item()
        assert mse < 0.05, (use_vib, mse)
    # the chunks differ between windows (by far more than the error), so the observation is used
    spread = (target - target.mean(dim=0, keepdim=True)).pow(2).mean().item()
    assert spread > 0.2
    assert metrics["il_loss"] < 0.5 * first["il_loss"]


# ---------------------------------------------------------------- persistence
def test_state_dict_round_trip_includes_normalizer():
    policy = low_dim_policy(seed=0).eval()
    state = policy.state_dict()
    assert any(k.startswith("normalizer.") for k in state)
    torch.manual_seed(123)  # different init, and no normalizer fitted
    enc = LowDimObsEncoder(LOW_META, hidden_dims=[64], output_dim=32)
    clone = FlowMatchVIBUnetImagePolicy(
        LOW_META, enc, down_dims=(16, 32), diffusion_step_embed_dim=16, vib_latent_dim=4
    ).eval()
    clone.load_state_dict(state)
    obs = demo_batch(repeat=1)["obs"]
    noise = torch.randn(4, 16, 3)
    a, b = policy.predict_action(obs, noise=noise), clone.predict_action(obs, noise=noise)
    for key in ("action", "action_pred", "obs_emb", "z", "cond"):
        assert torch.equal(a[key], b[key])


# ---------------------------------------------------------------- images
def test_tiny_image_policy_forward_backward_84px():
    meta = {
        "obs": {
            "agentview_image": {"shape": [3, 84, 84], "type": "rgb"},
            "robot0_eye_in_hand_image": {"shape": [3, 84, 84], "type": "rgb"},
            "robot0_eef_pos": {"shape": [3], "type": "low_dim"},
        },
        "action": {"shape": [10]},
    }
    torch.manual_seed(0)
    enc = MultiImageObsEncoder(meta, crop_shape=(76, 76), feature_dim=64)
    policy = FlowMatchVIBUnetImagePolicy(meta, enc, down_dims=(32, 64), diffusion_step_embed_dim=32)
    normalizer = LinearNormalizer()
    normalizer.fit({"action": torch.randn(100, 10), "robot0_eef_pos": torch.randn(100, 3)})
    policy.set_normalizer(normalizer)
    batch = {
        "obs": {
            "agentview_image": torch.rand(2, 1, 3, 84, 84),
            "robot0_eye_in_hand_image": torch.rand(2, 1, 3, 84, 84),
            "robot0_eef_pos": torch.randn(2, 1, 3),
        },
        "action": torch.randn(2, 16, 10),
    }
    loss, metrics = policy.compute_loss(batch)
    assert torch.isfinite(loss)
    loss.backward()
    trunk = policy.obs_encoder.rgb_models["agentview_image"].trunk
    assert trunk[0].weight.grad.abs().sum() > 0  # the first conv learns from the il path
    policy.eval()
    out = policy.predict_action(batch["obs"])
    assert out["action"].shape == (2, 4, 10) and out["obs_emb"].shape == (2, 2 * 64 + 3)
    assert torch.isfinite(out["action_pred"]).all()


def test_checkpoint_from_the_old_uniform_grid_sampler_is_refused(tmp_path):
    from zprl.common.checkpoint import atomic_save
    from zprl.policy.checkpoint import load_base_policy

    old_cfg = {"policy": {"_target_": "zprl.policy.flow_vib.FlowMatchVIBUnetImagePolicy",
                          "num_inference_steps": 2, "num_train_timesteps": 100}}
    path = atomic_save({"cfg": old_cfg, "state": {}}, str(tmp_path / "old.ckpt"))
    with pytest.raises(UserInputError, match="old uniform-grid flow sampler.*retrain"):
        load_base_policy(path)
