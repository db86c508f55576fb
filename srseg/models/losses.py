"""Loss terms of the multitask SR objective; the trainer weights and sums them.

pixel (L1/MSE) + perceptual (VGG19 features) + adversarial (standard or relativistic average GAN)
+ lambda_seg * segmentation cross-entropy. Every term returns a scalar tensor (mean reduction).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from srseg.models.vgg import VGG19Features

_CRITERIA = ("l1", "mse")


def _criterion(kind: str, name: str) -> nn.Module:
    if kind == "l1":
        return nn.L1Loss()
    if kind == "mse":
        return nn.MSELoss()
    raise ValueError(f"{name} must be one of {_CRITERIA}, got {kind!r}")


def _check_same_shape(pred: Tensor, target: Tensor) -> None:
    if pred.shape != target.shape:
        raise ValueError(f"prediction shape {tuple(pred.shape)} != target shape {tuple(target.shape)}")


class PixelLoss(nn.Module):
    """Mean absolute (``l1``) or squared (``mse``) error between SR output and HR target."""

    def __init__(self, kind: str = "l1") -> None:
        super().__init__()
        self.kind = kind
        self.criterion = _criterion(kind, "kind")

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        _check_same_shape(pred, target)
        return self.criterion(pred, target)


class PerceptualLoss(nn.Module):
    """Distance between frozen VGG19 features of SR output and HR target (Johnson et al.; SRGAN).

    ``layer`` is one name (default ``conv5_4``, pre-activation as in ESRGAN) or a list; per-layer
    ``layer_weights`` default to 1. ``weights`` selects the VGG19 parameters: ``"auto"`` (cached
    torchvision ImageNet file, never downloaded), a local state-dict path, or ``"random"`` (random,
    logged as a warning). Target features are computed without autograd.
    """

    def __init__(
        self,
        layer: str | Sequence[str] = "conv5_4",
        weights: str | os.PathLike[str] = "auto",
        layer_weights: Sequence[float] | None = None,
        criterion: str = "l1",
        use_input_norm: bool = True,
    ) -> None:
        super().__init__()
        layers = [layer] if isinstance(layer, str) else list(layer)
        if layer_weights is None:
            layer_weights = [1.0] * len(layers)
        if len(layer_weights) != len(layers):
            raise ValueError(f"layer_weights {list(layer_weights)} must have one entry per layer {layers}")
        self.layer_weights = dict(zip(layers, (float(w) for w in layer_weights)))
        self.criterion = _criterion(criterion, "criterion")
        self.vgg = VGG19Features(layers, weights=weights, use_input_norm=use_input_norm)

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        _check_same_shape(pred, target)
        pred_feats = self.vgg(pred)
        with torch.no_grad():
            target_feats = self.vgg(target.detach())
        loss = pred.new_zeros(())
        for name, weight in self.layer_weights.items():
            loss = loss + weight * self.criterion(pred_feats[name], target_feats[name])
        return loss


class AdversarialLoss:
    """GAN losses on discriminator logits, with BCE-with-logits.

    ``standard``: D maximises log D(real) + log(1 - D(fake)); G uses the non-saturating
    -log D(fake). ``relativistic``: relativistic average GAN as in ESRGAN, where D estimates whether
    real data is more realistic than the average fake (and vice versa) and G gets gradients from
    both real and fake logits. Both losses average their two BCE terms.
    """

    KINDS = ("standard", "relativistic")

    def __init__(self, kind: str = "relativistic") -> None:
        if kind not in self.KINDS:
            raise ValueError(f"adversarial kind must be one of {self.KINDS}, got {kind!r}")
        self.kind = kind

    @staticmethod
    def _bce(logits: Tensor, target_is_real: bool) -> Tensor:
        target = torch.ones_like(logits) if target_is_real else torch.zeros_like(logits)
        return F.binary_cross_entropy_with_logits(logits, target)

    def generator_loss(self, fake_logits: Tensor, real_logits: Tensor | None = None) -> Tensor:
        """Loss for G. ``real_logits`` (required for ``relativistic``) are treated as constants."""
        if self.kind == "standard":
            return self._bce(fake_logits, True)
        if real_logits is None:
            raise ValueError("relativistic generator_loss needs real_logits")
        real_logits = real_logits.detach()
        real_rel = real_logits - fake_logits.mean()
        fake_rel = fake_logits - real_logits.mean()
        return 0.5 * (self._bce(real_rel, False) + self._bce(fake_rel, True))

    def discriminator_loss(self, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
        """Loss for D; pass logits of detached fakes so G gets no gradient from this term."""
        if self.kind == "standard":
            return 0.5 * (self._bce(real_logits, True) + self._bce(fake_logits, False))
        real_rel = real_logits - fake_logits.mean()
        fake_rel = fake_logits - real_logits.mean()
        return 0.5 * (self._bce(real_rel, True) + self._bce(fake_rel, False))


class SegmentationLoss(nn.Module):
    """Pixel-wise cross-entropy on HR-resolution logits; ``ignore_index`` pixels do not count.

    The mean is over non-ignored pixels (weighted by ``class_weights`` when given, as in
    ``F.cross_entropy``). A batch with no labelled pixel yields an exact 0 (still attached to the
    graph) instead of PyTorch's 0/0 = NaN, since COCO-Stuff crops can be entirely unlabelled.
    """

    def __init__(self, ignore_index: int = 255, class_weights: Tensor | None = None) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        if class_weights is not None:
            class_weights = torch.as_tensor(class_weights, dtype=torch.float32)
            if class_weights.dim() != 1 or bool((class_weights < 0).any()):
                raise ValueError("class_weights must be a 1-D tensor of non-negative weights")
        self.class_weights: Tensor | None
        self.register_buffer("class_weights", class_weights)

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        if (
            logits.dim() != 4
            or labels.dim() != 3
            or logits.shape[0] != labels.shape[0]
            or (logits.shape[2:] != labels.shape[1:])
        ):
            raise ValueError(
                f"expected logits (N, C, H, W) and labels (N, H, W) on the same grid, "
                f"got {tuple(logits.shape)} and {tuple(labels.shape)}"
            )
        num_classes = logits.shape[1]
        weight = self.class_weights
        if weight is not None and weight.numel() != num_classes:
            raise ValueError(f"class_weights has {weight.numel()} entries but logits have {num_classes} classes")
        labels = labels.long()
        if weight is not None:
            weight = weight.to(dtype=logits.dtype)
        total = F.cross_entropy(logits, labels, weight=weight, ignore_index=self.ignore_index, reduction="sum")
        valid = labels != self.ignore_index
        if weight is None:
            denom = valid.sum().to(total.dtype)
        else:
            denom = weight[labels.clamp(0, num_classes - 1)].masked_fill(~valid, 0).sum()
        # No host sync: where() picks 0 when nothing is labelled (total is 0 then, too).
        return torch.where(denom > 0, total / denom.clamp_min(torch.finfo(total.dtype).tiny), total * 0.0)


def class_frequency_weights(counts: Tensor | Sequence[int], kind: str = "inverse_sqrt") -> Tensor:
    """Per-class loss weights from per-class pixel counts, to counter COCO-Stuff's class imbalance.

    With frequencies f_c = count_c / sum(counts):

    - ``inverse_sqrt``: w_c = 1 / sqrt(f_c), rescaled so the mean weight over present classes is 1
      (a milder rebalancing than 1/f, keeping the loss scale comparable to unweighted CE).
    - ``median_freq``: median frequency balancing (Eigen & Fergus, 2015), w_c = median(f) / f_c,
      with the median over present classes (average of the two middle values when their number is
      even) and f from global counts rather than per-image presence; the median class gets 1.

    Classes with a zero count get weight 0 (they never appear, so their weight is irrelevant and a
    finite value avoids inf). Returns a float32 tensor of the same length as ``counts``.
    """
    counts_t = torch.as_tensor(counts, dtype=torch.float64)
    if counts_t.dim() != 1 or counts_t.numel() == 0:
        raise ValueError(f"counts must be a non-empty 1-D sequence, got shape {tuple(counts_t.shape)}")
    if bool((counts_t < 0).any()):
        raise ValueError(f"counts must be non-negative, got {counts_t.tolist()}")
    present = counts_t > 0
    if not bool(present.any()):
        raise ValueError("counts are all zero: no class frequency to weight by")
    freq = counts_t / counts_t.sum()
    weights = torch.zeros_like(freq)
    if kind == "inverse_sqrt":
        raw = freq[present].rsqrt()
        weights[present] = raw / raw.mean()
    elif kind == "median_freq":
        weights[present] = torch.quantile(freq[present], 0.5) / freq[present]
    else:
        raise ValueError(f"kind must be 'inverse_sqrt' or 'median_freq', got {kind!r}")
    return weights.to(torch.float32)
