"""The evaluation stage: metrics with CIs, per-class analysis, LPIPS/NIQE, reports and gallery.

Modules: ``run`` (the :func:`evaluate` orchestrator), ``methods`` (model strings -> SR functions),
``lpips`` and ``niqe`` (perceptual metrics), ``stats`` (bootstrap CIs, paired differences),
``perclass`` (class-restricted metrics) and ``report`` (CSV/Markdown/PNG/HTML writers).

``evaluate`` is imported on first use, so ``import srseg.evaluate.stats`` stays free of torch.
"""

from __future__ import annotations

from typing import Any

__all__ = ["RUN_RECORD", "evaluate"]

# In an evaluation's output folder: the MLflow run it logged to, for stages that add to that run
# (the report) or link to it (the model card).
RUN_RECORD = "mlflow_run.json"


def __getattr__(name: str) -> Any:
    if name == "evaluate":
        from srseg.evaluate.run import evaluate

        return evaluate
    raise AttributeError(f"module 'srseg.evaluate' has no attribute {name!r}")
