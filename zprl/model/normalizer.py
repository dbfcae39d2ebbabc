"""Per-key affine normalisation ``y = x * scale + offset`` that lives in a policy's state_dict.

Scale and offset act on the last dimension of each field (one value per feature). They are
buffers, not parameters, so optimisers and EMA never touch them, while ``.to(device)`` and
``state_dict()`` still carry them.
"""

from __future__ import annotations

from typing import Iterable, Mapping

import numpy as np
import torch
from torch import nn

_STAT_NAMES = ("input_min", "input_max", "input_mean", "input_std")


def _to_tensor(x) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach()
    return torch.from_numpy(np.asarray(x))


class SingleFieldNormalizer(nn.Module):
    """Affine map for one key; also keeps the fitted input statistics for reference."""

    def __init__(self, dim: int, dtype: torch.dtype = torch.float32, device=None):
        super().__init__()
        kw = dict(dtype=dtype, device=device)
        self.register_buffer("scale", torch.ones(dim, **kw))
        self.register_buffer("offset", torch.zeros(dim, **kw))
        for name in _STAT_NAMES:
            self.register_buffer(name, torch.zeros(dim, **kw))

    @property
    def dim(self) -> int:
        return self.scale.shape[0]

    @classmethod
    def fit(cls, data, mode: str = "limits", output_min: float = -1.0, output_max: float = 1.0,
            range_eps: float = 1e-4, dtype: torch.dtype = torch.float32) -> "SingleFieldNormalizer":
        x = _to_tensor(data)
        if x.ndim == 0 or x.numel() == 0:
            raise ValueError(f"cannot fit a normalizer on empty data of shape {tuple(x.shape)}")
        # Statistics in float64 so long float32 datasets do not lose precision in the sums.
        x = x.reshape(-1, x.shape[-1]).to(torch.float64)
        lo, hi = x.amin(0), x.amax(0)
        mean, std = x.mean(0), x.std(0, unbiased=False)
        if mode == "limits":
            span = hi - lo
            flat = span < range_eps
            # A constant feature would get an enormous scale; map it to the middle of the range instead.
            scale = torch.where(flat, torch.ones_like(span), (output_max - output_min) / torch.where(flat, torch.ones_like(span), span))
            offset = torch.where(flat, 0.5 * (output_max + output_min) - lo, output_min - scale * lo)
        elif mode == "gaussian":
            flat = std < range_eps
            scale = torch.where(flat, torch.ones_like(std), 1.0 / torch.where(flat, torch.ones_like(std), std))
            offset = -mean * scale
        else:
            raise ValueError(f"unknown normalizer mode {mode!r}; use 'limits' or 'gaussian'")
        field = cls(x.shape[-1], dtype=dtype, device=x.device)
        for name, value in zip(("scale", "offset") + _STAT_NAMES, (scale, offset, lo, hi, mean, std)):
            getattr(field, name).copy_(value)
        return field

    @classmethod
    def identity(cls, dim: int = 1, dtype: torch.dtype = torch.float32) -> "SingleFieldNormalizer":
        return cls(dim, dtype=dtype)

    def set_identity_dims(self, dims: Iterable[int]) -> "SingleFieldNormalizer":
        """Pass the given feature indices through unchanged (e.g. rot6d parts already in [-1, 1])."""
        idx = torch.as_tensor(list(dims), dtype=torch.long, device=self.scale.device)
        self.scale[idx] = 1.0
        self.offset[idx] = 0.0
        return self

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale.to(x) + self.offset.to(x)

    def unnormalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.offset.to(x)) / self.scale.to(x)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class LinearNormalizer(nn.Module):
    """A dict of SingleFieldNormalizer, one per data key (``"action"``, obs keys, ...)."""

    def __init__(self):
        super().__init__()
        self.fields = nn.ModuleDict()
        # Not saved; lets fields created while loading a state_dict land on this module's device.
        self.register_buffer("_device_probe", torch.empty(0), persistent=False)

    # -- building ---------------------------------------------------------------------------
    def fit(self, data: Mapping[str, object], mode: str = "limits", output_min: float = -1.0,
            output_max: float = 1.0, range_eps: float = 1e-4) -> "LinearNormalizer":
        for key, value in data.items():
            self[key] = SingleFieldNormalizer.fit(value, mode=mode, output_min=output_min,
                                                  output_max=output_max, range_eps=range_eps)
        return self

    def set_identity(self, key: str, dim: int = 1) -> "LinearNormalizer":
        """Identity for ``key``; ``dim=1`` broadcasts over any shape (e.g. images already in [0, 1])."""
        self[key] = SingleFieldNormalizer.identity(dim)
        return self

    def __setitem__(self, key: str, field: SingleFieldNormalizer) -> None:
        if "." in key:
            raise ValueError(f"normalizer key {key!r} must not contain '.' (it would break state_dict names)")
        self.fields[key] = field.to(self._device_probe.device)

    # -- access -----------------------------------------------------------------------------
    def __getitem__(self, key: str) -> SingleFieldNormalizer:
        if key not in self.fields:
            raise KeyError(f"normalizer has no key {key!r} (has: {', '.join(self.keys()) or 'none'})")
        return self.fields[key]

    def __contains__(self, key: object) -> bool:
        return key in self.fields

    def keys(self) -> list[str]:
        return list(self.fields.keys())

    def _apply_fields(self, data, forward: bool):
        if isinstance(data, Mapping):
            return {k: (self._apply_fields(v, forward) if isinstance(v, Mapping) else
                        (self[k].normalize(v) if forward else self[k].unnormalize(v)))
                    for k, v in data.items()}
        raise TypeError(f"expected a dict of tensors, got {type(data).__name__}; use normalizer[key] for one tensor")

    def normalize(self, data: Mapping[str, torch.Tensor]) -> dict:
        """Normalise every entry of a (possibly nested, e.g. ``{"obs": {...}}``) dict by its key."""
        return self._apply_fields(data, True)

    def unnormalize(self, data: Mapping[str, torch.Tensor]) -> dict:
        return self._apply_fields(data, False)

    # -- loading ----------------------------------------------------------------------------
    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        # A fresh (or differently fitted) normalizer takes its key set and sizes from the state_dict,
        # so a policy can be rebuilt from a checkpoint before any dataset is read.
        start = prefix + "fields."
        shapes = {}
        for name, value in state_dict.items():
            if name.startswith(start) and name.endswith(".scale"):
                shapes[name[len(start):-len(".scale")]] = value
        if shapes:
            for key in list(self.fields.keys()):
                if key not in shapes:
                    del self.fields[key]
            for key, value in shapes.items():
                if key not in self.fields or self.fields[key].scale.shape != value.shape:
                    self.fields[key] = SingleFieldNormalizer(value.shape[0], dtype=value.dtype,
                                                             device=self._device_probe.device)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, torch.Tensor]) -> "LinearNormalizer":
        norm = cls()
        norm.load_state_dict(dict(state_dict))
        return norm
