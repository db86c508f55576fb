"""Journal: what a batch finished, kept across runs with the same settings, torn lines ignored."""

from __future__ import annotations

import os
from pathlib import Path

from srseg.journal import Journal


def _files(tmp_path: Path, name: str) -> tuple[Path, Path]:
    source, output = tmp_path / f"{name}.in", tmp_path / f"{name}.out"
    source.write_text(name)
    output.write_text(name.upper())
    return source, output


def test_entries_survive_a_restart_until_a_file_changes(tmp_path: Path) -> None:
    path = tmp_path / ".journal.jsonl"
    a, b = _files(tmp_path, "a"), _files(tmp_path, "b")
    journal = Journal(path, "test/1", {"scale": 4})
    journal.record("a", *a, width=3)
    journal.record("b", *b)
    again = Journal(path, "test/1", {"scale": 4})
    assert again.done("a", *a) == {**again.entries["a"], "width": 3} and again.done("b", *b) is not None
    os.utime(a[0], ns=(1, 1))  # the input changed since
    b[1].write_text("other bytes")  # the output changed since
    assert again.done("a", *a) is None and again.done("b", *b) is None
    assert not again.complete
    again.finish(2)
    assert Journal(path, "test/1", {"scale": 4}).complete


def test_other_settings_start_over_and_a_torn_line_is_dropped(tmp_path: Path) -> None:
    path = tmp_path / ".journal.jsonl"
    a, b = _files(tmp_path, "a"), _files(tmp_path, "b")
    Journal(path, "test/1", {"scale": 4}).record("a", *a)
    assert Journal(path, "test/1", {"scale": 2}).entries == {}
    assert Journal(path, "test/1", {"scale": 4}).entries == {}, "the journal of the other settings replaced it"
    journal = Journal(path, "test/1", {"scale": 4})
    journal.record("a", *a)
    with open(path, "a") as handle:
        handle.write('{"key": "b", "inp')  # killed mid-write
    resumed = Journal(path, "test/1", {"scale": 4})
    assert set(resumed.entries) == {"a"}
    resumed.record("b", *b)
    assert set(Journal(path, "test/1", {"scale": 4}).entries) == {"a", "b"}
