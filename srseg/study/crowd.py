"""Crowdsourcing: export the pairs as CSV for a crowd platform, import its votes back.

Export (one row per pair)::

    pair_id,left_image,right_image,reference_image

Image values are bundle-relative file names (``images/<hash>.png``), or URLs when ``base_url`` is
given (host the bundle's ``images/`` folder there). Names are content hashes, so nothing in the CSV
reveals a method or which pairs are attention checks.

Import (one row per answer; extra columns are ignored)::

    rater_id,pair_id,choice[,response_ms][,submitted_at]

``choice`` is the side the worker picked, ``left`` or ``right``; the method is looked up in the
bundle. Every row is validated first and all problems are reported together, each with its line
number in the file (the header is line 1); then all votes go in as one transaction, so a bad file
imports nothing. Rater ids get the prefix ``crowd:`` so they never collide with invited raters.
Re-importing the same file is a no-op (rows already stored count as duplicates).
"""

from __future__ import annotations

import csv
import io
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from srseg.fileio import atomic_open
from srseg.study.bundle import load_study
from srseg.study.store import RATER_ID, Vote, default_state_dir, now_iso, open_store

log = logging.getLogger(__name__)

EXPORT_COLUMNS = ("pair_id", "left_image", "right_image", "reference_image")
REQUIRED_COLUMNS = ("rater_id", "pair_id", "choice")
OPTIONAL_COLUMNS = ("response_ms", "submitted_at")
MAX_ERRORS_SHOWN = 20


class CrowdImportError(ValueError):
    """A votes CSV failed validation; ``errors`` lists every problem with its line number."""

    def __init__(self, path: Path, errors: list[str]) -> None:
        self.path = path
        self.errors = errors
        shown = "\n".join(f"  {e}" for e in errors[:MAX_ERRORS_SHOWN])
        more = f"\n  ... and {len(errors) - MAX_ERRORS_SHOWN} more" if len(errors) > MAX_ERRORS_SHOWN else ""
        super().__init__(f"{path}: {len(errors)} problem(s), nothing imported:\n{shown}{more}")


@dataclass(frozen=True)
class ImportReport:
    rows: int
    inserted: int
    duplicates: int
    raters: int


def export_crowd_csv(bundle: Path, output: Path, base_url: str | None = None) -> Path:
    """Write the pairs CSV for a crowd platform (see module docstring); returns ``output``."""
    study = load_study(Path(bundle), verify=False)
    if base_url is not None and not base_url.startswith(("https://", "http://")):
        raise ValueError(f"base_url must start with https:// or http://, got {base_url!r}")

    def ref(relative: str | None) -> str:
        if relative is None:
            return ""
        return f"{base_url.rstrip('/')}/{relative}" if base_url else relative

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(EXPORT_COLUMNS)
    for pair in study.pairs:
        writer.writerow([pair.id, ref(pair.left.file), ref(pair.right.file), ref(pair.reference)])
    with atomic_open(Path(output), "w") as handle:
        handle.write(buffer.getvalue())
    log.info("exported %d pairs to %s", len(study.pairs), output)
    return Path(output)


def _parse_time(text: str) -> str:
    stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return stamp.astimezone(UTC).isoformat(timespec="milliseconds")


def read_crowd_votes(bundle: Path, csv_path: Path, rater_prefix: str = "crowd:") -> list[tuple[int, Vote]]:
    """Parse and validate a votes CSV against the bundle: (line number, vote) per unique answer.

    Raises CrowdImportError listing every problem with its line number.
    """
    study = load_study(Path(bundle), verify=False)
    path = Path(csv_path)
    errors: list[str] = []
    votes: list[tuple[int, Vote]] = []
    seen: dict[tuple[str, str], tuple[int, str]] = {}
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        header = [h.strip() for h in (reader.fieldnames or [])]
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        if missing:
            raise CrowdImportError(path, [f"line 1: missing column(s) {', '.join(missing)} (header is {header})"])
        reader.fieldnames = header
        for row in reader:
            line = reader.line_num
            rater = (row.get("rater_id") or "").strip()
            pair_id = (row.get("pair_id") or "").strip()
            choice = (row.get("choice") or "").strip()
            problems = []
            if not RATER_ID.match(rater_prefix + rater) or not rater:
                problems.append(f"bad rater_id {rater!r} (letters, digits, _ . : @ - only)")
            pair = study.by_id.get(pair_id)
            if pair is None:
                problems.append(f"unknown pair_id {pair_id!r}")
            if choice not in ("left", "right"):
                problems.append(f"choice must be 'left' or 'right', got {choice!r}")
            response_ms = None
            raw_ms = (row.get("response_ms") or "").strip()
            if raw_ms:
                try:
                    response_ms = int(raw_ms)
                    if response_ms < 0:
                        raise ValueError
                except ValueError:
                    problems.append(f"response_ms must be a non-negative integer, got {raw_ms!r}")
            created = now_iso()
            raw_time = (row.get("submitted_at") or "").strip()
            if raw_time:
                try:
                    created = _parse_time(raw_time)
                except ValueError:
                    problems.append(f"submitted_at is not an ISO 8601 time: {raw_time!r}")
            if problems:
                errors.extend(f"line {line}: {p}" for p in problems)
                continue
            key = (rater, pair_id)
            if key in seen:
                first_line, first_choice = seen[key]
                if first_choice != choice:
                    errors.append(
                        f"line {line}: rater {rater!r} answered {pair_id} with {choice!r}, but {first_choice!r} on "
                        f"line {first_line}"
                    )
                continue
            seen[key] = (line, choice)
            assert pair is not None
            votes.append(
                (line, Vote(rater_prefix + rater, pair_id, pair.method(choice), choice, response_ms, created, "crowd"))
            )
    if errors:
        raise CrowdImportError(path, errors)
    if not votes:
        raise CrowdImportError(path, ["no vote rows after the header"])
    return votes


def import_crowd_votes(
    bundle: Path, csv_path: Path, state_dir: Path | None = None, rater_prefix: str = "crowd:"
) -> ImportReport:
    """Validate ``csv_path`` and add its votes to the study's store in one transaction."""
    study = load_study(Path(bundle), verify=False)
    rows = read_crowd_votes(bundle, csv_path, rater_prefix)
    votes = [vote for _, vote in rows]
    store = open_store(study.study_id, Path(state_dir) if state_dir else default_state_dir(Path(bundle)), create=True)
    result = store.import_votes(votes)
    if result.conflicts:
        raise CrowdImportError(
            Path(csv_path),
            [
                f"line {rows[index][0]}: rater {stored.rater_id!r} already answered {stored.pair_id} with "
                f"{stored.side!r} (stored {stored.created_at})"
                for index, stored in result.conflicts
            ],
        )
    report = ImportReport(len(votes), result.inserted, result.duplicates, len({v.rater_id for v in votes}))
    log.info("imported %d crowd votes (%d already stored) from %s", report.inserted, report.duplicates, csv_path)
    return report
