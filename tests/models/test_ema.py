"""EMA: convergence towards the model, exact copy at decay 0, buffers, wrappers, state round trip."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from srseg.models.ema import ModelEMA


def _net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))


def _max_diff(a: nn.Module, b: nn.Module) -> float:
    sb = b.state_dict()
    return max((v.double() - sb[k].double()).abs().max().item() for k, v in a.state_dict().items())


def test_converges_towards_model_weights() -> None:
    torch.manual_seed(0)
    model = _net()
    ema = ModelEMA(model, decay=0.9, warmup=False)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    model.train()
    model(torch.randn(2, 3, 5, 5))  # changes BatchNorm running stats (buffers)
    diffs = []
    for _ in range(100):
        ema.update(model)
        diffs.append(_max_diff(ema.module, model))
    assert all(b <= a for a, b in zip(diffs, diffs[1:]))
    assert diffs[-1] < 1e-4
    assert ema.num_updates == 100
    assert ema.module.state_dict()["1.num_batches_tracked"] == 1


def test_decay_zero_copies_exactly_and_handles_wrappers() -> None:
    torch.manual_seed(0)
    model = _net()
    ema = ModelEMA(nn.DataParallel(model), decay=0.0)
    assert not any(p.requires_grad for p in ema.module.parameters())
    assert not ema.module.training
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.7).add_(0.123)
    ema.update(nn.DataParallel(model))
    for key, value in model.state_dict().items():
        assert torch.equal(ema.module.state_dict()[key], value)


def test_ema_is_a_copy_and_state_round_trip() -> None:
    model = _net()
    ema = ModelEMA(model, decay=0.5)
    with torch.no_grad():
        model[0].weight.add_(1.0)
    assert not torch.equal(ema.module[0].weight, model[0].weight)
    ema.update(model)
    restored = ModelEMA(_net(), decay=0.5)
    restored.load_state_dict(ema.state_dict())
    assert _max_diff(restored.module, ema.module) == 0.0
    assert restored.num_updates == 1
    with pytest.raises(ValueError, match="decay"):
        ModelEMA(model, decay=1.5)


def test_warmup_limits_early_decay_and_reaches_configured_decay() -> None:
    model = torch.nn.Linear(2, 2)
    ema = ModelEMA(model, decay=0.999)
    assert ema.effective_decay() == pytest.approx(0.1)  # first update keeps 10% of the random init
    for _ in range(20000):
        ema.num_updates += 1
    assert ema.effective_decay() == pytest.approx(0.999)
    assert ModelEMA(model, decay=0.999, warmup=False).effective_decay() == 0.999
