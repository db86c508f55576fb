"""Report files: the small metrics and plot files of a stage, copied out of its output folder.

The output folders are cached by DVC (and pushed to the remote); the report folder is kept in
git, so ``dvc metrics diff``, ``dvc plots diff`` and ``dvc exp show`` can compare runs across
commits without fetching anything. ``dvc.yaml`` passes ``--report-dir reports/<stage>``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

from srseg.fileio import write_bytes_atomic

log = logging.getLogger(__name__)

# file in the stage's output folder -> name in the report folder
TRAIN_REPORT = {"metrics.json": "metrics.json", "plots/val.csv": "val.csv", "plots/train_loss.csv": "train_loss.csv"}
EVALUATE_REPORT = {"metrics.json": "metrics.json", "plots/per_class_gain.csv": "per_class_gain.csv"}
BENCHMARK_REPORT = {"metrics.json": "metrics.json", "benchmark.md": "benchmark.md"}


def publish_report(source_dir: str | Path, report_dir: str | Path, files: Mapping[str, str]) -> list[Path]:
    """Copy ``files`` from ``source_dir`` into ``report_dir`` (each atomically); returns what was written.

    A file the stage did not write (e.g. ``val.csv`` without a validation split) is skipped with
    a warning, and an older copy of it is removed, so a report never shows numbers of another run.
    """
    source_dir, report_dir = Path(source_dir), Path(report_dir)
    written = []
    for source_name, report_name in files.items():
        source, target = source_dir / source_name, report_dir / report_name
        if not source.is_file():
            log.warning("%s: not written by this run; %s left out of the report", source, target)
            target.unlink(missing_ok=True)
            continue
        write_bytes_atomic(target, source.read_bytes())
        written.append(target)
    return written
