"""Loss terms: pixel, perceptual (weight sources), adversarial signs, segmentation CE, weights."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from srseg.models.losses import (
    AdversarialLoss,
    PerceptualLoss,
    PixelLoss,
    SegmentationLoss,
    class_frequency_weights,
)
from srseg.models.vgg import (
    RANDOM_WEIGHTS_WARNING,
    MissingWeightsError,
    VGG19Features,
    imagenet_vgg19_weights_location,
    vgg19_layer_names,
)


@pytest.fixture()
def tmp_torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty torch hub cache, so 'auto' can never see a real cached file."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    hub = Path(torch.hub.get_dir())
    if tmp_path not in hub.parents:
        pytest.skip(f"torch.hub dir was pinned elsewhere by set_dir: {hub}")
    return hub


def _random_vgg_state(seed: int) -> dict[str, torch.Tensor]:
    """A torchvision-format (``features.N.*``) random VGG19 state dict."""
    torch.manual_seed(seed)
    return VGG19Features("conv5_4", weights="random").state_dict()


def test_pixel_loss() -> None:
    a, b = torch.zeros(1, 3, 4, 4), torch.full((1, 3, 4, 4), 0.5)
    assert PixelLoss("l1")(a, b).item() == pytest.approx(0.5)
    assert PixelLoss("mse")(a, b).item() == pytest.approx(0.25)
    with pytest.raises(ValueError, match="'l2'"):
        PixelLoss("l2")
    with pytest.raises(ValueError, match="shape"):
        PixelLoss()(a, b[..., :3])


def test_perceptual_random_weights_warns_and_works(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="srseg.models.vgg"):
        loss_fn = PerceptualLoss(["conv3_4", "conv5_4"], weights="random", layer_weights=[0.5, 1.0])
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.getMessage() for r in warnings] == [RANDOM_WEIGHTS_WARNING]
    assert len(loss_fn.vgg.features) == vgg19_layer_names().index("conv5_4") + 1  # truncated
    assert not any(p.requires_grad for p in loss_fn.parameters())
    loss_fn.train()
    assert not loss_fn.vgg.training

    target = torch.rand(2, 3, 32, 32)
    pred = target.clone().requires_grad_(True)
    assert loss_fn(pred, target).item() == pytest.approx(0.0, abs=1e-7)
    pred2 = torch.rand(2, 3, 32, 32, requires_grad=True)
    value = loss_fn(pred2, target)
    assert value.item() > 0
    value.backward()
    assert pred2.grad is not None and pred2.grad.abs().sum() > 0


def test_intermediate_features_not_clobbered_by_inplace_relu() -> None:
    vgg = VGG19Features(["conv1_1", "relu1_1"], weights="random")
    feats = vgg(torch.rand(1, 3, 8, 8))
    assert (feats["conv1_1"] < 0).any()
    assert torch.equal(feats["relu1_1"], feats["conv1_1"].clamp_min(0))


def test_auto_without_cache_raises_with_path(tmp_torch_home: Path) -> None:
    path, url = imagenet_vgg19_weights_location()
    assert path == tmp_torch_home / "checkpoints" / "vgg19-dcbb9e9d.pth"
    with pytest.raises(MissingWeightsError) as info:
        PerceptualLoss(weights="auto")
    assert str(path) in str(info.value) and url in str(info.value)
    assert not path.exists()  # nothing was downloaded


def test_auto_uses_cached_file(tmp_torch_home: Path) -> None:
    path, _ = imagenet_vgg19_weights_location()
    path.parent.mkdir(parents=True)
    state = _random_vgg_state(1)
    torch.save(state, path)
    vgg = VGG19Features(["relu2_2"], weights="auto")
    assert vgg.weights_source == str(path)
    assert torch.equal(vgg.features[0].weight, state["features.0.weight"])


def test_local_weights_file(tmp_path: Path) -> None:
    path = tmp_path / "vgg19.pth"
    state = _random_vgg_state(1)
    torch.save(state, path)
    loaded = PerceptualLoss("conv5_4", weights=path)
    for key, value in loaded.vgg.features.state_dict().items():
        assert torch.equal(value, state[f"features.{key}"])
    torch.manual_seed(2)
    other = PerceptualLoss("conv5_4", weights="random")
    pred, target = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
    assert loaded(pred, target).item() != pytest.approx(other(pred, target).item(), rel=1e-3)
    with pytest.raises(MissingWeightsError, match="nope.pth"):
        PerceptualLoss(weights=tmp_path / "nope.pth")
    torch.save({"classifier.0.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="missing"):
        PerceptualLoss(weights=tmp_path / "bad.pth")


def test_unknown_layer() -> None:
    with pytest.raises(ValueError, match="conv6_1"):
        VGG19Features("conv6_1", weights="random")


@pytest.mark.parametrize("kind", ["standard", "relativistic"])
def test_adversarial_signs(kind: str) -> None:
    adv = AdversarialLoss(kind)
    high, low = torch.full((8, 1), 5.0), torch.full((8, 1), -5.0)
    # D does well when real logits >> fake logits, badly when reversed.
    assert adv.discriminator_loss(high, low) < 0.01
    assert adv.discriminator_loss(high, low) < adv.discriminator_loss(low, high)
    # G does well when its fakes look (more) real.
    assert adv.generator_loss(high, low) < adv.generator_loss(low, high)
    assert adv.generator_loss(high, low) < 0.01


def test_relativistic_generator_needs_real_logits_and_gets_grad() -> None:
    adv = AdversarialLoss("relativistic")
    with pytest.raises(ValueError, match="real_logits"):
        adv.generator_loss(torch.zeros(2, 1))
    fake = torch.zeros(4, 1, requires_grad=True)
    real = torch.ones(4, 1, requires_grad=True)
    adv.generator_loss(fake, real).backward()
    assert fake.grad is not None and real.grad is None
    with pytest.raises(ValueError, match="'wgan'"):
        AdversarialLoss("wgan")


def test_segmentation_loss_ignores_255() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 5, 5, requires_grad=True)
    labels = torch.randint(0, 4, (2, 5, 5))
    loss_fn = SegmentationLoss()
    ref = torch.nn.functional.cross_entropy(logits, labels)
    assert loss_fn(logits, labels).item() == pytest.approx(ref.item(), rel=1e-6)

    masked = labels.clone()
    masked[0] = 255
    expected = torch.nn.functional.cross_entropy(logits[1:], labels[1:])
    assert loss_fn(logits, masked).item() == pytest.approx(expected.item(), rel=1e-6)

    all_ignored = torch.full((2, 5, 5), 255, dtype=torch.uint8)
    value = loss_fn(logits, all_ignored)
    assert value.item() == 0.0
    value.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
    with pytest.raises(ValueError, match="same grid"):
        loss_fn(logits, labels[:, :4])


def test_segmentation_loss_class_weights_match_torch() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 4, 4)
    labels = torch.randint(0, 3, (2, 4, 4))
    labels[0, 0] = 255
    weights = torch.tensor([0.5, 2.0, 1.0])
    ref = torch.nn.functional.cross_entropy(logits, labels, weight=weights, ignore_index=255)
    assert SegmentationLoss(class_weights=weights)(logits, labels).item() == pytest.approx(ref.item(), rel=1e-6)
    with pytest.raises(ValueError, match="3 classes"):
        SegmentationLoss(class_weights=torch.ones(4))(logits, labels)


def test_class_frequency_weights_hand_example() -> None:
    counts = [1, 4, 0, 16]  # frequencies 1/21, 4/21, -, 16/21
    inv = class_frequency_weights(counts, "inverse_sqrt")
    # raw 1/sqrt(f) is proportional to 1, 1/2, 1/4; mean 7/12 -> 12/7, 6/7, 3/7
    assert torch.allclose(inv, torch.tensor([12 / 7, 6 / 7, 0.0, 3 / 7]))
    med = class_frequency_weights(counts, "median_freq")
    assert torch.allclose(med, torch.tensor([4.0, 1.0, 0.0, 0.25]))
    # even number of present classes: median is the mean of the middle two (2/10 and 3/10)
    even = class_frequency_weights([2, 3, 1, 4], "median_freq")
    assert torch.allclose(even, torch.tensor([1.25, 5 / 6, 2.5, 0.625]))
    with pytest.raises(ValueError, match="'log'"):
        class_frequency_weights(counts, "log")
    with pytest.raises(ValueError, match="non-negative"):
        class_frequency_weights([1, -1])
