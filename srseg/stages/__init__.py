"""Stage entry points: map validated ``Params`` onto library calls.

The CLI, the DVC stages (through the CLI) and the KFP components all call these functions, so
one code path runs everywhere. Each submodule imports its heavy dependencies lazily.
"""

from srseg.stages.benchmark import run_benchmark
from srseg.stages.data import run_degrade, run_degrade_folder, run_download
from srseg.stages.evaluate import run_evaluate, run_study_analyze, run_study_build, run_study_gate_build
from srseg.stages.report import run_report
from srseg.stages.ship import run_apply_decision, run_export, run_promote, run_register, run_rollback

__all__ = [
    "run_apply_decision",
    "run_benchmark",
    "run_degrade",
    "run_degrade_folder",
    "run_download",
    "run_evaluate",
    "run_export",
    "run_promote",
    "run_register",
    "run_report",
    "run_rollback",
    "run_study_analyze",
    "run_study_build",
    "run_study_gate_build",
]
