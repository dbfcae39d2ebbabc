"""Devices named by the user (training.device, -d), checked against this machine before any work."""

from __future__ import annotations

import torch

from zprl.common.errors import UserInputError


def checked_device(value, key: str = "training.device") -> torch.device:
    """``torch.device(value)``, or one line saying why this machine cannot run on it. ``key`` is how
    the user gave it (a config key, or a command-line flag such as ``-d``)."""
    try:
        device = torch.device(str(value))
    except (RuntimeError, ValueError):
        raise UserInputError(f"{_spell(key, repr(str(value)))} is not a device name; use cpu or cuda:N (e.g. cuda:0)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserInputError(f"{_spell(key, str(value))}: this machine has no usable CUDA device "
                                 f"(torch.cuda.is_available() is False); use {_spell(key, 'cpu')}")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise UserInputError(f"{_spell(key, str(value))}: there {'is' if count == 1 else 'are'} only {count} CUDA "
                                 f"device{'' if count == 1 else 's'} (cuda:0..cuda:{count - 1}); pick one of them")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise UserInputError(f"{_spell(key, str(value))}: MPS is not available on this machine; use {_spell(key, 'cpu')}")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise UserInputError(f"{_spell(key, str(value))}: zprl runs on cpu or cuda devices; use cpu or cuda:N")
    return device


def _spell(key: str, value: str) -> str:
    return f"{key} {value}" if key.startswith("-") else f"{key}={value}"
