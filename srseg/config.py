"""Typed, validated configuration read from ``params.yaml``.

One section per pipeline stage; each is a frozen pydantic model with ``extra="forbid"`` so an
unknown key, a wrong type or an out-of-range value fails at load time with the key path named.
Profiles (``profiles/<name>.yaml``) are partial overrides of the same sections: ``demo`` is the
embedded default, ``paper`` the full-scale GPU setting.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from srseg.data.sources import check_mirror

SPLITS: tuple[Literal["train2017", "val2017"], ...] = ("train2017", "val2017")
PROFILE_DIR_NAME = "profiles"


class ConfigError(ValueError):
    """A parameter file is missing, unreadable or invalid. The message names file and key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PathsConfig(_Section):
    """Where stages read and write, relative to the repository root."""

    data_root: str = "data/cocostuff"
    lr_root: str = "data/lr"
    mirror_dir: str = "data/mirror"
    ablation_dir: str = Field("outputs/ablation", description="training output of the lambda_seg = 0 ablation")


class UploadConfig(_Section):
    """Optional copy of the prepared dataset to S3. Credentials come from the environment only."""

    bucket: str | None = None
    prefix: str = "cocostuff"
    endpoint_url: str | None = None


class DownloadConfig(_Section):
    splits: tuple[Literal["train2017", "val2017"], ...] = SPLITS
    mode: Literal["subset", "full"] = "subset"
    subset_size: int = Field(8, ge=1, description="images per split in subset mode")
    seed: int = Field(0, ge=0)
    label_source: Literal["stuffthingmaps", "json"] = "stuffthingmaps"
    mirror: str | None = Field(
        None, description="base URL (http(s)://, file://, s3://) or local folder replacing the official hosts"
    )
    retries: int = Field(5, ge=0, le=50)
    backoff_s: float = Field(1.0, ge=0.0, le=600.0)
    timeout_s: float = Field(60.0, gt=0.0, le=3600.0)
    class_map: Literal["fine171", "coarse8"] = "fine171"
    upload: UploadConfig = UploadConfig()

    @field_validator("mirror")
    @classmethod
    def _mirror_url_or_folder(cls, value: str | None) -> str | None:
        """A URL must use a scheme the downloader speaks; anything else is a local folder path."""
        if value is None:
            return None
        if not value.strip():
            raise ValueError("empty mirror; use null for the official hosts")
        if len(urlsplit(value).scheme) > 1:  # one letter is a Windows drive, not a scheme
            check_mirror(value)
        return value

    @field_validator("splits")
    @classmethod
    def _unique_splits(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("at least one split is required")
        if len(set(value)) != len(value):
            raise ValueError(f"duplicate split names in {list(value)}")
        return value


class HighOrderConfig(_Section):
    """Real-ESRGAN-style second-order degradation knobs (used when degrade.method = highorder)."""

    blur_prob: float = Field(1.0, ge=0.0, le=1.0)
    blur_sigma: tuple[float, float] = (0.2, 3.0)
    resize_range: tuple[float, float] = (0.15, 1.5)
    noise_sigma: tuple[float, float] = (1.0, 30.0)
    poisson_scale: tuple[float, float] = (0.05, 3.0)
    gray_noise_prob: float = Field(0.4, ge=0.0, le=1.0)
    jpeg_quality: tuple[int, int] = (30, 95)
    second_blur_prob: float = Field(0.8, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _ordered_ranges(self) -> HighOrderConfig:
        for name in ("blur_sigma", "resize_range", "noise_sigma", "poisson_scale", "jpeg_quality"):
            low, high = getattr(self, name)
            if low > high:
                raise ValueError(f"{name}: lower bound {low} is above upper bound {high}")
        lo_q, hi_q = self.jpeg_quality
        if lo_q < 1 or hi_q > 100:
            raise ValueError(f"jpeg_quality: {self.jpeg_quality} must lie within 1..100")
        return self


class DegradeConfig(_Section):
    scale: Literal[2, 3, 4] = 4
    method: Literal["bicubic", "highorder"] = "bicubic"
    seed: int = Field(0, ge=0)
    skip_corrupt: bool = False
    high_order: HighOrderConfig = HighOrderConfig()


class GeneratorConfig(_Section):
    """SRResNet-family generator with a shared decoder and two output layers."""

    architecture: Literal["multitask_srresnet"] = Field(
        "multitask_srresnet", description="registered generator name (srseg.models.registry)"
    )
    global_residual: Literal["bicubic", "none"] = Field(
        "bicubic", description="bicubic: output = MATLAB-bicubic(LR) + residual (ours); none: as the paper"
    )
    num_features: int = Field(64, ge=4, le=1024)
    num_blocks: int = Field(16, ge=1, le=256)
    decoder_convs: int = Field(1, ge=0, le=8, description="convolutions at HR resolution shared by both heads")


class DiscriminatorConfig(_Section):
    num_features: int = Field(64, ge=4, le=1024)
    spectral_norm: bool = False
    gan_type: Literal["standard", "relativistic"] = "relativistic"


class LossConfig(_Section):
    pixel: Literal["l1", "mse"] = "l1"
    pixel_weight: float = Field(1.0, ge=0.0)
    perceptual_weight: float = Field(1.0, ge=0.0, description="GAN stage only")
    perceptual_layer: str = "conv5_4"
    vgg_weights: str = Field(
        "auto",
        description="auto (torchvision cache, error if absent) | none (no perceptual loss) | random (random "
        "VGG19, tagged as such) | path to a .pth",
    )
    adversarial_weight: float = Field(5e-3, ge=0.0, le=1.0)
    lambda_seg: float = Field(0.1, ge=0.0, description="0 = SR-only ablation")
    seg_warmup: int = Field(
        0, ge=0, description="PSNR-stage iterations trained on the SR losses alone before the segmentation term joins"
    )
    seg_class_weights: Literal["none", "inverse_sqrt", "median_freq"] = "none"


SELECTION_RULES = ("auto", "max_psnr_y", "min_lpips", "final_ema")


class StageConfig(_Section):
    """Schedule of one training stage (PSNR warm start or GAN) and which weights it ships.

    ``lr_schedule``: ``step`` multiplies the learning rate by ``lr_gamma`` at each of
    ``lr_milestones``; ``cosine`` decays it from ``lr`` to ``lr * lr_final_ratio`` along a half
    cosine over ``iterations`` (short CPU runs gain most from ending at a small step size).

    ``select``: ``max_psnr_y`` = the EMA weights with the best psnr_y on the selection images;
    ``min_lpips`` = the lowest LPIPS there (needs LPIPS weights); ``final_ema`` = the EMA weights
    after the last iteration; ``auto`` = ``max_psnr_y`` in the PSNR stage, and in the GAN stage
    ``min_lpips`` when LPIPS weights are available, else ``final_ema``.
    """

    iterations: int = Field(..., ge=1)
    lr: float = Field(..., gt=0.0, le=1.0)
    lr_schedule: Literal["step", "cosine"] = "step"
    lr_milestones: tuple[int, ...] = ()
    lr_gamma: float = Field(0.5, gt=0.0, le=1.0)
    lr_final_ratio: float = Field(0.0, ge=0.0, le=1.0, description="cosine: last learning rate / lr")
    val_every: int = Field(..., ge=1)
    checkpoint_every: int = Field(..., ge=1)
    select: Literal["auto", "max_psnr_y", "min_lpips", "final_ema"] = "auto"

    @model_validator(mode="after")
    def _schedule_is_one_kind(self) -> StageConfig:
        if self.lr_schedule == "cosine" and self.lr_milestones:
            raise ValueError(
                f"lr_milestones {list(self.lr_milestones)} are for lr_schedule=step; cosine decays smoothly"
            )
        return self


class TrainConfig(_Section):
    scale: Literal[2, 3, 4] = 4
    class_map: Literal["fine171", "coarse8"] = "fine171"
    generator: GeneratorConfig = GeneratorConfig()
    discriminator: DiscriminatorConfig = DiscriminatorConfig()
    loss: LossConfig = LossConfig()
    psnr_stage: StageConfig = StageConfig(iterations=1000, lr=2e-4, val_every=200, checkpoint_every=200)
    gan_stage: StageConfig = StageConfig(iterations=1000, lr=1e-4, val_every=200, checkpoint_every=200)
    batch_size: int = Field(16, ge=1, description="global batch; split across DDP ranks")
    patch_size: int = Field(96, ge=8, description="HR patch side in pixels")
    lr_source: Literal["gpu", "precomputed"] = Field(
        "gpu", description="gpu: MATLAB bicubic LR made inside the step; precomputed: read paths.lr_root"
    )
    num_workers: int = Field(2, ge=0, le=64)
    ema_decay: float = Field(0.999, ge=0.0, lt=1.0)
    keep_checkpoints: int = Field(2, ge=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool = Field(True, description="bf16 autocast on CUDA (ignored on CPU)")
    channels_last: bool = True
    compile: bool = False
    seed: int = Field(0, ge=0, description="the seed of one run (`srseg train --seed K` sets it per sweep run)")
    seeds: tuple[int, ...] = Field(
        (0,), description="the seed sweep: each arm is trained once per seed, in <output_dir>/seed<K> (srseg.seeds)"
    )
    deterministic: bool = False
    output_dir: str = "outputs/train"
    train_split: str = Field("train2017", min_length=1, description="manifest split used for training")
    val_split: str = Field("val2017", min_length=1, description="manifest split used for validation")
    augment: bool = Field(True, description="random flips / 90-degree rotations of training patches")
    hr_scales: tuple[float, ...] = Field(
        (1.0,),
        min_length=1,
        description="train on every image at each of these downscale factors in (0, 1] (multi-scale copies)",
    )
    adam_betas: tuple[float, float] = (0.9, 0.99)
    log_every: int = Field(10, ge=1, description="iterations between loss read-backs (host syncs) and logs")
    selection_images: int = Field(
        3, ge=1, description="images of val_split used for validation and checkpoint choice; the rest are reported"
    )
    val_samples: int = Field(2, ge=0, description="selection images drawn into the SR/segmentation sample grid")
    lpips_weights: str = Field("auto", description="LPIPS for select=min_lpips: auto (torch hub cache) | folder")
    cache_images: bool = Field(False, description="keep decoded training images in memory (small datasets)")

    @model_validator(mode="after")
    def _patch_fits_scale(self) -> TrainConfig:
        if self.patch_size % self.scale:
            raise ValueError(f"patch_size {self.patch_size} must be a multiple of scale {self.scale}")
        return self

    @model_validator(mode="after")
    def _scales_are_factors(self) -> TrainConfig:
        bad = [f for f in self.hr_scales if not 0.0 < f <= 1.0]
        if bad:
            raise ValueError(f"hr_scales {list(self.hr_scales)}: every factor must be in (0, 1], not {bad}")
        if self.lr_source == "precomputed" and self.hr_scales != (1.0,):
            raise ValueError(
                f"hr_scales {list(self.hr_scales)} needs lr_source gpu: precomputed LR exists for full-size images only"
            )
        return self

    @model_validator(mode="after")
    def _honest_selection(self) -> TrainConfig:
        if self.gan_stage.select == "max_psnr_y":
            raise ValueError(
                "gan_stage.select: max_psnr_y would ship the least perceptual weights of a perceptual stage; "
                "use auto, min_lpips or final_ema"
            )
        if self.psnr_stage.select == "min_lpips":
            raise ValueError("psnr_stage.select: min_lpips is for the GAN stage; use auto, max_psnr_y or final_ema")
        return self

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not value:
            raise ValueError("seeds must name at least one seed")
        if any(seed < 0 for seed in value) or len(set(value)) != len(value):
            raise ValueError(f"seeds must be distinct integers >= 0, got {list(value)}")
        return value

    @field_validator("adam_betas")
    @classmethod
    def _betas_in_range(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not all(0.0 <= b < 1.0 for b in value):
            raise ValueError(f"adam_betas must both lie in [0, 1), got {list(value)}")
        return value


class MlflowConfig(_Section):
    tracking_uri: str = Field("sqlite:///mlflow.db", description="MLFLOW_TRACKING_URI overrides this")
    experiment: str = "srseg"
    enabled: bool = Field(True, description="false: training writes no MLflow runs (files only)")


# The trained models of both arms (one per seed, srseg.seeds) and the bicubic baseline.
TRAINED_METHODS = {
    "multitask": "outputs/train/seed{seed}/gan/selected.safetensors",
    "sr_only": "outputs/ablation/seed{seed}/gan/selected.safetensors",
    "bicubic": "bicubic",
}


SEED_PLACEHOLDER = "{seed}"  # in a method string: one model per seed of train.seeds (srseg.seeds)


def check_method_spec(name: str, spec: str) -> str:
    """A method string may hold ``{seed}`` and no other brace; returns it unchanged."""
    if "{" in spec.replace(SEED_PLACEHOLDER, "") or "}" in spec.replace(SEED_PLACEHOLDER, ""):
        raise ValueError(f"method {name!r}: {spec!r} holds braces other than the placeholder {SEED_PLACEHOLDER}")
    return spec


def _check_methods(methods: dict[str, str]) -> dict[str, str]:
    if not methods:
        raise ValueError("name at least one method")
    for name, spec in methods.items():
        if not name.strip() or "@" in name:
            raise ValueError(f"method name {name!r} is empty or holds '@' (reserved for the seeds' models)")
        check_method_spec(name, spec)
    return methods


class EvaluateConfig(_Section):
    """Which models to compare on the val split, and how."""

    split: str = Field("val2017", min_length=1)
    methods: dict[str, str] = Field(
        default_factory=lambda: dict(TRAINED_METHODS),
        description="name -> generator weights path ({seed}: one per train.seeds) | bicubic | models:/NAME@ALIAS",
    )
    compare: tuple[str, str] = ("multitask", "sr_only")
    seg_model: str | None = "multitask"
    lpips_weights: str = Field("auto", description="auto (torch hub cache only) | none (random, flagged) | folder")
    niqe_params: str | None = None
    bootstrap: int = Field(1000, ge=0, le=100000)
    seed: int = Field(0, ge=0)
    gallery_crops: int = Field(4, ge=0, le=64)
    crop_size: int = Field(96, ge=8)
    max_images: int | None = Field(None, ge=1)
    output_dir: str = "outputs/evaluate"

    @field_validator("methods")
    @classmethod
    def _method_strings(cls, value: dict[str, str]) -> dict[str, str]:
        return _check_methods(value)

    @model_validator(mode="after")
    def _known_methods(self) -> EvaluateConfig:
        names = set(self.methods)
        for name in (*self.compare, *([self.seg_model] if self.seg_model else [])):
            if name not in names:
                raise ValueError(f"{name!r} is not one of evaluate.methods ({', '.join(sorted(names))})")
        return self


class StudyConfig(_Section):
    """Pairwise user study built from the evaluation outputs."""

    methods: tuple[str, ...] = ("multitask", "sr_only", "bicubic")
    num_images: int = Field(8, ge=1)
    crop_size: int = Field(128, ge=16)
    attention_checks: int = Field(2, ge=0)
    seed: int = Field(0, ge=0)
    show_reference: bool = False
    attention_threshold: float = Field(0.75, ge=0.0, le=1.0)
    bootstrap: int = Field(1000, ge=0)
    output_dir: str = "outputs/study"


class BenchmarkConfig(_Section):
    """Standard SR benchmark sets and the methods scored on them (``srseg benchmark``).

    A set is a folder in the usual layout: ``HR/`` and, optionally, ``LR_bicubic/X<scale>/`` with
    the set's own LR images (``<name>x<scale>.png``); without it, LR is made with the MATLAB
    bicubic. Relative paths are relative to the repository root.
    """

    sets: dict[str, str] = Field(
        default_factory=lambda: {"set5": "../shared/data/set5", "set14": "../shared/data/set14"},
        description="name -> benchmark folder (BSD100, Urban100, ... can be added)",
    )
    methods: dict[str, str] = Field(
        default_factory=lambda: dict(TRAINED_METHODS),
        description="name -> weights ({seed}: one per train.seeds) | bicubic | models:/NAME@ALIAS | export folder",
    )
    lpips_weights: str = Field("auto", description="auto (torch hub cache only: else not computed) | folder")
    bootstrap: int = Field(1000, ge=0, le=100000)
    seed: int = Field(0, ge=0)
    output_dir: str = "outputs/benchmark"

    @field_validator("sets")
    @classmethod
    def _named_sets(cls, value: dict[str, str]) -> dict[str, str]:
        if not value:
            raise ValueError("name at least one benchmark set")
        for name, folder in value.items():
            if not name.strip() or "/" in name or not str(folder).strip():
                raise ValueError(f"set {name!r}: needs a name without '/' and a folder, got {folder!r}")
        return value

    @field_validator("methods")
    @classmethod
    def _method_strings(cls, value: dict[str, str]) -> dict[str, str]:
        return _check_methods(value)


class ReportConfig(_Section):
    """The science report (``srseg report``): what it shows and where it goes."""

    top_classes: int = Field(10, ge=1, le=100, description="classes shown at each end of the per-class gain table")
    min_class_images: int = Field(
        3, ge=1, description="classes in fewer report images get no row (their CI would be n/a)"
    )
    output_dir: str = "outputs/report"


class ExportConfig(_Section):
    weights: str = Field("outputs/train/seed0/gan/selected.safetensors", description="generator weights to export")
    output_dir: str = "outputs/export"
    opset: int = Field(18, ge=11, le=25)


class RegistryConfig(_Section):
    model_name: str = Field("srseg-sr-x4", min_length=1)
    record: str = Field("outputs/registered.json", description="where `srseg register` writes what it registered")


class PromoteConfig(_Section):
    """The gate that moves the `champion` alias (see srseg.registry.promote.Gate)."""

    min_gain_over_bicubic_db: float = Field(
        0.1, ge=0.0, description="lower 95% CI bound of the challenger's psnr_y gain over bicubic must reach this"
    )
    max_psnr_drop_db: float = Field(0.05, ge=0.0)
    perceptual: Literal["lpips", "study", "none"] = "lpips"
    min_lpips_gain: float = Field(0.0, ge=0.0)
    min_study_preference: float = Field(0.5, ge=0.0, le=1.0)


class Params(_Section):
    """The whole ``params.yaml``."""

    profile: str = "demo"
    paths: PathsConfig = PathsConfig()
    download: DownloadConfig = DownloadConfig()
    degrade: DegradeConfig = DegradeConfig()
    train: TrainConfig = TrainConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    study: StudyConfig = StudyConfig()
    benchmark: BenchmarkConfig = BenchmarkConfig()
    report: ReportConfig = ReportConfig()
    export: ExportConfig = ExportConfig()
    registry: RegistryConfig = RegistryConfig()
    promote: PromoteConfig = PromoteConfig()
    mlflow: MlflowConfig = MlflowConfig()

    @model_validator(mode="after")
    def _lr_matches_degradation(self) -> Params:
        if self.degrade.method == "highorder" and self.train.lr_source == "gpu":
            raise ValueError(
                "degrade.method=highorder with train.lr_source=gpu: the GPU path synthesises bicubic LR only, so "
                "training and evaluation would silently use bicubic LR; set train.lr_source=precomputed "
                "(reads the high-order LR of paths.lr_root) or degrade.method=bicubic"
            )
        return self

    @model_validator(mode="after")
    def _export_a_trained_seed(self) -> Params:
        """export.weights inside a seed sweep's run folder must name the first of train.seeds: the
        model that stands for its arm (study, gallery, model card numbers)."""
        weights = Path(self.export.weights)
        for root in (Path(self.train.output_dir), Path(self.paths.ablation_dir)):
            try:
                first = weights.relative_to(root).parts[0]
            except (ValueError, IndexError):
                continue
            if first.startswith("seed") and first[4:].isdigit() and int(first[4:]) != self.train.seeds[0]:
                raise ValueError(
                    f"export.weights {self.export.weights} is the run of seed {first[4:]}; the shipped model "
                    f"is the first of train.seeds {list(self.train.seeds)} (seed{self.train.seeds[0]})"
                )
        return self


def _format_errors(source: str, error: ValidationError) -> str:
    lines = [f"{source}: invalid parameters"]
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "<root>"
        value = item.get("input")
        shown = "" if isinstance(value, dict) else f" (got {value!r})"
        lines.append(f"  {key}: {item['msg']}{shown}")
    return "\n".join(lines)


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Return ``base`` with ``override`` merged in, recursing into nested mappings."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"{path}: parameter file not found")
    return _parse_yaml(path.read_text(encoding="utf-8"), str(path))


def _parse_yaml(text: str, source: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML ({exc})") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: top level must be a mapping of sections, got {type(data).__name__}")
    return data


def profile_path(params_path: Path, profile: str) -> Path:
    return params_path.resolve().parent / PROFILE_DIR_NAME / f"{profile}.yaml"


def available_profiles(params_path: Path) -> list[str]:
    folder = params_path.resolve().parent / PROFILE_DIR_NAME
    return sorted(p.stem for p in folder.glob("*.yaml"))


def load_profile_overrides(params_path: Path, profile: str) -> dict[str, Any]:
    path = profile_path(params_path, profile)
    if not path.is_file():
        choices = ", ".join(available_profiles(params_path)) or "none found"
        raise ConfigError(f"profile {profile!r}: {path} not found (available: {choices})")
    return _read_yaml(path)


def parse_params(raw: dict[str, Any], source: str = "<params>") -> Params:
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_errors(source, exc)) from None


def load_params(
    path: str | Path = "params.yaml",
    profile: str | None = None,
    overrides: Sequence[str] = (),
    *,
    text: str | None = None,
    text_source: str = "params text",
) -> Params:
    """Load and validate ``path``; with ``profile``, apply ``profiles/<profile>.yaml`` on top, then
    ``overrides`` (``KEY.PATH=VALUE`` strings, see :func:`parse_override`).

    ``text``: the parameter file's YAML content instead of the file (``text_source`` names it in
    errors); profiles are still looked up beside ``path``. Every problem is a :class:`ConfigError`.
    """
    params_path = Path(path)
    raw = _read_yaml(params_path) if text is None else _parse_yaml(text, text_source)
    source = str(params_path) if text is None else text_source
    if profile is not None:
        raw = deep_merge(raw, load_profile_overrides(params_path, profile))
        raw["profile"] = profile
        source = f"{source} + {profile_path(params_path, profile)}"
    if overrides:
        raw = apply_overrides(raw, overrides)
        source = f"{source} + overrides {' '.join(overrides)}"
    return parse_params(raw, source)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"train.loss.lambda_seg=0"`` -> (["train", "loss", "lambda_seg"], 0); the value is YAML."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {text!r}: expected KEY.PATH=VALUE")
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {text!r}: value is not valid YAML ({exc})") from exc
    return key.strip().split("."), parsed


def apply_overrides(raw: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """``raw`` (unvalidated params) with the ``KEY.PATH=VALUE`` strings merged in, in order."""
    for text in overrides:
        path, value = parse_override(text)
        patch: dict[str, Any] = {path[-1]: value}
        for part in reversed(path[:-1]):
            patch = {part: patch}
        raw = deep_merge(raw, patch)
    return raw


def with_overrides(params: Params, overrides: list[str], source: str = "--set") -> Params:
    """A new ``Params`` with dotted-key overrides applied and validated again."""
    if not overrides:
        return params
    raw = apply_overrides(params.model_dump(mode="json"), overrides)
    return parse_params(raw, f"{source} {' '.join(overrides)}")
