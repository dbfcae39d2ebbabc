"""Torch devices named by people (``training.device=cuda:1``, ``-d cuda:0``): checked up front, one line when wrong.

Rendering follows the same device: env workers render on the GPU of the policy's ``cuda:N`` unless
``MUJOCO_EGL_DEVICE_ID`` names another (``zprl.env.render_patch.render_target``).
"""

from __future__ import annotations

import os

import torch

from zprl.common.errors import UserInputError


def resolve_device(spec, key: str = "training.device", cuda_count: int | None = None) -> torch.device:
    """``spec`` as a torch.device, or UserInputError naming ``key`` when it cannot be used here.

    cuda_count: visible CUDA devices (None: ask torch); tests pass it to check the rule without a GPU.
    ``cuda`` alone means ``cuda:0``, so every later ``.to(device)`` goes to the same GPU.
    """
    try:
        device = torch.device(str(spec).strip())
    except (RuntimeError, TypeError, ValueError):
        raise UserInputError(f"{key}={spec!r} is not a torch device; use cpu, cuda:N or mps") from None
    if device.type != "cuda":
        return device
    index = 0 if device.index is None else device.index
    if cuda_count is None:
        cuda_count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    where = "" if visible is None else f" (CUDA_VISIBLE_DEVICES={visible!r})"
    if cuda_count == 0:
        raise UserInputError(f"{key}={spec}: no CUDA GPU is visible here{where} (torch {torch.__version__}, "
                             f"CUDA build {torch.version.cuda}); use {key}=cpu or run on a GPU machine")
    if index >= cuda_count:
        raise UserInputError(f"{key}={spec} does not exist: {cuda_count} CUDA GPU(s) visible here{where}, "
                             f"cuda:0..cuda:{cuda_count - 1}")
    return torch.device("cuda", index)
