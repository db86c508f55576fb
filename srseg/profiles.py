"""Switch ``params.yaml`` between profiles (``demo``, ``paper``) without editing code.

The profile's overrides are written into ``params.yaml`` itself (comments kept, atomic write), so
DVC sees exactly which parameters changed and re-runs only the stages that use them.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import yaml
from ruamel.yaml import YAML

from srseg.config import ConfigError, Params, load_profile_overrides, parse_params
from srseg.fileio import write_text_atomic


def _merge_into(target: Any, override: dict[str, Any]) -> None:
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge_into(target[key], value)
        else:
            target[key] = value


def use_profile(params_path: str | Path, profile: str) -> Params:
    """Rewrite ``params_path`` with ``profiles/<profile>.yaml`` applied; validate before writing."""
    path = Path(params_path)
    overrides = load_profile_overrides(path, profile)
    round_trip = YAML()  # keeps comments and key order
    round_trip.preserve_quotes = True
    try:
        document = round_trip.load(path.read_text(encoding="utf-8")) or {}
    except Exception as exc:  # ruamel raises several unrelated error types
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    _merge_into(document, overrides)
    document["profile"] = profile
    buffer = io.StringIO()
    round_trip.dump(document, buffer)
    text = buffer.getvalue()
    params = parse_params(yaml.safe_load(text), f"{path} with profile {profile!r}")
    write_text_atomic(path, text)
    return params
