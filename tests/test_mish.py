"""zprl's CPU Mish is PyTorch's Mish to float rounding, in value and gradient, and leaves checkpoints alone."""

import torch
import torch.nn.functional as F

from zprl.model.mish import _MIN_NUMEL, Mish, mish
from zprl.model.unet1d import ConditionalUnet1D


def _values(dtype):
    # extremes (exp clamp, underflow) and a dense sweep, padded to use the CPU path
    x = torch.cat([torch.tensor([-1e4, -100.0, -30.0, -20.0, 0.0, 19.99, 20.0, 20.01, 30.0, 1e4]),
                   torch.linspace(-40, 40, _MIN_NUMEL)]).to(dtype)
    assert x.numel() >= _MIN_NUMEL
    return x


def test_value_and_gradient_match_torch():
    for dtype, tol in ((torch.float32, 2e-6), (torch.float64, 1e-12)):
        x = _values(dtype).requires_grad_()
        ours = mish(x)
        (g_ours,) = torch.autograd.grad(ours.sum(), x)
        ref = F.mish(x)
        (g_ref,) = torch.autograd.grad(ref.sum(), x)
        assert torch.isfinite(ours).all() and torch.isfinite(g_ours).all()
        torch.testing.assert_close(ours, ref, atol=tol, rtol=tol)
        torch.testing.assert_close(g_ours, g_ref, atol=tol, rtol=tol)


def test_gradcheck_on_the_cpu_path():
    x = (torch.randn(_MIN_NUMEL, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 6)
    x.requires_grad_()
    v = torch.randn(_MIN_NUMEL, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    # full Jacobian of 16k elements is too big for gradcheck: check the vector-Jacobian product
    # against finite differences along a random direction instead
    (vjp,) = torch.autograd.grad(mish(x), x, v)
    d = torch.randn_like(x)
    eps = 1e-6
    numeric = ((mish(x + eps * d) - mish(x - eps * d)) / (2 * eps) * v).sum()
    torch.testing.assert_close((vjp * d).sum(), numeric, rtol=1e-6, atol=1e-6)


def test_small_tensors_take_torchs_kernel_exactly():
    x = torch.randn(100, 7)
    assert torch.equal(mish(x), F.mish(x))


def test_unet_uses_it_and_its_state_dict_is_unchanged():
    net = ConditionalUnet1D(input_dim=4, global_cond_dim=8, diffusion_step_embed_dim=16, down_dims=(16, 32))
    assert not any(isinstance(m, torch.nn.Mish) for m in net.modules())
    assert any(isinstance(m, Mish) for m in net.modules())
    assert not list(Mish().state_dict())  # nothing saved: checkpoints from nn.Mish days load as they are


def test_cpu_form_off_is_torchs_kernel_bit_for_bit():
    # policy.cpu_mish=false: rebuilding a base trained with nn.Mish needs PyTorch's own rounding
    x = _values(torch.float32)
    assert torch.equal(Mish(cpu_form=False)(x), F.mish(x))
    assert not torch.equal(Mish()(x), F.mish(x))  # the CPU form rounds differently somewhere
    net = ConditionalUnet1D(input_dim=4, global_cond_dim=8, diffusion_step_embed_dim=16, down_dims=(16, 32),
                            cpu_mish=False)
    acts = [m for m in net.modules() if isinstance(m, Mish)]
    assert acts and not any(m.cpu_form for m in acts)
