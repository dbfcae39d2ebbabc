"""Exponential moving average of a model's weights, on top of diffusers' EMAModel.

diffusers averages parameters only and keeps them as an anonymous list. This wrapper adds what
a workspace needs: buffers are carried along (copied, not averaged), the parameter names are
checked so a model whose layout changed after the EMA was made fails loudly instead of mixing
weights, and `copy_to(eval_model)` fills a separate module used for rollouts and checkpoints.
"""

from __future__ import annotations

import torch
from diffusers.training_utils import EMAModel
from torch import nn


class ModelEMA:
    """decay(step) = min(1 - (1 + step) ** -power, max_value) (diffusers' warm-up form, inv_gamma 1)."""

    def __init__(self, model: nn.Module, power: float = 0.75, max_value: float = 0.9999, update_after_step: int = 0):
        self.param_names = [n for n, _ in model.named_parameters()]
        self.ema = EMAModel(
            model.parameters(),
            decay=max_value,
            min_decay=0.0,
            update_after_step=update_after_step,
            use_ema_warmup=True,
            inv_gamma=1.0,
            power=power,
        )
        self.buffers = {n: b.detach().clone() for n, b in model.named_buffers()}

    @property
    def decay(self) -> float:
        return float(getattr(self.ema, "cur_decay_value", None) or 0.0)

    @property
    def optimization_step(self) -> int:
        return int(self.ema.optimization_step)

    def _check_layout(self, model: nn.Module):
        names = [n for n, _ in model.named_parameters()]
        if names != self.param_names:
            raise ValueError(
                "model parameters differ from those the EMA was made for "
                f"({len(names)} vs {len(self.param_names)}); build the EMA after the model is complete"
            )

    @torch.no_grad()
    def step(self, model: nn.Module) -> None:
        self._check_layout(model)
        self.ema.step(model.parameters())
        self.buffers = {n: b.detach().clone() for n, b in model.named_buffers()}

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> nn.Module:
        """Write the averaged weights (and latest buffers) into ``model``; returns it."""
        self._check_layout(model)
        self.ema.copy_to(model.parameters())
        for name, buf in model.named_buffers():
            if name in self.buffers:
                buf.copy_(self.buffers[name].to(buf.device))
        return model

    def to(self, device) -> "ModelEMA":
        self.ema.to(device=device)
        self.buffers = {n: b.to(device) for n, b in self.buffers.items()}
        return self

    def state_dict(self) -> dict:
        return {"ema": self.ema.state_dict(), "param_names": list(self.param_names), "buffers": dict(self.buffers)}

    def load_state_dict(self, state: dict) -> None:
        if list(state["param_names"]) != self.param_names:
            raise ValueError("EMA state was saved for a model with different parameters")
        self.ema.load_state_dict(state["ema"])
        self.buffers = {n: b.clone() for n, b in state["buffers"].items()}


def make_ema(model: nn.Module, power: float = 0.75, max_value: float = 0.9999) -> ModelEMA:
    return ModelEMA(model, power=power, max_value=max_value)
