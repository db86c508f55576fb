"""Progress journal of a batch command (upscale or degrade a folder): which outputs are complete.

Why: a batch stopped by a bad input, a full disk or ``kill -9`` must neither leave a set of outputs
that looks complete nor redo everything on the next run. Each output is written atomically, then
one JSON line is appended (and fsynced) here naming it, its input, and both files' size and
mtime. A re-run with the same settings skips every entry whose two files are unchanged; a run
with other settings starts a new journal. A torn last line (killed mid-write) is ignored.

Format (JSON lines)::

    {"journal": "<kind>", "settings": {...}}                 header
    {"key": "<output>", "input": "...", "input_stat": [size, mtime_ns], "output_stat": [...], ...}
    {"complete": true, "outputs": N}                        written when the batch finished
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from srseg.fileio import write_text_atomic

logger = logging.getLogger(__name__)


def file_stat(path: str | os.PathLike[str]) -> list[int] | None:
    """``[size, mtime_ns]`` of a file, or None when it does not exist."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return [st.st_size, st.st_mtime_ns]


class Journal:
    """Append-only record of completed outputs for one (kind, settings) batch."""

    def __init__(self, path: str | os.PathLike[str], kind: str, settings: dict[str, Any]) -> None:
        self.path = Path(path)
        self.kind = kind
        self.settings = json.loads(json.dumps(settings, sort_keys=True, default=str))
        self.entries: dict[str, dict[str, Any]] = {}
        self.complete = False
        if not self._load():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(
                self.path, json.dumps({"journal": kind, "settings": self.settings}, sort_keys=True) + "\n"
            )

    def _load(self) -> bool:
        """Read an existing journal of the same kind and settings; False when there is none."""
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return False
        records = []
        for line in lines:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a torn line: written last, by a process that was killed
        if not records or records[0] != {"journal": self.kind, "settings": self.settings}:
            logger.info("%s: made with other settings; starting a new journal", self.path)
            return False
        if len(records) < len(lines):  # drop the torn line, so appends start on a fresh line
            write_text_atomic(self.path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in records))
        for record in records[1:]:
            if "key" in record:
                self.entries[record["key"]] = record
                self.complete = False
            elif record.get("complete"):
                self.complete = True
        return True

    def done(
        self, key: str, input_path: str | os.PathLike[str], output_path: str | os.PathLike[str]
    ) -> dict[str, Any] | None:
        """The entry for ``key`` if its input and output are both unchanged since it was recorded."""
        entry = self.entries.get(key)
        if entry is None:
            return None
        if entry.get("input_stat") != file_stat(input_path) or entry.get("output_stat") != file_stat(output_path):
            return None
        return entry

    def record(
        self, key: str, input_path: str | os.PathLike[str], output_path: str | os.PathLike[str], **extra: Any
    ) -> None:
        """Note that ``output_path`` (written atomically before this call) is complete."""
        entry = {
            "key": key,
            "input": str(input_path),
            "input_stat": file_stat(input_path),
            "output_stat": file_stat(output_path),
            **extra,
        }
        self._append(entry)
        self.entries[key] = entry
        self.complete = False

    def finish(self, outputs: int) -> None:
        self._append({"complete": True, "outputs": outputs})
        self.complete = True

    def _append(self, record: dict[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, sort_keys=True) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
