"""MLflow model registry for the SR head: log + register (``challenger``), gated promotion to
``champion``, rollback, copy to another registered model, and a code-free loader.

Importing this package imports MLflow (no other side effects).
"""

from srseg.registry.loader import SRHeadLoadError, is_sr_head_model, load_sr_head, load_sr_head_dir
from srseg.registry.log_model import ModelVersionInfo, RegistryError, find_registered, log_and_register, nominate_challenger
from srseg.registry.promote import (
    Criterion,
    Decision,
    Gate,
    StudyPreference,
    copy_to,
    evaluate_gate,
    promote,
    rollback,
)

__all__ = [
    "Criterion",
    "Decision",
    "Gate",
    "ModelVersionInfo",
    "RegistryError",
    "SRHeadLoadError",
    "StudyPreference",
    "copy_to",
    "evaluate_gate",
    "find_registered",
    "is_sr_head_model",
    "load_sr_head",
    "load_sr_head_dir",
    "log_and_register",
    "nominate_challenger",
    "promote",
    "rollback",
]
