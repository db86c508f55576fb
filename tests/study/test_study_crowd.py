"""Crowd CSV: pairs out (no method leaks), votes back in, validated with line numbers."""

from __future__ import annotations

import csv
import random
from pathlib import Path

import pytest

from srseg.study.analyze import analyze_votes
from srseg.study.bundle import load_study
from srseg.study.crowd import CrowdImportError, export_crowd_csv, import_crowd_votes
from srseg.study.store import open_store


def _write(path: Path, rows: list[list[str]]) -> Path:
    with open(path, "w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    return path


def test_export_lists_pairs_without_revealing_methods(study_bundle: Path, tmp_path: Path) -> None:
    study = load_study(study_bundle)
    out = export_crowd_csv(study_bundle, tmp_path / "pairs.csv", base_url="https://cdn.example.org/study/")
    text = out.read_text()
    rows = list(csv.DictReader(text.splitlines()))
    assert [r["pair_id"] for r in rows] == [p.id for p in study.pairs]
    assert all(r["left_image"].startswith("https://cdn.example.org/study/images/") for r in rows)
    assert rows[0]["right_image"].endswith(study.pairs[0].right.file) and rows[0]["reference_image"] == ""
    for secret in (*study.methods, "@", "attention"):
        assert secret not in text
    plain = list(csv.DictReader(export_crowd_csv(study_bundle, tmp_path / "p2.csv").read_text().splitlines()))
    assert plain[0]["left_image"] == study.pairs[0].left.file
    with pytest.raises(ValueError, match="base_url must start with https:// or http://, got 'ftp://x'"):
        export_crowd_csv(study_bundle, tmp_path / "p3.csv", base_url="ftp://x")


def test_roundtrip_into_the_store(study_bundle: Path, tmp_path: Path) -> None:
    study = load_study(study_bundle)
    pairs = list(csv.DictReader(export_crowd_csv(study_bundle, tmp_path / "pairs.csv").read_text().splitlines()))
    rng = random.Random(0)
    answers = [["rater_id", "pair_id", "choice", "response_ms", "submitted_at", "extra"]]
    for worker in ("A1B2C3", "W-77"):
        for row in pairs:
            answers.append(
                [
                    worker,
                    row["pair_id"],
                    rng.choice(["left", "right"]),
                    str(rng.randint(300, 5000)),
                    "2024-05-01T12:00:00Z",
                    "x",
                ]
            )
    votes_csv = _write(tmp_path / "votes.csv", answers)
    report = import_crowd_votes(study_bundle, votes_csv, tmp_path / "state")
    assert (report.rows, report.inserted, report.duplicates, report.raters) == (2 * len(pairs), 2 * len(pairs), 0, 2)
    stored = open_store(study.study_id, tmp_path / "state").votes()
    expected = {(f"crowd:{w}", p): c for w, p, c, *_ in answers[1:]}
    assert {(v.rater_id, v.pair_id): v.side for v in stored} == expected
    assert all(v.choice == study.by_id[v.pair_id].method(v.side) and v.source == "crowd" for v in stored)
    assert stored[0].created_at.startswith("2024-05-01T12:00:00")
    again = import_crowd_votes(study_bundle, votes_csv, tmp_path / "state")
    assert (again.inserted, again.duplicates) == (0, 2 * len(pairs))
    assert analyze_votes(study, stored, bootstrap=10)["counts"]["raters_total"] == 2


def test_validation_errors_name_the_line(study_bundle: Path, tmp_path: Path) -> None:
    votes_csv = _write(
        tmp_path / "votes.csv",
        [
            ["rater_id", "pair_id", "choice", "response_ms"],
            ["w1", "p0000", "left", "500"],
            ["w1", "p9999", "left", "500"],
            ["w2", "p0001", "up", "500"],
            ["w3", "p0002", "right", "soon"],
            ["w 4", "p0003", "left", ""],
            ["w1", "p0000", "right", ""],
        ],
    )
    with pytest.raises(CrowdImportError) as info:
        import_crowd_votes(study_bundle, votes_csv, tmp_path / "state")
    message = str(info.value)
    assert "line 3: unknown pair_id 'p9999'" in message
    assert "line 4: choice must be 'left' or 'right', got 'up'" in message
    assert "line 5: response_ms must be a non-negative integer, got 'soon'" in message
    assert "line 6: bad rater_id 'w 4'" in message
    assert "line 7: rater 'w1' answered p0000 with 'right', but 'left' on line 2" in message
    assert len(info.value.errors) == 5 and "nothing imported" in message
    assert not (tmp_path / "state").exists()


def test_missing_columns_and_conflicts_with_stored_votes(study_bundle: Path, tmp_path: Path) -> None:
    with pytest.raises(CrowdImportError, match="line 1: missing column.s. choice"):
        import_crowd_votes(
            study_bundle, _write(tmp_path / "a.csv", [["rater_id", "pair_id"], ["w", "p0000"]]), tmp_path / "state"
        )
    import_crowd_votes(
        study_bundle,
        _write(tmp_path / "b.csv", [["rater_id", "pair_id", "choice"], ["w", "p0000", "left"]]),
        tmp_path / "state",
    )
    changed = _write(
        tmp_path / "c.csv", [["rater_id", "pair_id", "choice"], ["v", "p0001", "left"], ["w", "p0000", "right"]]
    )
    with pytest.raises(CrowdImportError, match="line 3: rater 'crowd:w' already answered p0000 with 'left'"):
        import_crowd_votes(study_bundle, changed, tmp_path / "state")
    study = load_study(study_bundle)
    assert [(v.rater_id, v.side) for v in open_store(study.study_id, tmp_path / "state").votes()] == [
        ("crowd:w", "left")
    ]
