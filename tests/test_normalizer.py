import numpy as np
import pytest
import torch

from zprl.model.normalizer import LinearNormalizer, SingleFieldNormalizer


def sample_data(seed=0):
    gen = torch.Generator().manual_seed(seed)
    action = torch.randn(200, 16, 10, generator=gen) * torch.linspace(0.1, 5, 10) + torch.arange(10.0)
    action[..., 4] = 0.25  # a constant feature
    pos = np.random.default_rng(seed).uniform(-3, 7, size=(500, 3)).astype(np.float32)
    return {"action": action, "robot0_eef_pos": pos}


def test_limits_maps_min_max_to_output_range_and_round_trips():
    data = sample_data()
    norm = LinearNormalizer().fit(data, mode="limits")
    assert sorted(norm.keys()) == ["action", "robot0_eef_pos"]
    a = data["action"]
    y = norm["action"].normalize(a)
    assert y.shape == a.shape and y.dtype == torch.float32
    lo, hi = y.reshape(-1, 10).amin(0), y.reshape(-1, 10).amax(0)
    varying = [i for i in range(10) if i != 4]
    assert torch.allclose(lo[varying], torch.full((9,), -1.0), atol=1e-5)
    assert torch.allclose(hi[varying], torch.full((9,), 1.0), atol=1e-5)
    # The constant feature lands in the middle of the output range, not at +-inf.
    assert torch.allclose(y[..., 4], torch.zeros_like(y[..., 4]))
    assert torch.allclose(norm["action"].unnormalize(y), a, atol=1e-5)
    p = torch.from_numpy(data["robot0_eef_pos"])
    yp = norm["robot0_eef_pos"].normalize(p)
    assert torch.allclose(yp.amin(0), -torch.ones(3), atol=1e-5) and torch.allclose(yp.amax(0), torch.ones(3), atol=1e-5)
    assert torch.allclose(norm["robot0_eef_pos"].input_min, p.amin(0))


def test_custom_output_range():
    x = torch.tensor([[0.0], [2.0], [4.0]])
    f = SingleFieldNormalizer.fit(x, mode="limits", output_min=0.0, output_max=1.0)
    assert torch.allclose(f.normalize(x).squeeze(), torch.tensor([0.0, 0.5, 1.0]))


def test_gaussian_zero_mean_unit_std():
    data = sample_data(1)
    norm = LinearNormalizer().fit(data, mode="gaussian")
    y = norm["action"].normalize(data["action"]).reshape(-1, 10)
    varying = [i for i in range(10) if i != 4]
    assert torch.allclose(y.mean(0)[varying], torch.zeros(9), atol=1e-4)
    assert torch.allclose(y.std(0, unbiased=False)[varying], torch.ones(9), atol=1e-4)
    assert torch.allclose(y[:, 4], torch.zeros_like(y[:, 4]), atol=1e-6)
    assert torch.allclose(norm["action"].unnormalize(y.reshape(200, 16, 10)), data["action"], atol=1e-4)


def test_bad_mode_and_empty():
    with pytest.raises(ValueError, match="unknown normalizer mode"):
        SingleFieldNormalizer.fit(torch.zeros(3, 2), mode="minmax")
    with pytest.raises(ValueError, match="empty"):
        SingleFieldNormalizer.fit(torch.zeros(0, 2))


def test_dict_normalize_identity_and_nested_batch():
    data = sample_data()
    norm = LinearNormalizer().fit(data).set_identity("agentview_image")
    img = torch.rand(4, 2, 3, 84, 84)
    pos = torch.from_numpy(data["robot0_eef_pos"][:8]).reshape(4, 2, 3)
    batch = {"obs": {"agentview_image": img, "robot0_eef_pos": pos}, "action": data["action"][:4]}
    out = norm.normalize(batch)
    assert torch.equal(out["obs"]["agentview_image"], img)
    assert torch.allclose(out["obs"]["robot0_eef_pos"], norm["robot0_eef_pos"].normalize(pos))
    assert torch.allclose(out["action"], norm["action"].normalize(batch["action"]))
    back = norm.unnormalize(out)
    assert torch.allclose(back["obs"]["robot0_eef_pos"], pos, atol=1e-5)
    assert "agentview_image" in norm and "nope" not in norm
    with pytest.raises(KeyError, match="nope"):
        norm.normalize({"nope": torch.zeros(3)})


def test_set_identity_dims_keeps_other_dims_fitted():
    data = sample_data()
    norm = LinearNormalizer().fit({"action": data["action"]})
    before = norm["action"].normalize(data["action"])
    norm["action"].set_identity_dims(range(3, 9))
    after = norm["action"].normalize(data["action"])
    assert torch.equal(after[..., 3:9], data["action"][..., 3:9])
    assert torch.equal(after[..., :3], before[..., :3]) and torch.equal(after[..., 9], before[..., 9])


def test_state_dict_round_trip_into_fresh_instance():
    data = sample_data()
    norm = LinearNormalizer().fit(data).set_identity("agentview_image")
    sd = norm.state_dict()
    assert "fields.action.scale" in sd and "_device_probe" not in " ".join(sd)
    fresh = LinearNormalizer.from_state_dict(sd)
    assert sorted(fresh.keys()) == sorted(norm.keys())
    a = data["action"][:5]
    assert torch.equal(fresh["action"].normalize(a), norm["action"].normalize(a))

    # Nested inside another module (as in a policy): load_state_dict creates the keys too.
    class Holder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.normalizer = LinearNormalizer()
            self.lin = torch.nn.Linear(2, 2)

    h1 = Holder()
    h1.normalizer.fit(data)
    h2 = Holder()
    h2.normalizer.fit({"action": torch.zeros(5, 3), "stale": torch.ones(2, 2)})
    h2.load_state_dict(h1.state_dict())
    assert sorted(h2.normalizer.keys()) == ["action", "robot0_eef_pos"]
    assert torch.equal(h2.normalizer["action"].scale, h1.normalizer["action"].scale)
    assert len(list(h2.parameters())) == 2  # only the Linear: normalizer stats are buffers


def test_device_and_dtype():
    norm = LinearNormalizer().fit(sample_data())
    x64 = torch.randn(3, 10, dtype=torch.float64)
    y = norm["action"].normalize(x64)
    assert y.dtype == torch.float64
    assert torch.allclose(norm["action"].unnormalize(y), x64)
    norm = norm.to(torch.float64)
    assert norm["action"].scale.dtype == torch.float64
    if torch.cuda.is_available():
        norm = norm.to("cuda")
        assert norm["action"].normalize(x64.cuda()).is_cuda
        fresh = LinearNormalizer().to("cuda")
        fresh.load_state_dict(norm.state_dict())
        assert fresh["action"].scale.is_cuda
    else:
        # Fields added later follow the module's device (the meta device stands in for a GPU).
        meta = LinearNormalizer().to("meta")
        meta.fit({"a": torch.zeros(4, 2)})
        assert meta["a"].scale.is_meta
