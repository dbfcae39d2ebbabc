"""Mish, x * tanh(softplus(x)), computed in a form that is fast on CPUs.

PyTorch's CPU kernels for mish and its gradient evaluate softplus and tanh element by element
without vectorising them: on a CPU they took ~22% of a training step of the demo's small U-Net, as
much as a third of all its convolutions. With e = exp(x), tanh(softplus(x)) = n / (n + 2) where
n = e * (e + 2), which needs one exp and a few vectorised multiplies; the gradient,
t + x * (1 - t^2) * sigmoid(x) with t = tanh(softplus(x)), likewise. Same function, different
rounding (within 1e-6 of PyTorch's in float32). On other devices, and for small tensors on a CPU
(where the few extra calls cost more than they save: ~16k elements is where the two break even on
one core), PyTorch's kernel is used.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# above this, n / (n + 2) is 1 to double precision: clamping keeps exp finite and changes nothing
_EXP_CLAMP = 20.0
_MIN_NUMEL = 16384


def _tanh_softplus(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(tanh(softplus(x)), exp(x)) for x clamped at _EXP_CLAMP."""
    e = torch.exp(x.clamp(max=_EXP_CLAMP))
    n = e * (e + 2.0)
    return n / (n + 2.0), e


class _CpuMish(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return x * _tanh_softplus(x)[0]

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        t, e = _tanh_softplus(x)
        return grad * (t + x * (1.0 - t * t) * (e / (1.0 + e)))


def mish(x: torch.Tensor) -> torch.Tensor:
    if x.device.type == "cpu" and x.numel() >= _MIN_NUMEL:
        return _CpuMish.apply(x)
    return F.mish(x)


class Mish(nn.Module):
    """Drop-in for ``nn.Mish`` (no parameters or buffers, so checkpoints are unchanged).

    ``cpu_form=False`` always uses PyTorch's kernel: the rounding every base trained before the CPU
    form existed was built with, so such a base can be rebuilt bit for bit (policy.cpu_mish=false).
    """

    def __init__(self, cpu_form: bool = True):
        super().__init__()
        self.cpu_form = bool(cpu_form)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return mish(x) if self.cpu_form else F.mish(x)

    def extra_repr(self) -> str:
        return "" if self.cpu_form else "cpu_form=False"
