"""1D temporal U-Net over an action chunk, conditioned through FiLM on [step embedding, global_cond]."""

from __future__ import annotations

import math
from typing import Sequence

import torch
from einops import rearrange
from torch import nn

from zprl.model.mish import Mish


class SinusoidalEmbedding(nn.Module):
    """Fixed sin/cos features of a (possibly fractional) step number, periods from 1 to ~10000 steps."""

    def __init__(self, dim: int):
        super().__init__()
        if dim % 2:
            raise ValueError(f"sinusoidal embedding dim must be even, got {dim}")
        self.dim = dim

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.dim // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / max(half - 1, 1))
        angles = t.float()[:, None] * freqs[None, :]
        return torch.cat([angles.sin(), angles.cos()], dim=-1)


class ConvNormAct(nn.Sequential):
    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, n_groups: int, cpu_mish: bool = True):
        super().__init__(
            nn.Conv1d(in_ch, out_ch, kernel_size, padding=kernel_size // 2),
            nn.GroupNorm(n_groups, out_ch),
            Mish(cpu_mish),
        )


class FiLMResBlock(nn.Module):
    """Two conv layers; the conditioning vector sets a per-channel scale and bias between them."""

    def __init__(self, in_ch: int, out_ch: int, cond_dim: int, kernel_size: int, n_groups: int,
                 cpu_mish: bool = True):
        super().__init__()
        self.conv_in = ConvNormAct(in_ch, out_ch, kernel_size, n_groups, cpu_mish)
        self.conv_out = ConvNormAct(out_ch, out_ch, kernel_size, n_groups, cpu_mish)
        self.film = nn.Sequential(Mish(cpu_mish), nn.Linear(cond_dim, 2 * out_ch))
        self.skip = nn.Conv1d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        scale, bias = self.film(cond)[:, :, None].chunk(2, dim=1)
        h = self.conv_out(scale * h + bias)
        return h + self.skip(x)


class ConditionalUnet1D(nn.Module):
    """Noise/velocity network over (B, T, Da) action chunks.

    Each resolution level has two FiLM residual blocks; the time axis halves between encoder levels
    (so T must be divisible by 2 ** (len(down_dims) - 1)) and doubles back in the decoder, which
    concatenates the matching encoder features (skip connections). ``cpu_mish``: zprl's CPU form of
    Mish (zprl/model/mish.py); False uses PyTorch's kernel everywhere.
    """

    def __init__(
        self,
        input_dim: int,
        global_cond_dim: int = 0,
        diffusion_step_embed_dim: int = 128,
        down_dims: Sequence[int] = (128, 256, 512),
        kernel_size: int = 5,
        n_groups: int = 8,
        cpu_mish: bool = True,
    ):
        super().__init__()
        down_dims = list(down_dims)
        self.input_dim = input_dim
        self.global_cond_dim = global_cond_dim
        self.num_levels = len(down_dims)
        e = diffusion_step_embed_dim
        self.step_encoder = nn.Sequential(
            SinusoidalEmbedding(e), nn.Linear(e, 4 * e), Mish(cpu_mish), nn.Linear(4 * e, e)
        )
        cond_dim = e + global_cond_dim

        def block(i, o):
            return FiLMResBlock(i, o, cond_dim, kernel_size, n_groups, cpu_mish)

        widths = [input_dim] + down_dims
        self.down = nn.ModuleList()
        for level, (c_in, c_out) in enumerate(zip(widths[:-1], widths[1:])):
            last = level == self.num_levels - 1
            self.down.append(nn.ModuleList([
                block(c_in, c_out),
                block(c_out, c_out),
                nn.Identity() if last else nn.Conv1d(c_out, c_out, 3, stride=2, padding=1),
            ]))
        self.mid = nn.ModuleList([block(down_dims[-1], down_dims[-1]), block(down_dims[-1], down_dims[-1])])
        # Decoder: upsample, then join the encoder features of that resolution. The deepest encoder
        # output already feeds the middle blocks, so it needs no skip.
        self.up = nn.ModuleList()
        for c_deep, c_skip in zip(reversed(down_dims[1:]), reversed(down_dims[:-1])):
            self.up.append(nn.ModuleList([
                nn.ConvTranspose1d(c_deep, c_deep, 4, stride=2, padding=1),
                block(c_deep + c_skip, c_skip),
                block(c_skip, c_skip),
            ]))
        self.head = nn.Sequential(
            ConvNormAct(down_dims[0], down_dims[0], kernel_size, n_groups, cpu_mish),
            nn.Conv1d(down_dims[0], input_dim, 1),
        )

    def forward(self, sample: torch.Tensor, timestep, global_cond: torch.Tensor | None = None) -> torch.Tensor:
        """sample (B, T, Da); timestep scalar or (B,) on the train-timestep scale; global_cond (B, Dc)."""
        batch, horizon = sample.shape[:2]
        if horizon % (2 ** (self.num_levels - 1)):
            raise ValueError(
                f"horizon {horizon} must be divisible by {2 ** (self.num_levels - 1)} for {self.num_levels} U-Net levels"
            )
        t = torch.as_tensor(timestep, device=sample.device, dtype=torch.float32)
        t = t.expand(batch) if t.ndim == 0 else t.reshape(batch)
        cond = self.step_encoder(t)
        if self.global_cond_dim:
            if global_cond is None or global_cond.shape[-1] != self.global_cond_dim:
                got = None if global_cond is None else tuple(global_cond.shape)
                raise ValueError(f"global_cond must have shape (B, {self.global_cond_dim}), got {got}")
            cond = torch.cat([cond, global_cond], dim=-1)

        x = rearrange(sample, "b t d -> b d t")
        skips = []
        for block_a, block_b, downsample in self.down:
            x = block_b(block_a(x, cond), cond)
            skips.append(x)
            x = downsample(x)
        for blk in self.mid:
            x = blk(x, cond)
        skips.pop()  # the deepest level feeds the middle blocks directly; no skip needed there
        for upsample, block_a, block_b in self.up:
            x = torch.cat([upsample(x), skips.pop()], dim=1)
            x = block_b(block_a(x, cond), cond)
        return rearrange(self.head(x), "b d t -> b t d")
