"""KFP components, one module per stage, each a thin wrapper over ``srseg.stages``.

The modules hold plain functions; :func:`make_components` turns them into KFP components for one
project image. The image is a compile-time choice (``srseg pipeline compile --image``) and ends up
in the compiled IR of every step. ``install_kfp_package=False``: the image already has kfp (a
pinned dependency of srseg), so steps start without a pip install and without network access.
Each body imports srseg inside the function: only the body is embedded in the IR, and it runs in
the image.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from components.benchmark import benchmark
from components.degrade import degrade
from components.download import download
from components.evaluate import evaluate
from components.export import export
from components.params import resolve_params
from components.preflight import preflight
from components.promote import gate, promote
from components.register import register
from components.report import report
from components.seeds import seeds
from components.study_analyze import study_analyze
from components.study_build import study_build
from components.train import collect_model, train
from components.trainjob import launch_trainjob

# The pipeline's steps, each named by its function (the name the pipeline calls it by).
_FUNCTIONS: dict[str, Callable[..., Any]] = {
    func.__name__: func
    for func in (
        resolve_params,
        preflight,
        download,
        degrade,
        seeds,
        train,
        launch_trainjob,
        collect_model,
        evaluate,
        study_build,
        study_analyze,
        benchmark,
        report,
        export,
        register,
        gate,
        promote,
    )
}


@dataclass(frozen=True)
class Components:
    """The pipeline's components, all built on the same image: ``c.train(...)`` makes a task."""

    image: str
    steps: Mapping[str, Any]

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["steps"][name]
        except KeyError:
            raise AttributeError(f"no component {name!r}; known: {', '.join(self.__dict__['steps'])}") from None

    def map(self, wrap: Callable[[Any], Any]) -> Components:
        """The same components, each passed through ``wrap``."""
        return Components(self.image, {name: wrap(component) for name, component in self.steps.items()})


def make_components(image: str) -> Components:
    """Build every component with ``image`` as its base image."""
    from kfp import dsl

    if not image or any(c.isspace() for c in image):
        raise ValueError(f"image must be a container image reference, got {image!r}")

    def build(func: Callable[..., Any]) -> Any:
        return dsl.component(base_image=image, install_kfp_package=False)(func)

    return Components(image, {name: build(func) for name, func in _FUNCTIONS.items()})
