"""The pipeline's run-time overrides, in one place.

Each entry of :data:`RUNTIME_OVERRIDES` is a parameter of the KFP pipeline (and of its
``resolve_params`` component) that, when set, overrides params keys. :func:`override_strings`
turns the values into ``KEY.PATH=VALUE`` strings that :func:`srseg.config.load_params` applies, the
same strings ``srseg ... --set`` takes. Adding an override: one entry here, and the parameter in
``pipelines/training_pipeline.py::srseg_training`` and ``components/params.py::resolve_params``
(``tests/pipeline/test_steps.py`` checks the three agree). ``srseg pipeline run/submit`` pass
pipeline arguments by these names.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from srseg.config import Params


@dataclass(frozen=True)
class RuntimeOverride:
    """Pipeline parameter ``name``: when not ``unset``, its value goes to every key of ``keys``."""

    name: str
    keys: tuple[str, ...]
    unset: str | int = ""  # KFP parameters cannot be None: "" / 0 mean "as in the params file"


def _sections_with(field: str) -> tuple[str, ...]:
    """Params sections that have ``field`` (``scale`` lives in degrade and train)."""
    sections = []
    for name, info in Params.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and field in getattr(annotation, "model_fields", {}):
            sections.append(name)
    return tuple(sections)


RUNTIME_OVERRIDES: tuple[RuntimeOverride, ...] = (
    RuntimeOverride("data_mode", ("download.mode",)),
    RuntimeOverride("subset_size", ("download.subset_size",), 0),
    RuntimeOverride("mirror", ("download.mirror",)),  # "none": the official hosts
    RuntimeOverride("scale", tuple(f"{section}.scale" for section in _sections_with("scale")), 0),
    RuntimeOverride("mlflow_uri", ("mlflow.tracking_uri",)),
    RuntimeOverride("s3_bucket", ("download.upload.bucket",)),
    RuntimeOverride("s3_prefix", ("download.upload.prefix",)),
    RuntimeOverride("s3_endpoint_url", ("download.upload.endpoint_url",)),
)
OVERRIDE_NAMES = tuple(override.name for override in RUNTIME_OVERRIDES)


def override_strings(work_dir: str, values: Mapping[str, Any]) -> list[str]:
    """``KEY.PATH=VALUE`` strings for the set ``values`` (by override name), after the dataset
    paths under ``work_dir`` (they always move there: the PVC mount on a cluster).

    ``mirror="none"`` selects the official hosts. An unknown name is an error naming it.
    """
    if not work_dir:
        raise ValueError("work_dir must name the folder that holds the dataset (the PVC mount path on a cluster)")
    unknown = sorted(set(values) - set(OVERRIDE_NAMES))
    if unknown:
        raise ValueError(f"unknown run-time overrides {unknown}; known: {', '.join(OVERRIDE_NAMES)}")
    root = Path(work_dir)
    out = [
        f"paths.data_root={_yaml(str(root / 'data' / 'cocostuff'))}",
        f"paths.lr_root={_yaml(str(root / 'data' / 'lr'))}",
    ]
    for override in RUNTIME_OVERRIDES:
        value = values.get(override.name, override.unset)
        if value == override.unset:
            continue
        if override.name == "mirror" and str(value).lower() == "none":
            value = None
        out += [f"{key}={_yaml(value)}" for key in override.keys]
    return out


def _yaml(value: Any) -> str:
    """``value`` as a one-line YAML scalar that reads back as itself (JSON is YAML)."""
    return json.dumps(value)
