"""Observation encoders: obs dict with a time axis (B, To, ...) -> one flat embedding (B, Do).

Keys are always read in sorted order so the layout of the embedding does not depend on the
order of keys in a config file.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import nn

from zprl.model.batch_shard import randint_rows
from zprl.model.vision import ResNetImageEncoder


def _keys_of_type(shape_meta: Mapping, obs_type: str) -> list[str]:
    return sorted(k for k, v in shape_meta["obs"].items() if v.get("type", "low_dim") == obs_type)


def crop_images(images: torch.Tensor, crop_hw: tuple[int, int], random: bool) -> torch.Tensor:
    """Crop (N, C, H, W) to crop_hw: an independent random window per image, or the center one.

    Per-image windows (not one window per batch) give every sample its own shift augmentation.
    """
    n, _, h, w = images.shape
    ch, cw = crop_hw
    if (ch, cw) == (h, w):
        return images
    if ch > h or cw > w:
        raise ValueError(f"crop {crop_hw} is larger than the image {(h, w)}")
    if not random:
        top, left = (h - ch) // 2, (w - cw) // 2
        return images[:, :, top:top + ch, left:left + cw]
    # one window per image, the same whatever the data-parallel split (images are batch-major: b * To)
    top = randint_rows(h - ch + 1, n, device=images.device)
    left = randint_rows(w - cw + 1, n, device=images.device)
    rows = (top[:, None] + torch.arange(ch, device=images.device))[:, :, None]  # (N, ch, 1)
    cols = (left[:, None] + torch.arange(cw, device=images.device))[:, None, :]  # (N, 1, cw)
    batch = torch.arange(n, device=images.device)[:, None, None]
    # Advanced indexing puts the indexed dims first: (N, ch, cw, C) -> (N, C, ch, cw).
    return images.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)


class MultiImageObsEncoder(nn.Module):
    """One ResNet18 (or one shared) per camera + low-dim keys, concatenated per step, steps flattened.

    Training mode crops a random window per image, eval mode the center window; with
    ``imagenet_norm`` the cropped [0, 1] images are then normalised with ImageNet's mean/std before
    the ResNets (default False: raw images, as checkpoints made before the option were trained;
    the task configs set it true, the authors' setting).
    Output: (B, n_obs_steps * (n_cameras * feature_dim + sum(low_dim sizes))).
    """

    def __init__(
        self,
        shape_meta: Mapping,
        crop_shape: Sequence[int] | None = (76, 76),
        feature_dim: int = 256,
        share_rgb_model: bool = False,
        n_obs_steps: int = 1,
        imagenet_norm: bool = False,
    ):
        super().__init__()
        self.imagenet_norm = bool(imagenet_norm)
        self.rgb_keys = _keys_of_type(shape_meta, "rgb")
        self.low_dim_keys = _keys_of_type(shape_meta, "low_dim")
        if not self.rgb_keys:
            raise ValueError("MultiImageObsEncoder needs at least one rgb key in shape_meta.obs; use LowDimObsEncoder")
        image_hw = {k: tuple(shape_meta["obs"][k]["shape"][-2:]) for k in self.rgb_keys}
        self.crop_hw = {k: tuple(crop_shape) if crop_shape is not None else image_hw[k] for k in self.rgb_keys}
        if share_rgb_model and len(set(self.crop_hw.values())) > 1:
            raise ValueError(f"share_rgb_model needs equal image sizes, got {self.crop_hw}")
        if share_rgb_model:
            shared = ResNetImageEncoder(self.crop_hw[self.rgb_keys[0]], feature_dim, self.imagenet_norm)
            self.rgb_models = nn.ModuleDict({k: shared for k in self.rgb_keys})
        else:
            self.rgb_models = nn.ModuleDict({k: ResNetImageEncoder(self.crop_hw[k], feature_dim, self.imagenet_norm)
                                             for k in self.rgb_keys})
        self.low_dim_sizes = {k: int(torch.Size(shape_meta["obs"][k]["shape"]).numel()) for k in self.low_dim_keys}
        self.feature_dim = feature_dim
        self.n_obs_steps = n_obs_steps

    def output_dim(self) -> int:
        per_step = len(self.rgb_keys) * self.feature_dim + sum(self.low_dim_sizes.values())
        return self.n_obs_steps * per_step

    def forward(self, obs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        b, to = obs[self.rgb_keys[0]].shape[:2]
        if to != self.n_obs_steps:
            raise ValueError(f"expected {self.n_obs_steps} observation steps, got {to}")
        parts = []
        for k in self.rgb_keys:
            images = obs[k].reshape(b * to, *obs[k].shape[2:])
            images = crop_images(images, self.crop_hw[k], random=self.training)
            parts.append(self.rgb_models[k](images))
        for k in self.low_dim_keys:
            parts.append(obs[k].reshape(b * to, -1))
        return torch.cat(parts, dim=-1).reshape(b, -1)


class LowDimObsEncoder(nn.Module):
    """MLP over the low-dim keys of all observation steps (concatenated) -> (B, output_dim)."""

    def __init__(
        self,
        shape_meta: Mapping,
        hidden_dims: Sequence[int] = (256, 256),
        output_dim: int = 256,
        n_obs_steps: int = 1,
    ):
        super().__init__()
        self.low_dim_keys = _keys_of_type(shape_meta, "low_dim")
        rgb = _keys_of_type(shape_meta, "rgb")
        if rgb or not self.low_dim_keys:
            raise ValueError(
                f"LowDimObsEncoder takes only low_dim obs keys; shape_meta has rgb keys {rgb} "
                f"and low_dim keys {self.low_dim_keys}"
            )
        in_dim = n_obs_steps * sum(int(torch.Size(shape_meta["obs"][k]["shape"]).numel()) for k in self.low_dim_keys)
        layers, width = [], in_dim
        for h in hidden_dims:
            layers += [nn.Linear(width, h), nn.GELU()]
            width = h
        layers.append(nn.Linear(width, output_dim))
        self.mlp = nn.Sequential(*layers)
        self._output_dim = output_dim
        self.n_obs_steps = n_obs_steps

    def output_dim(self) -> int:
        return self._output_dim

    def forward(self, obs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        b, to = obs[self.low_dim_keys[0]].shape[:2]
        if to != self.n_obs_steps:
            raise ValueError(f"expected {self.n_obs_steps} observation steps, got {to}")
        flat = torch.cat([obs[k].reshape(b, to, -1) for k in self.low_dim_keys], dim=-1)
        return self.mlp(flat.reshape(b, -1))
