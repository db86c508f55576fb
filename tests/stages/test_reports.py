"""Report files copied out of a stage's output folder (``srseg.stages.reports``)."""

from __future__ import annotations

from pathlib import Path

from srseg.stages.reports import TRAIN_REPORT, publish_report


def test_copies_the_report_files_and_drops_stale_ones(tmp_path: Path) -> None:
    stage = tmp_path / "outputs" / "psnr"
    (stage / "plots").mkdir(parents=True)
    (stage / "metrics.json").write_text('{"best": {"psnr_y": 25.0}}\n')
    (stage / "plots" / "train_loss.csv").write_text("iteration,train/pixel\n10,0.2\n")
    report = tmp_path / "reports" / "train_psnr"
    report.mkdir(parents=True)
    (report / "val.csv").write_text("iteration,psnr_y\n30,99.0\n")  # from an older run

    written = publish_report(stage, report, TRAIN_REPORT)

    assert sorted(p.name for p in written) == ["metrics.json", "train_loss.csv"]
    assert (report / "metrics.json").read_text() == (stage / "metrics.json").read_text()
    assert (report / "train_loss.csv").read_text() == "iteration,train/pixel\n10,0.2\n"
    assert not (report / "val.csv").exists()  # this run wrote no validation curve
    assert sorted(p.name for p in report.iterdir()) == ["metrics.json", "train_loss.csv"]  # no temp files left
