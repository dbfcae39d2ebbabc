"""Model pieces: U-Net, image encoder, obs encoders, VIB, rectified flow, EMA."""

import math

import pytest
import torch
from torch import nn

from zprl.model.ema import make_ema
from diffusers import FlowMatchEulerDiscreteScheduler

from zprl.model.flow import FlowMatchSampler
from zprl.model.obs_encoder import LowDimObsEncoder, MultiImageObsEncoder, crop_images
from zprl.model.unet1d import ConditionalUnet1D
from zprl.model.vib import VIBDecoder, VIBEncoder, kl_to_standard_normal
from zprl.model.vision import ResNetImageEncoder, SpatialEmbeddingPool

IMAGE_META = {
    "obs": {
        "robot0_eye_in_hand_image": {"shape": [3, 84, 84], "type": "rgb"},
        "agentview_image": {"shape": [3, 84, 84], "type": "rgb"},
        "robot0_gripper_qpos": {"shape": [2], "type": "low_dim"},
        "robot0_eef_pos": {"shape": [3], "type": "low_dim"},
    },
    "action": {"shape": [10]},
}


def tiny_unet(cond_dim=6, action_dim=3):
    return ConditionalUnet1D(action_dim, cond_dim, diffusion_step_embed_dim=16, down_dims=(32, 64), n_groups=8)


# ---------------------------------------------------------------- U-Net
def test_unet_shapes_and_levels():
    torch.manual_seed(0)
    net = ConditionalUnet1D(10, 12, diffusion_step_embed_dim=32, down_dims=(32, 64, 128))
    out = net(torch.randn(8, 16, 10), torch.rand(8) * 100, torch.randn(8, 12))
    assert out.shape == (8, 16, 10)
    with pytest.raises(ValueError, match="divisible by 4"):
        net(torch.randn(2, 10, 10), 5, torch.randn(2, 12))
    with pytest.raises(ValueError, match="global_cond"):
        net(torch.randn(2, 16, 10), 5, torch.randn(2, 11))


def test_unet_film_conditioning_and_timestep_change_output():
    torch.manual_seed(0)
    net = tiny_unet().eval()
    x = torch.randn(4, 16, 3)
    cond_a, cond_b = torch.randn(4, 6), torch.randn(4, 6)
    with torch.no_grad():
        base = net(x, 10.0, cond_a)
        same = net(x, 10.0, cond_a.clone())
        other_cond = net(x, 10.0, cond_b)
        other_t = net(x, 60.0, cond_a)
    assert torch.equal(base, same)
    # Per-sample change, not only on average: every sample's output moves with its condition.
    assert ((base - other_cond).abs().flatten(1).max(dim=1).values > 1e-4).all()
    assert ((base - other_t).abs().flatten(1).max(dim=1).values > 1e-4).all()
    # Samples do not leak into each other (GroupNorm, no batch statistics).
    with torch.no_grad():
        first_alone = net(x[:1], 10.0, cond_a[:1])
    torch.testing.assert_close(first_alone, base[:1], atol=1e-5, rtol=1e-5)


def test_unet_global_cond_gets_gradient():
    net = tiny_unet()
    cond = torch.randn(2, 6, requires_grad=True)
    net(torch.randn(2, 16, 3), torch.tensor([3.0, 70.0]), cond).pow(2).sum().backward()
    assert cond.grad.abs().sum() > 0


# ---------------------------------------------------------------- vision
def test_resnet_has_groupnorm_everywhere_and_256_features():
    enc = ResNetImageEncoder((76, 76), feature_dim=256)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in enc.modules())
    norms = [m for m in enc.modules() if isinstance(m, nn.GroupNorm)]
    assert len(norms) == 20  # ResNet18: stem 1 + 8 blocks x 2 + 3 downsample shortcuts
    assert all(m.num_groups == m.num_channels // 16 for m in norms)
    assert not any(isinstance(m, (nn.AdaptiveAvgPool2d, nn.Linear)) for m in enc.trunk.modules())
    assert enc(torch.rand(2, 3, 76, 76)).shape == (2, 256)


def test_spatial_pool_starts_as_average_pool_and_learns_locations():
    torch.manual_seed(0)
    pool = SpatialEmbeddingPool(8, (3, 3), out_dim=4)
    fmap = torch.randn(2, 8, 3, 3)
    expected = pool.proj(fmap).mean(dim=(2, 3))
    torch.testing.assert_close(pool(fmap), expected)
    with torch.no_grad():
        pool.embedding[4] = 50.0  # all weight on the center location
    torch.testing.assert_close(pool(fmap), pool.proj(fmap)[:, :, 1, 1], atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------- obs encoders
def test_crop_train_random_eval_center():
    images = torch.arange(2 * 84 * 84, dtype=torch.float32).reshape(2, 1, 84, 84).repeat(16, 3, 1, 1)
    center = crop_images(images, (76, 76), random=False)
    assert center.shape == (32, 3, 76, 76)
    assert torch.equal(center, images[:, :, 4:80, 4:80])
    torch.manual_seed(0)
    rand = crop_images(images, (76, 76), random=True)
    assert rand.shape == (32, 3, 76, 76)
    offsets = set()
    for i in range(32):
        # pixel values encode their position: the top-left value gives the window's offset
        flat = int(rand[i, 0, 0, 0].item()) - (i % 2) * 84 * 84
        top, left = divmod(flat, 84)
        assert torch.equal(rand[i], images[i, :, top:top + 76, left:left + 76])
        offsets.add((top, left))
    assert len(offsets) > 8  # independent windows per image


def test_multi_image_encoder_train_vs_eval_and_layout():
    torch.manual_seed(0)
    enc = MultiImageObsEncoder(IMAGE_META, crop_shape=(76, 76), feature_dim=256)
    assert enc.rgb_keys == ["agentview_image", "robot0_eye_in_hand_image"]
    assert enc.low_dim_keys == ["robot0_eef_pos", "robot0_gripper_qpos"]
    assert enc.output_dim() == 2 * 256 + 3 + 2
    assert enc.rgb_models["agentview_image"] is not enc.rgb_models["robot0_eye_in_hand_image"]
    obs = {k: torch.rand(3, 1, *v["shape"]) for k, v in IMAGE_META["obs"].items()}
    enc.eval()
    with torch.no_grad():
        e1, e2 = enc(obs), enc(obs)
    assert e1.shape == (3, enc.output_dim())
    assert torch.equal(e1, e2)  # center crop: no randomness in eval
    low = torch.cat([obs["robot0_eef_pos"][:, 0], obs["robot0_gripper_qpos"][:, 0]], dim=-1)
    assert torch.equal(e1[:, -5:], low)
    enc.train()
    with torch.no_grad():
        t1, t2 = enc(obs), enc(obs)
    assert not torch.equal(t1[:, :512], t2[:, :512])  # random crops differ between calls
    shared = MultiImageObsEncoder(IMAGE_META, feature_dim=64, share_rgb_model=True)
    assert shared.rgb_models["agentview_image"] is shared.rgb_models["robot0_eye_in_hand_image"]


def test_obs_encoders_flatten_obs_steps():
    torch.manual_seed(0)
    low_meta = {"obs": {"b": {"shape": [2]}, "a": {"shape": [3], "type": "low_dim"}}, "action": {"shape": [4]}}
    enc = LowDimObsEncoder(low_meta, hidden_dims=[32], output_dim=16, n_obs_steps=2)
    obs = {"a": torch.randn(5, 2, 3), "b": torch.randn(5, 2, 2)}
    assert enc.output_dim() == 16 and enc(obs).shape == (5, 16)
    assert enc.mlp[0].in_features == 2 * 5
    with pytest.raises(ValueError, match="observation steps"):
        enc({"a": torch.randn(5, 1, 3), "b": torch.randn(5, 1, 2)})
    with pytest.raises(ValueError, match="rgb"):
        LowDimObsEncoder(IMAGE_META)
    img = MultiImageObsEncoder(IMAGE_META, crop_shape=None, feature_dim=8, n_obs_steps=2)
    assert img.output_dim() == 2 * (2 * 8 + 5)
    obs = {k: torch.rand(2, 2, *v["shape"]) for k, v in IMAGE_META["obs"].items()}
    assert img(obs).shape == (2, img.output_dim())


# ---------------------------------------------------------------- VIB
def test_kl_hand_computed():
    mu = torch.tensor([[1.0, 0.0]])
    logvar = torch.tensor([[0.0, math.log(2.0)]])
    # per dim: -0.5 * (1 + logvar - mu^2 - var) -> 0.5 and 0.5 * (1 - ln 2); mean over the 2 dims
    expected = (0.5 + 0.5 * (1 - math.log(2.0))) / 2
    assert kl_to_standard_normal(mu, logvar).item() == pytest.approx(expected, abs=1e-7)
    assert kl_to_standard_normal(torch.zeros(4, 16), torch.zeros(4, 16)).item() == 0.0


def test_vib_shapes():
    enc, dec = VIBEncoder(40, latent_dim=16), VIBDecoder(16, 40)
    mu, logvar = enc(torch.randn(8, 40))
    assert mu.shape == logvar.shape == (8, 16)
    assert dec(mu).shape == (8, 40)
    widths = [m.out_features for m in enc.trunk if isinstance(m, nn.Linear)]
    assert widths == [256, 256, 256]
    assert sum(isinstance(m, nn.GELU) for m in dec.net) == 3


# ---------------------------------------------------------------- rectified flow (the authors' scheduler)
def _sampler(steps=2):
    return FlowMatchSampler(FlowMatchEulerDiscreteScheduler(num_train_timesteps=100, shift=1.0), steps)


def test_flow_two_step_grid_is_the_authors():
    """set_timesteps(2) on 100 training timesteps: timesteps [100, 1], sigmas [1.0, 0.01, 0.0]."""
    flow = _sampler(2)
    seen = []
    flow.sample(lambda x, t, c: (seen.append(t.clone()), torch.zeros_like(x))[1], torch.zeros(3, 16, 2), None)
    assert [ts.tolist() for ts in seen] == [[100.0] * 3, [1.0] * 3]
    torch.testing.assert_close(flow.sample_scheduler.sigmas, torch.tensor([1.0, 0.01, 0.0]))
    # training draws from all 100 discrete timesteps 100 ... 1, never sigma = 0, whatever sampling did
    torch.testing.assert_close(flow.train_timesteps, torch.arange(100, 0, -1).float())
    torch.testing.assert_close(flow.train_sigmas, torch.arange(100, 0, -1) / 100.0)


def test_flow_first_step_returns_the_conditional_mean_estimate():
    """With the network's estimate a_hat (v = x_1 - a_hat at sigma 1), the first step lands at
    0.01 * noise + 0.99 * a_hat: the base policy barely depends on its noise."""
    torch.manual_seed(0)
    flow = _sampler(2)
    a_hat = torch.randn(1, 16, 3)
    noise = torch.randn(5, 16, 3)
    states = []

    def net(x, t, c):
        states.append(x.clone())
        return noise - a_hat  # the velocity of the straight path from noise to a_hat

    out = flow.sample(net, noise, None)
    torch.testing.assert_close(states[1], 0.01 * noise + 0.99 * a_hat)
    torch.testing.assert_close(out, a_hat.expand(5, -1, -1), atol=1e-6, rtol=1e-6)


def test_flow_noisy_sample_equals_scale_noise_and_target_is_noise_minus_action():
    flow = _sampler()
    a, eps = torch.randn(6, 8, 2), torch.randn(6, 8, 2)
    index = torch.tensor([0, 1, 17, 50, 98, 99])
    x, timesteps = flow.noisy_sample(a, eps, index)
    reference = FlowMatchEulerDiscreteScheduler(num_train_timesteps=100).scale_noise(a, timesteps, eps)
    torch.testing.assert_close(x, reference)
    torch.testing.assert_close(timesteps, torch.tensor([100.0, 99.0, 83.0, 50.0, 2.0, 1.0]))
    assert flow.loss(lambda x, t, c: eps - a, a, None, noise=eps, index=index).item() == 0.0
    zero = flow.loss(lambda x, t, c: torch.zeros_like(x), a, None, noise=eps, index=index)
    torch.testing.assert_close(zero, (eps - a).pow(2).mean())


def test_flow_sampling_does_not_move_the_training_grid():
    flow = _sampler(2)
    flow.sample(lambda x, t, c: torch.zeros_like(x), torch.zeros(1, 4, 1), None)
    assert len(flow.train_scheduler.timesteps) == 100 and len(flow.sample_scheduler.timesteps) == 2


# ---------------------------------------------------------------- EMA
def test_ema_warmup_decay_and_round_trip():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))  # BatchNorm only to carry a buffer
    ema = make_ema(model, power=0.75, max_value=0.9999)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(1.0)
        model[1].running_mean.fill_(7.0)
    ema.step(model)  # first step: decay 0, the average is the model itself
    assert ema.decay == 0.0
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(3.0)
    ema.step(model)
    d = 1 - 2 ** -0.75
    assert ema.decay == pytest.approx(d)
    target = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    ema.copy_to(target)
    for p in target.parameters():
        torch.testing.assert_close(p, torch.full_like(p, d * 1.0 + (1 - d) * 3.0))
    assert torch.equal(target[1].running_mean, torch.full((4,), 7.0))

    restored = make_ema(nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)))
    restored.load_state_dict(ema.state_dict())
    assert restored.optimization_step == 2
    again = restored.copy_to(nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)))
    for p, q in zip(again.state_dict().values(), target.state_dict().values()):
        assert torch.equal(p, q)
    with pytest.raises(ValueError, match="differ"):
        ema.step(nn.Sequential(nn.Linear(3, 4)))


# ---------------------------------------------------------------- ImageNet normalisation
def test_imagenet_norm_after_crop_before_resnet_and_old_checkpoints_unchanged():
    from zprl.model.vision import IMAGENET_MEAN, IMAGENET_STD, ImageNetNormalize

    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    assert torch.allclose(mean.flatten(), torch.tensor([0.485, 0.456, 0.406]))
    assert torch.allclose(std.flatten(), torch.tensor([0.229, 0.224, 0.225]))
    x = torch.rand(2, 3, 5, 5)
    assert torch.allclose(ImageNetNormalize()(x), (x - mean) / std)
    assert torch.allclose(ImageNetNormalize()(mean.expand(1, 3, 4, 4)), torch.zeros(1, 3, 4, 4), atol=1e-6)

    torch.manual_seed(0)
    on = MultiImageObsEncoder(IMAGE_META, crop_shape=(76, 76), feature_dim=16, imagenet_norm=True).eval()
    # Default off: configs stored by checkpoints made before the option lack the key and keep
    # feeding raw [0, 1] images; the statistics are not in the state_dict, so weights load either way.
    off = MultiImageObsEncoder(IMAGE_META, crop_shape=(76, 76), feature_dim=16).eval()
    assert on.imagenet_norm and not off.imagenet_norm
    assert set(on.state_dict()) == set(off.state_dict())
    off.load_state_dict(on.state_dict())

    obs = {k: torch.rand(2, 1, *v["shape"]) for k, v in IMAGE_META["obs"].items()}
    with torch.no_grad():
        e_on, e_off = on(obs), off(obs)
        for i, k in enumerate(on.rgb_keys):  # [0, 1] image -> center crop -> ImageNet mean/std -> ResNet
            crop = crop_images(obs[k][:, 0], (76, 76), random=False)
            model = on.rgb_models[k]
            expected = model.pool(model.trunk((crop - mean) / std))
            assert torch.allclose(e_on[:, i * 16:(i + 1) * 16], expected, atol=1e-5)
            assert torch.allclose(e_off[:, i * 16:(i + 1) * 16], model.pool(model.trunk(crop)), atol=1e-5)
    assert not torch.allclose(e_on[:, :32], e_off[:, :32])
    assert torch.equal(e_on[:, 32:], e_off[:, 32:])  # low-dim keys pass through untouched
