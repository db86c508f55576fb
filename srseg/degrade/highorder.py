"""Real-ESRGAN-style second-order degradation (Wang et al., ICCVW 2021), seeded and reproducible.

Bicubic LR teaches a network one clean degradation; real photos are blurred, resized, noisy and
JPEG-compressed, repeatedly. This applies that chain twice, then resizes to HR/scale:

    [blur -> random resize -> Gaussian|Poisson noise -> JPEG] x 2
    -> (resize to target + sinc -> JPEG) or (JPEG -> resize to target + sinc)

Reproducibility: every random choice is drawn from the caller's ``torch.Generator`` in a fixed
order, so the same generator state, inputs and parameters give the same output. Scalars and noise
are drawn on the generator's device and moved to the image's device; with a CPU generator the
draws do not depend on where the images live. Per image: blur kernel, noise kind/level/colour,
JPEG quality. Per batch: resize factor and interpolation mode (one output size per batch, as in
Real-ESRGAN). An image's result therefore depends on the batch it is in; degrade one image per
call (as ``degrade_folder`` does) for order-independent results.

Deviations from the reference implementation, chosen for determinism and simplicity:
- Poisson noise uses a fixed 256 counts at full scale (Real-ESRGAN counts the image's distinct
  8-bit levels, rounded up to a power of two, which is 256 for almost every photograph).
- JPEG is a real libjpeg round trip through Pillow on the CPU, per image (4:2:0 chroma
  subsampling, libjpeg's quality tables), instead of Real-ESRGAN's differentiable JPEG: this is
  data synthesis, not part of the graph, so gradients are not needed. (torchvision's
  encode_jpeg would do the same, but its codecs are deprecated since torchvision 0.29.)
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

KERNEL_TYPES = ("iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso")
RESIZE_MODES = ("area", "bilinear", "bicubic", "nearest")
_MAX_KERNEL = 31
_FINAL_SINC_SIZE = 21


@dataclass(frozen=True)
class HighOrderParams:
    """Parameters of the two degradation passes; defaults are Real-ESRGAN's x4 training config.

    Ranges are (low, high) and sampled uniformly; ``*_prob`` are probabilities. Fields ending in
    ``2`` configure the second pass. Lists are accepted and stored as tuples (so YAML loads work).
    """

    kernel_list: tuple[str, ...] = KERNEL_TYPES
    kernel_prob: tuple[float, ...] = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)
    kernel_range: tuple[int, int] = (7, 21)
    blur_prob: float = 1.0  # first-pass blur; Real-ESRGAN always blurs
    sinc_prob: float = 0.1
    blur_sigma: tuple[float, float] = (0.2, 3.0)
    betag_range: tuple[float, float] = (0.5, 4.0)
    betap_range: tuple[float, float] = (1.0, 2.0)
    resize_prob: tuple[float, float, float] = (0.2, 0.7, 0.1)  # up, down, keep
    resize_range: tuple[float, float] = (0.15, 1.5)
    resize_modes: tuple[str, ...] = ("area", "bilinear", "bicubic")
    gaussian_noise_prob: float = 0.5
    noise_range: tuple[float, float] = (1.0, 30.0)  # Gaussian sigma on the 0..255 scale
    poisson_scale_range: tuple[float, float] = (0.05, 3.0)
    gray_noise_prob: float = 0.4
    jpeg_range: tuple[int, int] = (30, 95)

    second_blur_prob: float = 0.8
    sinc_prob2: float = 0.1
    blur_sigma2: tuple[float, float] = (0.2, 1.5)
    betag_range2: tuple[float, float] = (0.5, 4.0)
    betap_range2: tuple[float, float] = (1.0, 2.0)
    resize_prob2: tuple[float, float, float] = (0.3, 0.4, 0.3)
    resize_range2: tuple[float, float] = (0.3, 1.2)
    gaussian_noise_prob2: float = 0.5
    noise_range2: tuple[float, float] = (1.0, 25.0)
    poisson_scale_range2: tuple[float, float] = (0.05, 2.5)
    gray_noise_prob2: float = 0.4
    jpeg_range2: tuple[int, int] = (30, 95)

    final_sinc_prob: float = 0.8

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, list):
                object.__setattr__(self, f.name, tuple(value))
        self._validate()

    def _fail(self, name: str, message: str) -> None:
        raise ValueError(f"HighOrderParams.{name}: {message} (got {getattr(self, name)!r})")

    def _check_prob(self, name: str) -> None:
        value = getattr(self, name)
        if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
            self._fail(name, "must be a probability in [0, 1]")

    def _check_range(self, name: str, low: float, high: float, integer: bool = False) -> None:
        value = getattr(self, name)
        if not isinstance(value, tuple) or len(value) != 2:
            self._fail(name, "must be a (low, high) pair")
        kinds = (int,) if integer else (int, float)
        if not all(isinstance(v, kinds) and not isinstance(v, bool) for v in value):
            self._fail(name, "must hold " + ("integers" if integer else "numbers"))
        if not (low <= value[0] <= value[1] <= high):
            self._fail(name, f"must satisfy {low} <= low <= high <= {high}")

    def _check_distribution(self, name: str, length: int) -> None:
        value = getattr(self, name)
        if not isinstance(value, tuple) or len(value) != length or any(p < 0 for p in value):
            self._fail(name, f"must be {length} non-negative probabilities")
        if abs(sum(value) - 1.0) > 1e-6:
            self._fail(name, "must sum to 1")

    def _validate(self) -> None:
        if not self.kernel_list or any(k not in KERNEL_TYPES for k in self.kernel_list):
            self._fail("kernel_list", f"must be a non-empty subset of {KERNEL_TYPES}")
        self._check_distribution("kernel_prob", len(self.kernel_list))
        self._check_range("kernel_range", 3, _MAX_KERNEL, integer=True)
        if self.kernel_range[0] % 2 == 0 or self.kernel_range[1] % 2 == 0:
            self._fail("kernel_range", "sizes must be odd")
        if not self.resize_modes or any(m not in RESIZE_MODES for m in self.resize_modes):
            self._fail("resize_modes", f"must be a non-empty subset of {RESIZE_MODES}")
        for name in (
            "blur_prob",
            "sinc_prob",
            "sinc_prob2",
            "gaussian_noise_prob",
            "gaussian_noise_prob2",
            "gray_noise_prob",
            "gray_noise_prob2",
            "second_blur_prob",
            "final_sinc_prob",
        ):
            self._check_prob(name)
        for name in ("blur_sigma", "blur_sigma2"):
            self._check_range(name, 1e-3, 100.0)
        for name in ("betag_range", "betag_range2", "betap_range", "betap_range2"):
            self._check_range(name, 1e-3, 100.0)
        for name in ("resize_prob", "resize_prob2"):
            self._check_distribution(name, 3)
        for name in ("resize_range", "resize_range2"):
            self._check_range(name, 1e-3, 100.0)
            low, high = getattr(self, name)
            if not low <= 1.0 <= high:
                self._fail(name, "must contain 1 (down factors come from [low, 1], up from [1, high])")
        for name in ("noise_range", "noise_range2"):
            self._check_range(name, 0.0, 255.0)
        for name in ("poisson_scale_range", "poisson_scale_range2"):
            self._check_range(name, 0.0, 100.0)
        for name in ("jpeg_range", "jpeg_range2"):
            self._check_range(name, 1, 100, integer=True)

    @classmethod
    def from_config(cls, cfg: Any) -> HighOrderParams:
        """Build from the short ``degrade.high_order`` section of params.yaml (srseg.config).

        That section names a subset of the knobs; ``jpeg_quality`` and ``gray_noise_prob`` apply
        to both passes, the other ranges to the first pass (the second pass keeps Real-ESRGAN's
        narrower defaults). Missing attributes keep their defaults; a Mapping works too.
        """
        get = cfg.get if isinstance(cfg, Mapping) else lambda name, default=None: getattr(cfg, name, default)
        mapping = {
            "blur_prob": ("blur_prob",),
            "blur_sigma": ("blur_sigma",),
            "resize_range": ("resize_range",),
            "noise_sigma": ("noise_range",),
            "poisson_scale": ("poisson_scale_range",),
            "gray_noise_prob": ("gray_noise_prob", "gray_noise_prob2"),
            "jpeg_quality": ("jpeg_range", "jpeg_range2"),
            "second_blur_prob": ("second_blur_prob",),
        }
        values: dict[str, Any] = {}
        for source, targets in mapping.items():
            value = get(source, None)
            if value is not None:
                for target in targets:
                    values[target] = tuple(value) if isinstance(value, (list, tuple)) else value
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (tuples become lists), for manifests and run metadata."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


class _Draw:
    """Scalar random draws from one generator, in call order."""

    def __init__(self, generator: torch.Generator) -> None:
        self.generator = generator

    def uniform(self, low: float, high: float) -> float:
        u = float(torch.rand((), generator=self.generator, device=self.generator.device))
        return low + (high - low) * u

    def chance(self, p: float) -> bool:
        return self.uniform(0.0, 1.0) < p

    def choice(self, probs: tuple[float, ...]) -> int:
        weights = torch.tensor(probs, dtype=torch.float64, device=self.generator.device)
        return int(torch.multinomial(weights, 1, generator=self.generator))

    def odd(self, low: int, high: int) -> int:
        count = (high - low) // 2 + 1
        return low + 2 * min(count - 1, int(self.uniform(0.0, count)))


def _beta(draw: _Draw, low: float, high: float) -> float:
    """Shape parameter: half the time below 1, half above (Real-ESRGAN's split), when the range allows."""
    if low < 1.0 < high:
        return draw.uniform(low, 1.0) if draw.chance(0.5) else draw.uniform(1.0, high)
    return draw.uniform(low, high)


def _quadratic_form(size: int, sigma_x: float, sigma_y: float, theta: float) -> torch.Tensor:
    """x^T Sigma^-1 x on a centred size x size grid for a rotated anisotropic covariance."""
    c, s = math.cos(theta), math.sin(theta)
    # Sigma = R diag(sx^2, sy^2) R^T, so Sigma^-1 = R diag(1/sx^2, 1/sy^2) R^T.
    a = c * c / sigma_x**2 + s * s / sigma_y**2
    b = c * s * (1.0 / sigma_x**2 - 1.0 / sigma_y**2)
    d = s * s / sigma_x**2 + c * c / sigma_y**2
    axis = torch.arange(size, dtype=torch.float64) - (size - 1) / 2.0
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")
    return a * xx * xx + 2.0 * b * xx * yy + d * yy * yy


def sinc_kernel(size: int, cutoff: float) -> torch.Tensor:
    """Circular low-pass (2-D sinc) kernel with cutoff ``cutoff`` rad/sample, normalised to sum 1."""
    axis = torch.arange(size, dtype=torch.float64) - (size - 1) / 2.0
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")
    r = torch.sqrt(xx * xx + yy * yy)
    safe = torch.where(r == 0, torch.ones_like(r), r)
    kernel = cutoff * torch.special.bessel_j1(cutoff * safe) / (2.0 * math.pi * safe)
    kernel = torch.where(r == 0, torch.full_like(r, cutoff * cutoff / (4.0 * math.pi)), kernel)
    return kernel / kernel.sum()


def _random_kernel(draw: _Draw, p: HighOrderParams, second: bool) -> torch.Tensor:
    size = draw.odd(*p.kernel_range)
    if draw.chance(p.sinc_prob2 if second else p.sinc_prob):
        cutoff = draw.uniform(math.pi / 3, math.pi) if size < 13 else draw.uniform(math.pi / 5, math.pi)
        return sinc_kernel(size, cutoff)
    kind = p.kernel_list[draw.choice(p.kernel_prob)]
    sigma_range = p.blur_sigma2 if second else p.blur_sigma
    sigma_x = draw.uniform(*sigma_range)
    if kind.endswith("aniso"):
        sigma_y = draw.uniform(*sigma_range)
        theta = draw.uniform(-math.pi, math.pi)
    else:
        sigma_y, theta = sigma_x, 0.0
    q = _quadratic_form(size, sigma_x, sigma_y, theta)
    if kind.startswith("generalized"):
        kernel = torch.exp(-0.5 * q.pow(_beta(draw, *(p.betag_range2 if second else p.betag_range))))
    elif kind.startswith("plateau"):
        kernel = 1.0 / (q.pow(_beta(draw, *(p.betap_range2 if second else p.betap_range))) + 1.0)
    else:
        kernel = torch.exp(-0.5 * q)
    return kernel / kernel.sum()


def _pad_kernel(kernel: torch.Tensor, size: int) -> torch.Tensor:
    pad = (size - kernel.shape[-1]) // 2
    return F.pad(kernel, (pad, pad, pad, pad))


def _filter(images: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Convolve image n with kernels[n] (K, K), all channels, reflect-padded (replicate if tiny)."""
    n, c, h, w = images.shape
    k = kernels.shape[-1]
    pad = k // 2
    mode = "reflect" if pad < h and pad < w else "replicate"
    padded = F.pad(images, (pad, pad, pad, pad), mode=mode).reshape(1, n * c, h + 2 * pad, w + 2 * pad)
    weight = kernels.to(images).repeat_interleave(c, dim=0).unsqueeze(1)  # (n*c, 1, K, K)
    return F.conv2d(padded, weight, groups=n * c).reshape(n, c, h, w)


def _resize(images: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    if mode in ("bilinear", "bicubic"):
        return F.interpolate(images, size=size, mode=mode, align_corners=False)
    return F.interpolate(images, size=size, mode=mode)


def _random_resize(
    images: torch.Tensor, draw: _Draw, probs: tuple[float, ...], span: tuple[float, float], modes: tuple[str, ...]
) -> torch.Tensor:
    kind = draw.choice(probs)
    factor = draw.uniform(1.0, span[1]) if kind == 0 else draw.uniform(span[0], 1.0) if kind == 1 else 1.0
    mode = modes[draw.choice(tuple(1.0 / len(modes) for _ in modes))]
    h, w = images.shape[-2:]
    size = (max(1, int(h * factor)), max(1, int(w * factor)))
    return _resize(images, size, mode)


def _add_noise(images: torch.Tensor, draw: _Draw, p: HighOrderParams, second: bool) -> torch.Tensor:
    gen = draw.generator
    n = images.shape[0]
    gaussian_prob = p.gaussian_noise_prob2 if second else p.gaussian_noise_prob
    gray_prob = p.gray_noise_prob2 if second else p.gray_noise_prob
    sigma_range = p.noise_range2 if second else p.noise_range
    poisson_range = p.poisson_scale_range2 if second else p.poisson_scale_range
    out = []
    for i in range(n):
        image = images[i : i + 1]
        gray = draw.chance(gray_prob)
        if draw.chance(gaussian_prob):
            sigma = draw.uniform(*sigma_range) / 255.0
            shape = (1, 1 if gray else 3, *image.shape[-2:])
            noise = torch.randn(shape, generator=gen, device=gen.device, dtype=torch.float32) * sigma
        else:
            scale = draw.uniform(*poisson_range)
            source = image.to(gen.device, torch.float32).clamp(0.0, 1.0)
            if gray:
                weights = torch.tensor([0.299, 0.587, 0.114], device=gen.device).view(1, 3, 1, 1)
                source = (source * weights).sum(dim=1, keepdim=True)
            quantised = torch.round(source * 255.0) / 255.0
            counts = torch.poisson(quantised * 256.0, generator=gen)
            noise = (counts / 256.0 - quantised) * scale
        out.append((image + noise.to(image)).clamp(0.0, 1.0))
    return torch.cat(out)


def _jpeg(images: torch.Tensor, draw: _Draw, quality_range: tuple[int, int]) -> torch.Tensor:
    """Round-trip each image through an 8-bit baseline JPEG (Pillow/libjpeg, 4:2:0) at a random quality."""
    out = []
    for i in range(images.shape[0]):
        quality = int(round(draw.uniform(quality_range[0], quality_range[1])))
        pixels = torch.round(images[i].clamp(0.0, 1.0) * 255.0).to(torch.uint8).permute(1, 2, 0).cpu().numpy()
        buffer = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(pixels)).save(buffer, format="JPEG", quality=quality)
        buffer.seek(0)
        with Image.open(buffer) as decoded:
            array = np.array(decoded.convert("RGB"), dtype=np.uint8)
        out.append(torch.from_numpy(array).permute(2, 0, 1).to(images.device, images.dtype) / 255.0)
    return torch.stack(out)


def degrade_high_order(
    hr: torch.Tensor,
    scale: int,
    params: HighOrderParams | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Degrade a float (N, 3, H, W) batch in [0, 1] to (N, 3, H // scale, W // scale) in [0, 1].

    The result is quantised to 8-bit levels (k / 255), as an LR image read from disk would be.
    ``generator`` defaults to a fresh CPU generator seeded with 0, never to the global RNG.
    """
    if hr.dim() != 4 or hr.shape[1] != 3:
        raise ValueError(f"degrade_high_order: expected (N, 3, H, W), got shape {tuple(hr.shape)}")
    if not hr.is_floating_point():
        raise TypeError(f"degrade_high_order: expected a float tensor in [0, 1], got {hr.dtype}")
    if int(scale) != scale or scale < 1:
        raise ValueError(f"degrade_high_order: scale must be a positive integer, got {scale!r}")
    scale = int(scale)
    h, w = int(hr.shape[-2]), int(hr.shape[-1])
    if h < scale or w < scale:
        raise ValueError(f"degrade_high_order: image {h}x{w} is smaller than the scale {scale}")
    params = params or HighOrderParams()
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    draw = _Draw(generator)
    n = hr.shape[0]
    work_dtype = torch.float64 if hr.dtype == torch.float64 else torch.float32
    out = hr.to(work_dtype)
    max_k = params.kernel_range[1]

    # First pass: blur (always, by default), then resize, noise, JPEG.
    if draw.chance(params.blur_prob):
        kernels = torch.stack([_pad_kernel(_random_kernel(draw, params, False), max_k) for _ in range(n)])
        out = _filter(out, kernels)
    out = _random_resize(out, draw, params.resize_prob, params.resize_range, params.resize_modes)
    out = _add_noise(out, draw, params, second=False)
    out = _jpeg(out, draw, params.jpeg_range)

    # Second pass: blur with probability, then the same chain with the "2" parameters.
    if draw.chance(params.second_blur_prob):
        kernels = torch.stack([_pad_kernel(_random_kernel(draw, params, True), max_k) for _ in range(n)])
        out = _filter(out, kernels)
    out = _random_resize(out, draw, params.resize_prob2, params.resize_range2, params.resize_modes)
    out = _add_noise(out, draw, params, second=True)

    # Final: resize to the target plus an optional sinc filter, JPEG before or after (50/50).
    identity = torch.zeros(_FINAL_SINC_SIZE, _FINAL_SINC_SIZE, dtype=torch.float64)
    identity[_FINAL_SINC_SIZE // 2, _FINAL_SINC_SIZE // 2] = 1.0
    finals = []
    for _ in range(n):
        if draw.chance(params.final_sinc_prob):
            finals.append(sinc_kernel(_FINAL_SINC_SIZE, draw.uniform(math.pi / 3, math.pi)))
        else:
            finals.append(identity)
    final_kernels = torch.stack(finals)
    target = (h // scale, w // scale)
    mode = params.resize_modes[draw.choice(tuple(1.0 / len(params.resize_modes) for _ in params.resize_modes))]
    if draw.chance(0.5):
        out = _filter(_resize(out, target, mode), final_kernels)
        out = _jpeg(out, draw, params.jpeg_range2)
    else:
        out = _jpeg(out, draw, params.jpeg_range2)
        out = _filter(_resize(out, target, mode), final_kernels)
    out = torch.clamp(torch.round(out * 255.0), 0.0, 255.0) / 255.0
    return out.to(hr.dtype)
