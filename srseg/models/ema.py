"""Exponential moving average of a model's weights, for smoother GAN generators at evaluation.

The EMA copy is a deep copy of the (unwrapped) model, kept in eval mode with no grad. Every
floating-point entry of the state dict (parameters and buffers such as BatchNorm running stats)
is averaged; integer buffers (e.g. ``num_batches_tracked``) are copied.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


def unwrap_model(model: nn.Module) -> nn.Module:
    """The underlying module of DDP/DataParallel (``.module``) or torch.compile (``._orig_mod``)."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


class ModelEMA:
    """ema = d * ema + (1 - d) * model after each ``update``; decay=0 copies exactly.

    With ``warmup`` the effective decay is ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates,
    so short runs and the first thousand steps of long ones are not dominated by the random
    initial weights (a 0.999 EMA still holds 37% of them after 1000 plain updates).
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, warmup: bool = True) -> None:
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"EMA decay must be in [0, 1], got {decay!r}")
        self.decay = float(decay)
        self.warmup = warmup
        self.num_updates = 0
        self.module = copy.deepcopy(unwrap_model(model))
        self.module.eval()
        for param in self.module.parameters():
            param.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average one step towards ``model`` (which may be DDP-wrapped)."""
        source = unwrap_model(model).state_dict()
        target = self.module.state_dict()  # tensors share storage with self.module
        if source.keys() != target.keys():
            diff = sorted(set(source) ^ set(target))
            raise ValueError(f"model and EMA copy have different state dict keys: {diff[:6]}")
        decay = self.effective_decay()
        for key, ema_value in target.items():
            value = source[key].detach().to(device=ema_value.device)
            if ema_value.is_floating_point() and decay > 0.0:
                ema_value.mul_(decay).add_(value.to(ema_value.dtype), alpha=1.0 - decay)
            else:
                ema_value.copy_(value)
        self.num_updates += 1

    def effective_decay(self) -> float:
        """The decay the next ``update`` uses."""
        if not self.warmup:
            return self.decay
        return min(self.decay, (1.0 + self.num_updates) / (10.0 + self.num_updates))

    def to(self, *args: Any, **kwargs: Any) -> ModelEMA:
        """Move the EMA copy, e.g. to the training device after a CPU resume."""
        self.module.to(*args, **kwargs)
        return self

    def state_dict(self) -> dict[str, Any]:
        return {"module": self.module.state_dict(), "decay": self.decay, "num_updates": self.num_updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore weights and counters; the decay configured now wins over the stored one."""
        missing = {"module", "num_updates"} - set(state)
        if missing:
            raise ValueError(f"EMA state is missing {sorted(missing)}")
        self.module.load_state_dict(state["module"], strict=True)
        self.num_updates = int(state["num_updates"])
