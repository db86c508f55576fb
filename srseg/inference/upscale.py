"""``srseg upscale``: super-resolve image files with a trained SR head, tile by tile.

Models (the ``model`` string):

- a path to generator / SR-head weights (``.safetensors`` with its ``.json`` sidecar, see
  :mod:`srseg.models.io`; a segmentation head, if present, is dropped), an export folder holding
  ``sr_head.safetensors``, a TorchScript file (``.pt``, ``.pth``, ``.torchscript``) or an ONNX
  file (``.onnx``, run with ONNX Runtime);
- ``bicubic``: MATLAB-compatible bicubic upscaling (:func:`srseg.degrade.bicubic.imresize`), the
  baseline;
- an MLflow URI (``models:/NAME@ALIAS``, ``models:/NAME/VERSION``, ``runs:/RUN_ID/PATH``) from
  the tracking store ``tracking_uri`` (default: MLflow's own resolution, i.e.
  ``MLFLOW_TRACKING_URI``). SR heads logged by ``srseg.registry`` (safetensors inside a pyfunc
  model) are rebuilt with ``srseg.registry.loader.load_sr_head_dir``, unpickling nothing; any
  other model is loaded with ``mlflow.pytorch.load_model`` and must accept any (N, 3, h, w)
  input (log it with ``serialization_format="pickle"``; a static-shape ``pt2`` export is refused).

Image conversion (outputs are always 8-bit PNG, written atomically under the input's name):

- EXIF orientation is applied first, so the output is in display orientation (and carries no
  Orientation tag).
- Colour goes through the network as RGB floats in [0, 1]. Grayscale inputs (1, L, LA, I;16, I)
  are replicated to RGB and the output is converted back to one channel with ITU-R 601 luma, so a
  gray image stays gray. CMYK, YCbCr, palette etc. are converted to RGB by Pillow.
- 16-bit inputs (I;16 grayscale, 16-bit RGB/RGBA PNG) are read at full precision (v / 65535)
  and written as 8-bit, because the model was trained on 8-bit images and adds no real precision.
- Alpha (RGBA, LA, PA, palette transparency) is not fed to the network: it is upscaled separately
  with MATLAB-style bicubic (``imresize``) and re-attached, so transparency edges stay smooth.
"""

from __future__ import annotations

import io
import logging
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor, nn

from srseg.fileio import atomic_open
from srseg.inference.tiling import receptive_field_radius, tiled_super_resolve

logger = logging.getLogger(__name__)

Device = Literal["auto", "cpu", "cuda"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})
TORCHSCRIPT_SUFFIXES = frozenset({".pt", ".pth", ".torchscript"})
MLFLOW_SCHEMES = ("models:/", "runs:/", "mlflow-artifacts:/")
BICUBIC_RADIUS = 2  # LR px: Keys cubic (4 taps) when enlarging
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N"})
_LUMA = (0.299, 0.587, 0.114)


class UpscaleError(ValueError):
    """A model string, input path or image that ``upscale`` cannot use; the message names it."""


@dataclass
class SRModel:
    """A loaded SR model as a batch function ``(N, 3, h, w) -> (N, 3, scale*h, scale*w)``."""

    fn: Callable[[Tensor], Tensor]
    scale: int
    name: str
    device: torch.device
    receptive_radius: int | None = None  # LR px; None when unknown (TorchScript, ONNX, MLflow)
    autocast_ok: bool = True  # False for bicubic and ONNX Runtime


@dataclass
class LoadedImage:
    """An image ready for the network: RGB and optional alpha as float (C, H, W) in [0, 1]."""

    rgb: Tensor
    alpha: Tensor | None
    gray: bool


# --------------------------------------------------------------------------------------- devices


def resolve_device(device: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; asking for CUDA without one is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu":
        return torch.device("cpu")
    if device == "cuda":
        if not torch.cuda.is_available():
            raise UpscaleError("device 'cuda' requested but torch.cuda.is_available() is False")
        return torch.device("cuda")
    raise UpscaleError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype for ``precision`` on ``device``; None means plain fp32.

    ``auto`` is bf16 on GPUs that support it (fp16 otherwise) and fp32 on CPU; reduced precision
    on CPU is refused because CPU kernels gain little from it and it changes the output.
    """
    choices = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
    if precision == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if precision not in choices:
        raise UpscaleError(f"precision must be 'auto', 'fp32', 'bf16' or 'fp16', got {precision!r}")
    if choices[precision] is not None and device.type != "cuda":
        raise UpscaleError(f"precision {precision!r} needs a CUDA device (got {device.type}); use 'fp32' or 'auto'")
    return choices[precision]


# ---------------------------------------------------------------------------------------- models


def _bicubic_model(scale: int, device: torch.device) -> SRModel:
    try:
        from srseg.degrade.bicubic import imresize
    except ImportError as exc:  # pragma: no cover - present in the package
        raise UpscaleError(f"model 'bicubic' needs srseg.degrade.bicubic.imresize ({exc})") from exc

    def fn(x: Tensor) -> Tensor:
        return imresize(x.float(), scale=scale)

    return SRModel(fn, scale, "bicubic", device, BICUBIC_RADIUS, autocast_ok=False)


def _module_model(module: nn.Module, name: str, device: torch.device) -> SRModel:
    """Wrap an nn.Module (MultiTaskSRNet, TorchScript, MLflow) whose forward returns the SR image."""
    from srseg.models.generator import MultiTaskSRNet, build_sr_only
    from srseg.models.registry import architecture_of

    radius = None
    if isinstance(module, MultiTaskSRNet):
        if module.has_seg_head:
            module = build_sr_only(module)
        radius = receptive_field_radius(module.config, architecture_of(module))
    module = module.to(device).eval()

    def fn(x: Tensor) -> Tensor:
        out = module(x)
        if isinstance(out, (tuple, list)):  # a multitask forward: (sr, seg)
            out = out[0]
        return out

    return SRModel(fn, 0, name, device, radius)


def _onnx_model(path: Path, device: torch.device) -> SRModel:
    import onnxruntime as ort

    providers = ["CPUExecutionProvider"]
    if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    try:
        session = ort.InferenceSession(str(path), providers=providers)
    except Exception as exc:  # onnxruntime raises its own exception types
        raise UpscaleError(f"model {str(path)!r}: not a loadable ONNX file ({exc})") from exc
    input_name = session.get_inputs()[0].name

    def fn(x: Tensor) -> Tensor:
        out = session.run(None, {input_name: x.detach().float().cpu().numpy()})[0]
        return torch.from_numpy(out).to(x.device)

    return SRModel(fn, 0, str(path), device, None, autocast_ok=False)


def _load_mlflow(uri: str, device: torch.device, tracking_uri: str | None) -> nn.Module:
    """Download ``uri`` and load it: srseg SR heads (safetensors, see srseg.registry) without
    unpickling anything; other models with ``mlflow.pytorch.load_model``."""
    import mlflow.artifacts

    from srseg.registry import loader as registry_loader

    with tempfile.TemporaryDirectory(prefix="srseg-mlflow-") as tmp:
        try:
            location = registry_loader.resolve_artifact_uri(uri, tracking_uri)
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=location, dst_path=tmp, tracking_uri=tracking_uri, registry_uri=tracking_uri
            )
        except Exception as exc:  # MlflowException, unknown alias, storage errors
            raise UpscaleError(f"model {uri!r}: cannot download from MLflow ({type(exc).__name__}: {exc})") from exc
        try:
            if registry_loader.is_sr_head_model(local):
                module: object = registry_loader.load_sr_head_dir(local, map_location=device)
            else:
                import mlflow.pytorch

                module = mlflow.pytorch.load_model(local, map_location=device)
        except Exception as exc:  # SRHeadLoadError, missing flavour, unpickling errors
            raise UpscaleError(f"model {uri!r}: cannot load from MLflow ({type(exc).__name__}: {exc})") from exc
    if not isinstance(module, nn.Module):
        raise UpscaleError(f"model {uri!r}: MLflow returned {type(module).__name__}, not a torch module")
    return module


def _load_path(path: Path, device: torch.device) -> SRModel:
    if path.is_dir():
        candidate = path / "sr_head.safetensors"
        if not candidate.is_file():
            raise UpscaleError(f"model {str(path)!r}: folder has no sr_head.safetensors (an export folder is expected)")
        path = candidate
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from srseg.models.io import load_generator

        return _module_model(load_generator(path), str(path), device)
    if suffix == ".onnx":
        return _onnx_model(path, device)
    if suffix in TORCHSCRIPT_SUFFIXES:
        from srseg.export import load_torchscript

        try:
            module = load_torchscript(path, map_location=device)
        except RuntimeError as exc:
            raise UpscaleError(
                f"model {str(path)!r}: not a TorchScript archive ({exc.__class__.__name__}); training "
                "checkpoints are not accepted, export with `srseg export` or save_generator first"
            ) from exc
        return _module_model(module, str(path), device)
    raise UpscaleError(
        f"model {str(path)!r}: unknown file type {suffix!r} (expected .safetensors, .onnx, "
        f"{', '.join(sorted(TORCHSCRIPT_SUFFIXES))} or an export folder)"
    )


def _probe_scale(model: SRModel) -> int:
    """Scale factor measured on a small odd-sized batch; also catches static-shape models."""
    probe = torch.zeros((2, 3, 9, 7), device=model.device)
    try:
        with torch.inference_mode():
            out = model.fn(probe)
    except Exception as exc:
        raise UpscaleError(
            f"model {model.name!r} fails on a (2, 3, 9, 7) input ({type(exc).__name__}: {exc}); it must accept "
            "any (N, 3, h, w) RGB batch (MLflow models: log with serialization_format='pickle')"
        ) from exc
    shape = tuple(out.shape)
    if len(shape) != 4 or shape[:2] != (2, 3) or shape[2] % 9 or shape[3] % 7 or shape[2] // 9 != shape[3] // 7:
        raise UpscaleError(f"model {model.name!r} maps (2, 3, 9, 7) to {tuple(out.shape)}, not an integer RGB upscale")
    return int(out.shape[2] // 9)


def load_sr_model(model: str, scale: int = 4, device: str = "auto", tracking_uri: str | None = None) -> SRModel:
    """Resolve the ``model`` string (path, ``bicubic`` or MLflow URI) to an :class:`SRModel`.

    The model's own scale is measured and must equal ``scale``.
    """
    dev = resolve_device(device)
    if not isinstance(model, (str, os.PathLike)) or not str(model).strip():
        raise UpscaleError(f"model must be a path, 'bicubic' or an MLflow URI, got {model!r}")
    spec = str(model)
    if spec == "bicubic":
        if scale < 2:
            raise UpscaleError(f"scale must be >= 2 for bicubic, got {scale!r}")
        loaded = _bicubic_model(scale, dev)
    elif spec.startswith(MLFLOW_SCHEMES):
        loaded = _module_model(_load_mlflow(spec, dev, tracking_uri), spec, dev)
    elif Path(spec).exists():
        loaded = _load_path(Path(spec), dev)
    else:
        raise UpscaleError(
            f"model {spec!r}: no such file or folder, and not 'bicubic' or an MLflow URI "
            f"({', '.join(s + '...' for s in MLFLOW_SCHEMES)})"
        )
    measured = _probe_scale(loaded)
    if measured != scale:
        raise UpscaleError(f"model {spec!r} upscales x{measured}, but scale={scale} was requested")
    loaded.scale = measured
    return loaded


# ---------------------------------------------------------------------------------------- images


def _orient(array: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (2..8) to an (H, W, C) array, as ImageOps.exif_transpose does."""
    ops: dict[int, Callable[[np.ndarray], np.ndarray]] = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.transpose(1, 0, 2),
        6: lambda a: a.transpose(1, 0, 2)[:, ::-1],
        7: lambda a: a.transpose(1, 0, 2)[::-1, ::-1],
        8: lambda a: a.transpose(1, 0, 2)[::-1],
    }
    op = ops.get(orientation)
    return np.ascontiguousarray(op(array)) if op else array


def _planes(array: np.ndarray, maximum: float) -> Tensor:
    """(H, W, C) numeric array -> (C, H, W) float32 in [0, 1]."""
    data = torch.from_numpy(np.ascontiguousarray(array.astype(np.float32) / maximum))
    return data.permute(2, 0, 1).contiguous().clamp_(0.0, 1.0)


def _split(rgb: Tensor, alpha: Tensor | None, gray: bool) -> LoadedImage:
    if gray:
        rgb = rgb.expand(3, -1, -1).contiguous()
    return LoadedImage(rgb, alpha, gray)


def _read_png16(data: bytes, orientation: int) -> LoadedImage:
    """16-bit truecolour PNG at full precision (Pillow would truncate it to 8 bits)."""
    from torchvision.io import ImageReadMode, decode_png

    with warnings.catch_warnings():  # torchvision's image I/O is deprecated, still the only 16-bit PNG reader here
        warnings.simplefilter("ignore", DeprecationWarning)
        decoded = decode_png(torch.frombuffer(bytearray(data), dtype=torch.uint8), ImageReadMode.UNCHANGED)
    array = _orient(decoded.permute(1, 2, 0).to(torch.int32).numpy(), orientation)
    planes = _planes(array, 65535.0)
    return _split(planes[:3], planes[3:4] if planes.shape[0] == 4 else None, gray=False)


def _exif_orientation(image: Image.Image) -> int:
    try:
        return int(image.getexif().get(0x0112, 1) or 1)
    except Exception:  # malformed EXIF must not make a readable image unreadable
        return 1


def read_image(path: str | os.PathLike[str]) -> LoadedImage:
    """Read an image in display orientation following the module's conversion rules."""
    path = Path(path)
    try:
        data = path.read_bytes()
        with Image.open(io.BytesIO(data)) as opened:
            opened.load()
            orientation = _exif_orientation(opened)
            if data.startswith(_PNG_SIGNATURE) and len(data) > 25 and data[24] == 16 and data[25] in (2, 6):
                return _read_png16(data, orientation)
            image = ImageOps.exif_transpose(opened) if orientation != 1 else opened
            return _convert(image)
    except UpscaleError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
        raise UpscaleError(f"{path}: cannot read image ({type(exc).__name__}: {exc})") from exc


def _convert(image: Image.Image) -> LoadedImage:
    mode = image.mode
    if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
        return _split(_planes(np.asarray(image)[:, :, None], 65535.0), None, gray=True)
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif mode in ("1", "La"):
        image = image.convert("L" if mode == "1" else "LA")
    elif mode in ("RGBa", "PA"):
        image = image.convert("RGBA")
    elif mode not in ("L", "LA", "RGB", "RGBA"):
        image = image.convert("RGB")
    planes = _planes(np.asarray(image, dtype=np.uint8).reshape(image.height, image.width, -1), 255.0)
    gray = image.mode in _GRAY_MODES
    colour = 1 if gray else 3
    alpha = planes[colour : colour + 1] if image.mode in ("LA", "RGBA") else None
    return _split(planes[:colour], alpha, gray)


def _to_uint8(x: Tensor) -> Tensor:
    return x.clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8)


def compose_output(rgb: Tensor, alpha: Tensor | None, gray: bool) -> Image.Image:
    """(3, H, W) uint8 SR colour (+ (1, H, W) uint8 alpha) -> Pillow image in the input's mode family."""
    planes = rgb
    if gray:
        weights = torch.tensor(_LUMA).view(3, 1, 1)
        planes = _to_uint8((rgb.float() * weights).sum(0, keepdim=True) / 255.0)
    if alpha is not None:
        planes = torch.cat([planes, alpha])
    array = planes.permute(1, 2, 0).contiguous().numpy()
    return Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)  # L, LA, RGB or RGBA


# ---------------------------------------------------------------------------------------- inputs


def collect_inputs(inputs: list[Path], output_dir: Path) -> list[tuple[Path, Path]]:
    """(source file, output path) pairs: files keep their name, folders their relative layout.

    Folders are searched recursively for image suffixes (hidden entries and ``output_dir`` are
    skipped). Every output is ``<stem>.png``; two inputs mapping to one output is an error.
    """
    output_root = Path(output_dir).resolve()
    pairs: list[tuple[Path, Path]] = []
    for item in inputs:
        item = Path(item)
        if item.is_file():
            pairs.append((item, Path(output_dir) / (item.stem + ".png")))
        elif item.is_dir():
            found = []
            for dirpath, dirnames, filenames in os.walk(item):
                here = Path(dirpath)
                dirnames[:] = sorted(
                    d for d in dirnames if not d.startswith(".") and (here / d).resolve() != output_root
                )
                found += [
                    here / f for f in filenames if not f.startswith(".") and Path(f).suffix.lower() in IMAGE_SUFFIXES
                ]
            if not found:
                logger.warning("%s: no images found (suffixes %s)", item, sorted(IMAGE_SUFFIXES))
            for path in sorted(found):
                pairs.append((path, Path(output_dir) / path.relative_to(item).with_suffix(".png")))
        else:
            raise UpscaleError(f"input {str(item)!r}: no such file or folder")
    seen: dict[Path, Path] = {}
    for source, target in pairs:
        if target in seen:
            raise UpscaleError(
                f"inputs {str(seen[target])!r} and {str(source)!r} would both be written to {str(target)!r}"
            )
        seen[target] = source
    return pairs


# -------------------------------------------------------------------------------------- upscale


def _model_fn(model: SRModel, autocast: torch.dtype | None) -> Callable[[Tensor], Tensor]:
    if autocast is None or not model.autocast_ok:
        return model.fn

    def fn(x: Tensor) -> Tensor:
        with torch.autocast(device_type=model.device.type, dtype=autocast):
            return model.fn(x).float()

    return fn


def upscale_image(
    model: SRModel,
    image: LoadedImage,
    tile: int | None = 256,
    tile_overlap: int = 16,
    batch_size: int = 4,
    precision: torch.dtype | None = None,
) -> Image.Image:
    """Super-resolve one loaded image (colour by ``model``, alpha by bicubic) to a Pillow image."""
    fn = _model_fn(model, precision)
    rgb = tiled_super_resolve(
        fn, image.rgb.to(model.device), model.scale, tile, tile_overlap, batch_size, out_dtype=torch.uint8
    )
    alpha = None
    if image.alpha is not None:
        bicubic = _bicubic_model(model.scale, model.device)
        alpha = tiled_super_resolve(
            bicubic.fn,
            image.alpha.to(model.device),
            model.scale,
            tile,
            max(tile_overlap, BICUBIC_RADIUS),
            batch_size,
            out_dtype=torch.uint8,
        )
    return compose_output(rgb, alpha, image.gray)


def upscale(
    inputs: list[Path],
    output_dir: Path,
    model: str,
    scale: int = 4,
    tile: int | None = 256,
    tile_overlap: int = 16,
    batch_size: int = 4,
    device: Device = "auto",
    precision: Precision = "auto",
    progress: bool = True,
    tracking_uri: str | None = None,
) -> list[Path]:
    """Super-resolve files and folders into ``output_dir`` as PNG; returns the written paths.

    ``tile`` (LR px, None = whole image) bounds memory; ``tile_overlap`` LR px of context per side
    makes tiles exact once it reaches the model's receptive-field radius (logged when it does not).
    Activations dominate memory: about ``batch_size * ((tile + 2 * overlap) * scale)**2 *
    num_features * 4 B * 3`` (bench/upscale.py, demo net, 4000x3000 output: +2.1 GB with tile 256
    and batch 4, +0.6 GB with batch 1, +4.5 GB untiled). On CPU batching tiles does not speed
    things up, so ``batch_size=1`` is the frugal choice there.
    """
    if tile is not None and tile < 1:
        raise UpscaleError(f"tile must be None or >= 1, got {tile!r}")
    if tile_overlap < 0:
        raise UpscaleError(f"tile_overlap must be >= 0, got {tile_overlap!r}")
    if batch_size < 1:
        raise UpscaleError(f"batch_size must be >= 1, got {batch_size!r}")
    pairs = collect_inputs([Path(p) for p in inputs], Path(output_dir))
    dev = resolve_device(device)
    autocast = resolve_precision(precision, dev)
    sr_model = load_sr_model(model, scale=scale, device=dev.type, tracking_uri=tracking_uri)
    radius = sr_model.receptive_radius
    if tile is not None and radius is not None and tile_overlap < radius:
        logger.info(
            "tile_overlap %d < receptive-field radius %d LR px: tile seams differ slightly from whole-image output",
            tile_overlap,
            radius,
        )
    logger.info(
        "upscaling %d image(s) x%d with %s on %s (%s)",
        len(pairs),
        scale,
        sr_model.name,
        sr_model.device,
        "fp32" if autocast is None or not sr_model.autocast_ok else str(autocast).removeprefix("torch."),
    )
    from tqdm.auto import tqdm

    written: list[Path] = []
    for source, target in tqdm(pairs, desc="upscale", unit="img", disable=not progress):
        loaded = read_image(source)
        result = upscale_image(sr_model, loaded, tile, tile_overlap, batch_size, autocast)
        with atomic_open(target, "wb") as handle:
            result.save(handle, format="PNG")
        written.append(target)
        logger.debug("%s -> %s (%dx%d)", source, target, result.width, result.height)
    return written

