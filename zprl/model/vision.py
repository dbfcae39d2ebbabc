"""Per-camera image encoder: ResNet18 trunk (GroupNorm, trained from scratch) + learned spatial pooling."""

from __future__ import annotations

import torch
import torchvision
from einops import rearrange
from torch import nn


def batchnorm_to_groupnorm(module: nn.Module, channels_per_group: int = 16) -> nn.Module:
    """Replace every BatchNorm2d in ``module`` (in place) by GroupNorm with channels // 16 groups.

    Batch statistics couple samples in a batch and drift between training and evaluation, and EMA
    weights do not average running stats; GroupNorm has neither problem.
    """
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            c = child.num_features
            setattr(module, name, nn.GroupNorm(max(c // channels_per_group, 1), c))
        else:
            batchnorm_to_groupnorm(child, channels_per_group)
    return module


def resnet18_trunk() -> nn.Sequential:
    """ResNet18 without pretrained weights, avgpool and classifier: (N, 3, H, W) -> (N, 512, H/32, W/32)."""
    net = batchnorm_to_groupnorm(torchvision.models.resnet18(weights=None))
    return nn.Sequential(*list(net.children())[:-2])


class SpatialEmbeddingPool(nn.Module):
    """Pool a (N, C, H, W) feature map to (N, D) with a learned weight per location and channel.

    Exact form: v = Conv1x1(C -> D)(features), flattened to (N, H*W, D); a learned embedding
    E in R^{H*W x D} gives, per output channel d, attention weights a[:, d] = softmax_over_locations(E[:, d]);
    out[n, d] = sum_l a[l, d] * v[n, l, d]. E starts at zero, so the layer starts as global average
    pooling and learns where on the image each channel should look (unlike average pooling, it keeps
    the spatial layout, which matters for locating objects and the gripper).
    """

    def __init__(self, in_channels: int, feature_hw: tuple[int, int], out_dim: int = 256):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, out_dim, kernel_size=1)
        self.embedding = nn.Parameter(torch.zeros(feature_hw[0] * feature_hw[1], out_dim))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        v = rearrange(self.proj(features), "n d h w -> n (h w) d")
        if v.shape[1] != self.embedding.shape[0]:
            raise ValueError(
                f"feature map has {v.shape[1]} locations but the pooling was built for {self.embedding.shape[0]}; "
                "the image (crop) size must match the one the encoder was built with"
            )
        weights = self.embedding.softmax(dim=0)
        return torch.einsum("nld,ld->nd", v, weights)


# torchvision's ImageNet statistics (RGB), what the authors normalise camera images with.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageNetNormalize(nn.Module):
    """(N, 3, H, W) RGB in [0, 1] -> (x - mean) / std with ImageNet's per-channel statistics.

    The statistics are constant buffers outside the state_dict, so checkpoints are the same with
    or without this layer.
    """

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.mean.to(images.dtype)) / self.std.to(images.dtype)


class ResNetImageEncoder(nn.Module):
    """(N, 3, H, W) images in [0, 1] -> (N, feature_dim).

    ``imagenet_norm=True`` normalises the images with ImageNet's mean/std before the trunk (the
    authors' setting; the task configs turn it on). The default False feeds the [0, 1] images as
    they are, which is what checkpoints written before this option was added were trained on: their
    stored configs lack the key, so they keep the behaviour they were trained with.
    """

    def __init__(self, image_hw: tuple[int, int], feature_dim: int = 256, imagenet_norm: bool = False):
        super().__init__()
        self.imagenet_norm = bool(imagenet_norm)
        self.normalize = ImageNetNormalize() if self.imagenet_norm else nn.Identity()
        self.trunk = resnet18_trunk()
        with torch.no_grad():
            fmap = self.trunk(torch.zeros(1, 3, *image_hw))
        self.pool = SpatialEmbeddingPool(fmap.shape[1], tuple(fmap.shape[-2:]), feature_dim)
        self.feature_dim = feature_dim

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.pool(self.trunk(self.normalize(images)))
