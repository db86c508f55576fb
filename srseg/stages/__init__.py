"""Stage entry points: map validated ``Params`` onto library calls.

The CLI, the DVC stages (through the CLI) and the KFP components all call these functions, so
one code path runs everywhere.
"""

from srseg.stages.data import run_degrade, run_degrade_folder, run_download

__all__ = ["run_degrade", "run_degrade_folder", "run_download"]
