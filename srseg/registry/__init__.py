"""MLflow model registry for the SR head: log + register (``challenger``), gated promotion to
``champion`` (judge, then apply under a lock), rollback, copy to another registered model, and a
code-free loader. Also here: the gate's stored evaluations (``evalcache``), the lock (``lock``),
bounded connections (``connection``) and a new version's lineage tags (``version_lineage``).

Importing this package imports MLflow (no other side effects).
"""

from srseg.registry.loader import SRHeadLoadError, is_sr_head_model, load_sr_head, load_sr_head_dir
from srseg.registry.log_model import (
    ModelVersionInfo,
    RegistryError,
    find_registered,
    log_and_register,
    nominate_challenger,
)
from srseg.registry.promote import (
    Criterion,
    Decision,
    Evaluated,
    Gate,
    StudyPreference,
    apply,
    copy_to,
    evaluate_gate,
    judge,
    promote,
    rollback,
)

__all__ = [
    "Criterion",
    "Decision",
    "Evaluated",
    "Gate",
    "ModelVersionInfo",
    "RegistryError",
    "SRHeadLoadError",
    "StudyPreference",
    "apply",
    "copy_to",
    "evaluate_gate",
    "find_registered",
    "is_sr_head_model",
    "judge",
    "load_sr_head",
    "load_sr_head_dir",
    "log_and_register",
    "nominate_challenger",
    "promote",
    "rollback",
]
