"""Load a trained base policy from an offline checkpoint (EMA weights by default)."""

from __future__ import annotations

import os

import hydra
import torch
from omegaconf import OmegaConf

import zprl.common.config  # noqa: F401  (resolvers used by stored configs)
from zprl.common.checkpoint import load_checkpoint
from zprl.common.errors import UserInputError
from zprl.devices import resolve_device


def read_checkpoint(ckpt_path: str) -> dict:
    """A zprl checkpoint payload, or one clear line saying why the file is not one."""
    if not os.path.isfile(ckpt_path):
        raise UserInputError(f"checkpoint not found: {ckpt_path} — pass the path of a .ckpt written by train.py "
                             "(e.g. data/outputs/<date>/<time>_<name>/checkpoints/latest.ckpt)")
    try:
        payload = load_checkpoint(ckpt_path)
    except Exception as err:  # not a torch file, truncated, ...
        raise UserInputError(f"cannot read checkpoint {ckpt_path}: {type(err).__name__}: {err}") from None
    if not isinstance(payload, dict) or "cfg" not in payload or "state" not in payload:
        raise UserInputError(f"{ckpt_path} is not a zprl training checkpoint (no 'cfg'/'state' entries)")
    return payload


def require_current_sampler(cfg, ckpt_path: str) -> None:
    """Checkpoints from before the authors' scheduler (uniform-grid Euler, t = 0, 0.5) hold a policy that
    samples differently: refuse them instead of running their weights under another sampler."""
    if "policy" in cfg and "noise_scheduler" not in cfg.policy:
        raise UserInputError(f"{ckpt_path} was trained with zprl's old uniform-grid flow sampler (its config has no "
                             "policy.noise_scheduler); retrain the base policy with this version of train.py")


def load_base_policy(ckpt_path: str, device="cpu", use_ema: bool = True, device_key: str = "device"):
    """Returns (policy in eval mode on ``device``, the run's cfg, the checkpoint payload).

    device_key names the setting in the one-line error when ``device`` does not exist here."""
    device = resolve_device(device, device_key)
    payload = read_checkpoint(ckpt_path)
    cfg = OmegaConf.create(payload["cfg"])
    if "policy" not in cfg:
        raise UserInputError(f"{ckpt_path} holds no offline policy (config has no 'policy'); "
                             "give an offline checkpoint from train_flow_match_vib_unet_image_workspace")
    require_current_sampler(cfg, ckpt_path)
    policy = hydra.utils.instantiate(cfg.policy)
    state = payload["state"]
    weights = state["ema_model"] if use_ema and state.get("ema_model") is not None else state["model"]
    policy.load_state_dict(weights)
    policy.to(device).eval()
    return policy, cfg, payload
