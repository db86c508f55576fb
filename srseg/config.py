"""Typed, validated configuration read from ``params.yaml``.

One section per pipeline stage; each is a frozen pydantic model with ``extra="forbid"`` so an
unknown key, a wrong type or an out-of-range value fails at load time with the key path named.
Profiles (``profiles/<name>.yaml``) are partial overrides of the same sections: ``demo`` is the
embedded default, ``paper`` the full-scale GPU setting.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

SPLITS = ("train2017", "val2017")
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
    def _ordered_ranges(self) -> "HighOrderConfig":
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


class Params(_Section):
    """The whole ``params.yaml``."""

    profile: str = "demo"
    paths: PathsConfig = PathsConfig()
    download: DownloadConfig = DownloadConfig()
    degrade: DegradeConfig = DegradeConfig()


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
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections, got {type(data).__name__}")
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


def load_params(path: str | Path = "params.yaml", profile: str | None = None) -> Params:
    """Load and validate ``path``; with ``profile``, apply ``profiles/<profile>.yaml`` on top."""
    params_path = Path(path)
    raw = _read_yaml(params_path)
    source = str(params_path)
    if profile is not None:
        raw = deep_merge(raw, load_profile_overrides(params_path, profile))
        raw["profile"] = profile
        source = f"{params_path} + {profile_path(params_path, profile)}"
    return parse_params(raw, source)
