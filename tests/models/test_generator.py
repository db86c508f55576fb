"""Generator: shapes, the SR-only inference path, SR-only export copy, channels_last, gradients."""

from __future__ import annotations

import pytest
import torch

from srseg.models.generator import MultiTaskSRNet, build_sr_only, count_parameters, upsample_factors


def _small(**kwargs: object) -> MultiTaskSRNet:
    base: dict[str, object] = {"num_features": 8, "num_blocks": 2, "num_classes": 8}
    base.update(kwargs)
    return MultiTaskSRNet(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("num_classes", [8, 171])
def test_shapes_odd_lr_size(scale: int, num_classes: int) -> None:
    torch.manual_seed(0)
    net = _small(scale=scale, num_classes=num_classes)
    lr = torch.rand(2, 3, 7, 11)
    sr, seg = net.forward_multitask(lr)
    assert sr.shape == (2, 3, 7 * scale, 11 * scale)
    assert seg.shape == (2, num_classes, 7 * scale, 11 * scale)
    assert net(lr).shape == sr.shape
    assert torch.equal(net(lr), sr)


def test_scale_8_and_invalid_scale() -> None:
    assert upsample_factors(8) == [2, 2, 2]
    assert upsample_factors(3) == [3]
    assert _small(scale=8, num_blocks=0)(torch.rand(1, 3, 3, 5)).shape == (1, 3, 24, 40)
    with pytest.raises(ValueError, match="scale.*5"):
        MultiTaskSRNet(scale=5)
    with pytest.raises(ValueError, match="first_kernel_size.*4"):
        MultiTaskSRNet(first_kernel_size=4)


def test_inference_forward_never_runs_seg_head() -> None:
    net = _small(seg_head_features=16)
    calls: list[int] = []
    assert net.seg_head is not None
    net.seg_head.register_forward_hook(lambda *_: calls.append(1))
    lr = torch.rand(1, 3, 5, 6)
    net(lr)
    net.super_resolve(lr)
    assert calls == []
    net.forward_multitask(lr)
    assert calls == [1]


def test_pure_sr_net() -> None:
    net = _small(num_classes=0)
    assert net.seg_head is None and not net.has_seg_head
    assert net(torch.rand(1, 3, 4, 4)).shape == (1, 3, 16, 16)
    with pytest.raises(RuntimeError, match="num_classes=0"):
        net.forward_multitask(torch.rand(1, 3, 4, 4))


@pytest.mark.parametrize("use_batchnorm", [False, True])
def test_build_sr_only_matches_and_is_smaller(use_batchnorm: bool) -> None:
    torch.manual_seed(0)
    net = _small(use_batchnorm=use_batchnorm, seg_head_features=16, first_kernel_size=3)
    if use_batchnorm:  # non-trivial running stats must be carried over too
        net.train()
        net(torch.rand(4, 3, 8, 8))
    net.eval()
    sr_net = build_sr_only(net)
    assert sr_net.num_classes == 0 and sr_net.seg_head is None
    assert not sr_net.training
    lr = torch.rand(2, 3, 7, 11)
    with torch.no_grad():
        diff = (sr_net(lr) - net(lr)).abs().max().item()
    assert diff <= 1e-6
    assert count_parameters(sr_net) < count_parameters(net)
    assert count_parameters(sr_net) == net.num_parameters(include_seg_head=False)
    assert not any(k.startswith("seg_head.") for k in net.sr_state_dict())


def test_channels_last_matches_contiguous() -> None:
    torch.manual_seed(0)
    net = _small(seg_head_features=16).eval()
    lr = torch.rand(2, 3, 7, 11)
    with torch.no_grad():
        ref_sr, ref_seg = net.forward_multitask(lr)
        net_cl = net.to(memory_format=torch.channels_last)
        sr, seg = net_cl.forward_multitask(lr.contiguous(memory_format=torch.channels_last))
    assert (sr - ref_sr).abs().max().item() <= 1e-5
    assert (seg - ref_seg).abs().max().item() <= 1e-5


def test_gradients_reach_both_heads_and_trunk() -> None:
    net = _small(seg_head_features=16)
    sr, seg = net.forward_multitask(torch.rand(2, 3, 6, 6))
    (sr.mean() + seg.mean()).backward()
    assert net.seg_head is not None
    for module in (net.sr_head, net.seg_head, net.head, net.decoder):
        grads = [p.grad for p in module.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
        assert any(g.abs().sum() > 0 for g in grads if g is not None)


def test_super_resolve_clamps_without_grad() -> None:
    net = _small()
    out = net.super_resolve(torch.rand(1, 3, 4, 4) * 10)
    assert not out.requires_grad
    assert out.min() >= 0 and out.max() <= 1


def test_config_round_trip() -> None:
    """A net rebuilt from its config has the same architecture and, with the weights, the same outputs."""
    net = _small(decoder_convs=2, use_batchnorm=True).eval()
    clone = MultiTaskSRNet(**net.config).eval()
    assert clone.config == net.config
    assert {k: v.shape for k, v in clone.state_dict().items()} == {k: v.shape for k, v in net.state_dict().items()}
    clone.load_state_dict(net.state_dict(), strict=True)
    x = torch.rand(1, 3, 12, 10, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        sr, logits = net.forward_multitask(x)
        sr2, logits2 = clone.forward_multitask(x)
    assert torch.equal(sr, sr2) and torch.equal(logits, logits2)


# ------------------------------------------------------------------------- global residual


def test_bicubic_global_residual_starts_exactly_at_bicubic() -> None:
    from srseg.degrade.bicubic import imresize

    torch.manual_seed(0)
    net = _small(global_residual="bicubic")
    assert net.config["global_residual"] == "bicubic"
    assert not net.sr_head.weight.any() and not net.sr_head.bias.any()
    lr = torch.rand(2, 3, 7, 9)
    sr, logits = net.forward_multitask(lr)
    assert (sr - imresize(lr, scale=4.0)).abs().max() <= 1e-5
    assert torch.equal(net(lr), sr) and logits.shape == (2, 8, 28, 36)
    # gradients reach the trunk once the head is non-zero: the residual is learnable
    with torch.no_grad():
        net.sr_head.weight.normal_(std=0.01)
    net(lr).square().mean().backward()
    assert net.head[0].weight.grad is not None and net.head[0].weight.grad.abs().sum() > 0


def test_global_residual_is_validated_and_kept_by_the_sr_only_copy() -> None:
    with pytest.raises(ValueError, match="global_residual"):
        _small(global_residual="nearest")
    torch.manual_seed(1)
    net = _small(global_residual="bicubic")
    with torch.no_grad():
        net.sr_head.weight.normal_(std=0.05)
    sr_net = build_sr_only(net)
    lr = torch.rand(1, 3, 6, 5)
    assert sr_net.config["global_residual"] == "bicubic"
    assert (sr_net(lr) - net(lr)).abs().max() <= 1e-6


def test_registry_builds_by_name_and_names_unknown_architectures() -> None:
    from srseg.config import GeneratorConfig
    from srseg.models import registry

    net = registry.build_generator("multitask_srresnet", {"num_features": 8, "num_blocks": 1, "num_classes": 3})
    assert isinstance(net, MultiTaskSRNet) and registry.architecture_of(net) == "multitask_srresnet"
    with pytest.raises(ValueError, match="unknown generator architecture 'rrdb'.*multitask_srresnet"):
        registry.build_generator("rrdb", {})
    with pytest.raises(TypeError, match="Conv2d is not a registered generator"):
        registry.architecture_of(torch.nn.Conv2d(3, 3, 3))
    # the params schema accepts exactly the registered names
    choices = GeneratorConfig.model_fields["architecture"].annotation.__args__
    assert set(choices) == set(registry.GENERATORS)
