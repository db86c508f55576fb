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

Images are converted as :mod:`srseg.inference.images` describes (EXIF orientation, gray, 16-bit,
alpha); outputs are 8-bit PNG under the input's name, written atomically.

Never touching inputs, bounded memory, nothing lost:

- Inputs are never written: an output folder that is, contains or lies inside an input folder,
  or an output file that is an input file, is refused before anything runs.
- Memory is bounded by the tile size: tiles go into 8-bit bands that are streamed into the PNG
  (:mod:`srseg.inference.png_stream`) as they complete; no full-size float (or even 8-bit)
  output exists. Before an image is decoded, its working memory is estimated from the header and
  compared with what the machine, the cgroup and ``ulimit -v`` allow (:mod:`srseg.memory`); an
  image that cannot fit gets a one-line error instead of an OOM kill.
- A batch records each finished output in ``<output>/.srseg-upscale.jsonl``
  (:mod:`srseg.journal`). If an input fails, the error names it and says how many outputs are
  complete; running the same command again skips those (and a finished batch is a no-op).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path
from typing import BinaryIO, Literal

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from srseg.fileio import atomic_open, remove_stale_temp_files, sha256_file
from srseg.inference.images import ImageError, ImageHeader, LoadedImage, compose_band, read_header, read_image
from srseg.inference.png_stream import PNGStreamWriter
from srseg.inference.tiling import receptive_field_radius, super_resolve_bands
from srseg.journal import Journal
from srseg.memory import available_bytes

__all__ = ["LoadedImage", "SRModel", "UpscaleError", "load_sr_model", "read_image", "upscale", "upscale_image"]

logger = logging.getLogger(__name__)

Device = Literal["auto", "cpu", "cuda"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})
TORCHSCRIPT_SUFFIXES = frozenset({".pt", ".pth", ".torchscript"})
MLFLOW_SCHEMES = ("models:/", "runs:/", "mlflow-artifacts:/")
BICUBIC_RADIUS = 2  # LR px: Keys cubic (4 taps) when enlarging
JOURNAL_NAME = ".srseg-upscale.jsonl"
JOURNAL_KIND = "srseg-upscale/1"
UNKNOWN_FEATURE_MAPS = 64  # activation channels assumed for models that do not say (the paper width)
_GIB = float(1 << 30)


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
    feature_maps: int | None = None  # channels of its HR activations, for the memory estimate


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

    return SRModel(fn, scale, "bicubic", device, BICUBIC_RADIUS, autocast_ok=False, feature_maps=2)


def _module_model(module: nn.Module, name: str, device: torch.device) -> SRModel:
    """Wrap an nn.Module (MultiTaskSRNet, TorchScript, MLflow) whose forward returns the SR image."""
    from srseg.models.generator import MultiTaskSRNet, build_sr_only
    from srseg.models.registry import architecture_of

    radius = features = None
    if isinstance(module, MultiTaskSRNet):
        if module.has_seg_head:
            module = build_sr_only(module)
        radius = receptive_field_radius(module.config, architecture_of(module))
        features = int(module.config["num_features"])
    module = module.to(device).eval()

    def fn(x: Tensor) -> Tensor:
        out = module(x)
        if isinstance(out, (tuple, list)):  # a multitask forward: (sr, seg)
            out = out[0]
        return out

    return SRModel(fn, 0, name, device, radius, feature_maps=features)


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


# ---------------------------------------------------------------------------------------- inputs


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _refuse_overlap(folders: list[Path], files: list[Path], output_dir: Path) -> None:
    """Inputs are never written: refuse an output folder that is, contains or lies inside an input."""
    out = output_dir.resolve()
    for folder in folders:
        source = folder.resolve()
        if _inside(out, source) or _inside(source, out):
            relation = "is" if out == source else ("lies inside" if _inside(out, source) else "contains")
            raise UpscaleError(
                f"output folder {str(output_dir)!r} {relation} the input folder {str(folder)!r}; "
                "choose an output folder outside it (inputs are never overwritten)"
            )
    for file in files:
        target = out / (file.stem + ".png")
        if target == file.resolve() or (target.exists() and os.path.samefile(target, file)):
            raise UpscaleError(f"output {str(target)!r} is the input file {str(file)!r}; choose another output folder")


def collect_inputs(inputs: list[Path], output_dir: Path) -> list[tuple[Path, Path]]:
    """(source file, output path) pairs: files keep their name, folders their relative layout.

    Folders are searched recursively for image suffixes (hidden entries skipped). Every output is
    ``<stem>.png``. Refused: an output that would be written over, into or around an input (see
    :func:`_refuse_overlap`), and two inputs mapping to one output.
    """
    output_dir = Path(output_dir)
    items = [Path(item) for item in inputs]
    for item in items:
        if not (item.is_file() or item.is_dir()):
            raise UpscaleError(f"input {str(item)!r}: no such file or folder")
    _refuse_overlap([i for i in items if i.is_dir()], [i for i in items if i.is_file()], output_dir)
    pairs: list[tuple[Path, Path]] = []
    for item in items:
        if item.is_file():
            pairs.append((item, output_dir / (item.stem + ".png")))
            continue
        found = []
        for dirpath, dirnames, filenames in os.walk(item):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            found += [
                Path(dirpath) / f
                for f in filenames
                if not f.startswith(".") and Path(f).suffix.lower() in IMAGE_SUFFIXES
            ]
        if not found:
            logger.warning("%s: no images found (suffixes %s)", item, sorted(IMAGE_SUFFIXES))
        for path in sorted(found):
            pairs.append((path, output_dir / path.relative_to(item).with_suffix(".png")))
    seen: dict[Path, Path] = {}
    for source, target in pairs:
        if target in seen:
            raise UpscaleError(
                f"inputs {str(seen[target])!r} and {str(source)!r} would both be written to {str(target)!r}"
            )
        seen[target] = source
    return pairs


# ---------------------------------------------------------------------------------------- memory


def working_memory(
    header: ImageHeader, scale: int, tile: int | None, tile_overlap: int, batch_size: int, feature_maps: int | None
) -> dict[str, int]:
    """Bytes ``upscale`` needs for one image, by part (an upper estimate; see bench/upscale_memory.py).

    ``decode``: Pillow's decoded image (4 B/px) and its array copy (up to 4 B/px); ``windows``:
    one batch of float LR windows and their float SR; ``activations``: the network's HR feature
    maps, about three live at once (``feature_maps`` channels, 64 when unknown); ``bands``: the
    8-bit band being filled, its output-file rows and the PNG filter's buffers.
    """
    width, height = header.width, header.height
    win_h = height if tile is None else min(tile + 2 * tile_overlap, height)
    win_w = width if tile is None else min(tile + 2 * tile_overlap, width)
    band_rows = height if tile is None else min(tile, height)
    hr_window_px = batch_size * win_h * win_w * scale * scale
    return {
        "decode": width * height * 8,
        "windows": batch_size * 3 * win_h * win_w * 4 + hr_window_px * 3 * 4 * 2,
        "activations": hr_window_px * (feature_maps or UNKNOWN_FEATURE_MAPS) * 4 * 3,
        "bands": 6 * band_rows * scale * width * scale * 4,
    }


def check_memory(
    source: Path, header: ImageHeader, model: SRModel, tile: int | None, tile_overlap: int, batch_size: int
) -> None:
    """UpscaleError (one line, naming the file) when the image cannot fit in the memory available."""
    need = working_memory(header, model.scale, tile, tile_overlap, batch_size, model.feature_maps)
    host = need["decode"] + need["bands"]
    device_need = need["windows"] + need["activations"]
    if model.device.type == "cuda":
        free = torch.cuda.mem_get_info(model.device)[0]
        if device_need > free:
            raise UpscaleError(
                f"{source}: {header.width}x{header.height} x{model.scale} needs about {device_need / _GIB:.1f} GiB "
                f"of GPU memory per batch of tiles, only {free / _GIB:.1f} GiB is free; "
                "use a smaller --tile or --batch-size"
            )
    else:
        host += device_need
    available = available_bytes()
    if available is not None and host > available:
        parts = ", ".join(f"{name} {value / _GIB:.1f}" for name, value in need.items())
        advice = "use --tile (e.g. 256)" if tile is None else "use a smaller --tile or --batch-size"
        raise UpscaleError(
            f"{source}: {header.width}x{header.height} x{model.scale} needs about {host / _GIB:.1f} GiB of memory "
            f"({parts} GiB), only {available / _GIB:.1f} GiB is available; {advice}"
        )


def _is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, (MemoryError, torch.cuda.OutOfMemoryError)):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text)


# -------------------------------------------------------------------------------------- upscale


def _model_fn(model: SRModel, autocast: torch.dtype | None) -> Callable[[Tensor], Tensor]:
    if autocast is None or not model.autocast_ok:
        return model.fn

    def fn(x: Tensor) -> Tensor:
        with torch.autocast(device_type=model.device.type, dtype=autocast):
            return model.fn(x).float()

    return fn


def output_bands(
    model: SRModel,
    image: LoadedImage,
    tile: int | None = 256,
    tile_overlap: int = 16,
    batch_size: int = 4,
    precision: torch.dtype | None = None,
) -> Iterator[np.ndarray]:
    """Rows of the output file, top to bottom, as (h, W, C) uint8 bands: colour by ``model``,
    alpha by bicubic (with at least its own receptive radius of overlap)."""
    rgb_bands = super_resolve_bands(
        _model_fn(model, precision),
        image.rgb,
        model.scale,
        tile,
        tile_overlap,
        batch_size,
        white=image.white,
        device=model.device,
    )
    alpha_bands: Iterator[tuple[int, Tensor] | None] = repeat(None)
    if image.alpha is not None:
        bicubic = _bicubic_model(model.scale, model.device)
        alpha_bands = super_resolve_bands(
            bicubic.fn,
            image.alpha,
            model.scale,
            tile,
            max(tile_overlap, BICUBIC_RADIUS),
            batch_size,
            white=image.white,
            device=model.device,
        )
    for (row, rgb), alpha in zip(rgb_bands, alpha_bands):
        if alpha is not None and alpha[0] != row:  # pragma: no cover - same tile grid by construction
            raise RuntimeError(f"alpha band at row {alpha[0]}, colour band at row {row}")
        yield compose_band(rgb, alpha[1] if alpha is not None else None, image.gray)


def upscale_image(
    model: SRModel,
    image: LoadedImage,
    tile: int | None = 256,
    tile_overlap: int = 16,
    batch_size: int = 4,
    precision: torch.dtype | None = None,
) -> Image.Image:
    """Super-resolve one loaded image to a Pillow image, in memory (for images that fit; files
    are streamed by :func:`write_png`)."""
    array = np.concatenate(list(output_bands(model, image, tile, tile_overlap, batch_size, precision)))
    return Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)  # L, LA, RGB or RGBA


def write_png(
    model: SRModel,
    image: LoadedImage,
    handle: BinaryIO,
    tile: int | None = 256,
    tile_overlap: int = 16,
    batch_size: int = 4,
    precision: torch.dtype | None = None,
    compress_level: int = 1,
) -> tuple[int, int]:
    """Super-resolve ``image`` straight into a PNG on ``handle``, band by band; returns (width, height)."""
    width, height = image.size[0] * model.scale, image.size[1] * model.scale
    writer = PNGStreamWriter(handle, width, height, image.output_channels, compress_level)
    for band in output_bands(model, image, tile, tile_overlap, batch_size, precision):
        writer.write_rows(band)
    writer.close()
    return width, height


def upscale_file(
    model: SRModel,
    source: Path,
    target: Path,
    tile: int | None = 256,
    tile_overlap: int = 16,
    batch_size: int = 4,
    precision: torch.dtype | None = None,
    compress_level: int = 1,
) -> tuple[int, int]:
    """One file: check its memory need from the header, decode, stream the PNG to ``target`` atomically."""
    try:
        header = read_header(source)
        check_memory(source, header, model, tile, tile_overlap, batch_size)
        image = read_image(source)
        with atomic_open(target, "wb") as handle:
            return write_png(model, image, handle, tile, tile_overlap, batch_size, precision, compress_level)
    except ImageError as exc:
        raise UpscaleError(str(exc)) from exc
    except (MemoryError, RuntimeError) as exc:
        if not _is_out_of_memory(exc):
            raise
        raise UpscaleError(
            f"{source}: out of memory while upscaling ({type(exc).__name__}); use a smaller --tile or --batch-size"
        ) from exc


def model_identity(spec: str, tracking_uri: str | None = None) -> str:
    """What exactly ``spec`` names now: a file digest, the artifact behind an MLflow URI, or
    ``bicubic``. A batch journal made with another identity is not resumed."""
    if spec == "bicubic":
        return spec
    if spec.startswith(MLFLOW_SCHEMES):
        from srseg.registry import loader as registry_loader

        return registry_loader.resolve_artifact_uri(spec, tracking_uri)
    path = Path(spec)
    if path.is_dir():
        path = path / "sr_head.safetensors"
    files = [path] + ([path.with_suffix(".json")] if path.with_suffix(".json").is_file() else [])
    return hashlib.sha256("".join(sha256_file(f) for f in files).encode()).hexdigest()


def _check_upscale_settings(tile: int | None, tile_overlap: int, batch_size: int, compress_level: int) -> None:
    if tile is not None and tile < 1:
        raise UpscaleError(f"tile must be None or >= 1, got {tile!r}")
    if tile_overlap < 0:
        raise UpscaleError(f"tile_overlap must be >= 0, got {tile_overlap!r}")
    if batch_size < 1:
        raise UpscaleError(f"batch_size must be >= 1, got {batch_size!r}")
    if not 0 <= compress_level <= 9:
        raise UpscaleError(f"compress_level must be 0..9, got {compress_level!r}")


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
    compress_level: int = 1,
) -> list[Path]:
    """Super-resolve files and folders into ``output_dir`` as PNG; returns the output paths.

    ``tile`` (LR px, None = whole image) bounds memory; ``tile_overlap`` LR px of context per side
    makes tiles exact once it reaches the model's receptive-field radius (logged when it does not).
    Activations dominate memory: about ``batch_size * ((tile + 2 * overlap) * scale)**2 *
    num_features * 4 B * 3`` (bench/upscale.py, demo net, 4000x3000 output: +2.1 GB with tile 256
    and batch 4, +0.6 GB with batch 1, +4.5 GB untiled); on CPU, batching tiles speeds up bicubic
    but not the network, so ``batch_size=1`` is the frugal choice there. ``compress_level`` is
    zlib's (1 fast .. 9 small).

    A batch resumes: outputs recorded in ``<output_dir>/.srseg-upscale.jsonl`` by an earlier run
    with the same model and settings are kept, if neither they nor their inputs changed since.
    """
    _check_upscale_settings(tile, tile_overlap, batch_size, compress_level)
    output_dir = Path(output_dir)
    dev = resolve_device(device)
    autocast = resolve_precision(precision, dev)
    pairs = collect_inputs([Path(p) for p in inputs], output_dir)
    batch = batch_size
    sr_model = load_sr_model(model, scale=scale, device=dev.type, tracking_uri=tracking_uri)
    radius = sr_model.receptive_radius
    if tile is not None and radius is not None and tile_overlap < radius:
        logger.info(
            "tile_overlap %d < receptive-field radius %d LR px: tile seams differ slightly from whole-image output",
            tile_overlap,
            radius,
        )
    used_precision = "fp32" if autocast is None or not sr_model.autocast_ok else str(autocast).removeprefix("torch.")
    logger.info(
        "upscaling %d image(s) x%d with %s on %s (%s, %d tile(s) per batch)",
        len(pairs),
        scale,
        sr_model.name,
        sr_model.device,
        used_precision,
        batch,
    )
    settings = {
        "model": str(model),
        "identity": model_identity(str(model), tracking_uri),
        "scale": scale,
        "tile": tile,
        "tile_overlap": tile_overlap,
        "device": dev.type,
        "precision": used_precision,
        "compress_level": compress_level,
    }
    journal = Journal(output_dir / JOURNAL_NAME, JOURNAL_KIND, settings)
    job = functools.partial(
        upscale_file,
        sr_model,
        tile=tile,
        tile_overlap=tile_overlap,
        batch_size=batch,
        precision=autocast,
        compress_level=compress_level,
    )
    return _upscale_pairs(pairs, output_dir, journal, job, progress)


def _upscale_pairs(
    pairs: list[tuple[Path, Path]],
    output_dir: Path,
    journal: Journal,
    job: Callable[[Path, Path], tuple[int, int]],
    progress: bool,
) -> list[Path]:
    """Run ``job(source, target)`` for every pair the journal does not list as done; returns the
    targets. A failure names how far the batch got (the same command resumes)."""
    from tqdm.auto import tqdm

    written: list[Path] = []
    kept = 0
    for source, target in tqdm(pairs, desc="upscale", unit="img", disable=not progress):
        key = target.relative_to(output_dir).as_posix()
        if journal.done(key, source, target):
            written.append(target)
            kept += 1
            continue
        remove_stale_temp_files(target)  # left by a killed run
        try:
            width, height = job(source, target)
        except (UpscaleError, OSError) as exc:
            raise UpscaleError(
                f"{exc} -- stopped there: {len(written)} of {len(pairs)} outputs are complete in {output_dir} "
                f"(listed in {journal.path.name}); the same command resumes"
            ) from exc
        journal.record(key, source, target)
        written.append(target)
        logger.debug("%s -> %s (%dx%d)", source, target, width, height)
    journal.finish(len(written))
    if kept:
        logger.info(
            "%d of %d outputs were already complete (%s); %d written now",
            kept,
            len(pairs),
            journal.path,
            len(pairs) - kept,
        )
    return written
