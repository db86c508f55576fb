"""Study analysis: Wilson intervals, Bradley-Terry, Fleiss' kappa, and a planted preference
(multitask > sr_only > bicubic, plus raters who fail attention checks) recovered end to end."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest

from srseg.study.analyze import analyze_study, analyze_votes, bradley_terry, fleiss_kappa, wilson_interval
from srseg.study.bundle import Study, load_study
from srseg.study.store import Vote, open_store

PLANTED = {"bicubic": 0.0, "sr_only": 1.0, "multitask": 1.8}  # log-strengths: P(a beats b) = sigmoid(s_a - s_b)
GOOD, BAD = 30, 4


def test_wilson_interval_known_values() -> None:
    low, high = wilson_interval(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-4) and high == pytest.approx(0.9433, abs=1e-4)
    assert wilson_interval(0, 20)[0] == 0.0 and wilson_interval(20, 20)[1] == 1.0
    assert all(math.isnan(v) for v in wilson_interval(0, 0))
    with pytest.raises(ValueError, match="got 11"):
        wilson_interval(11, 10)


def test_fleiss_kappa_matches_the_textbook_example() -> None:
    # Fleiss (1971) style example as tabulated on Wikipedia: 10 items, 14 raters, 5 categories.
    table = [
        [0, 0, 0, 0, 14],
        [0, 2, 6, 4, 2],
        [0, 0, 3, 5, 6],
        [0, 3, 9, 2, 0],
        [2, 2, 8, 1, 1],
        [7, 7, 0, 0, 0],
        [3, 2, 6, 3, 0],
        [2, 5, 3, 2, 2],
        [6, 5, 2, 1, 0],
        [0, 2, 2, 3, 7],
    ]
    assert fleiss_kappa(np.array(table)) == pytest.approx(0.210, abs=1e-3)
    assert fleiss_kappa(np.array([[3, 0], [0, 3], [3, 0]])) == pytest.approx(1.0)


def test_bradley_terry_recovers_exact_strengths() -> None:
    truth = np.array([0.0, 1.0, 1.8])
    prob = 1 / (1 + np.exp(-(truth[:, None] - truth[None, :])))
    wins = 1000 * prob * (1 - np.eye(3))
    scores = bradley_terry(wins, ~np.eye(3, dtype=bool), prior=0.0)
    np.testing.assert_allclose(scores - scores[0], truth, atol=1e-6)
    batch = bradley_terry(np.stack([wins, wins]), ~np.eye(3, dtype=bool), prior=0.0)
    np.testing.assert_allclose(batch[1] - batch[1, 0], truth, atol=1e-6)


def simulate_votes(study: Study, seed: int = 0) -> tuple[list[Vote], set[str]]:
    """Good raters follow PLANTED and pass attention checks; bad raters always click left."""
    rng = random.Random(seed)
    votes, bad = [], set()
    for r in range(GOOD + BAD):
        rater = f"sim:{r:02d}"
        for pair in study.pairs:
            if r >= GOOD:
                bad.add(rater)
                side = "left"
            elif pair.attention_check:
                side = "left" if pair.left.method == pair.expected else "right"
            else:
                a, b = pair.left.method, pair.right.method
                p_left = 1 / (1 + math.exp(-(PLANTED[a] - PLANTED[b])))
                side = "left" if rng.random() < p_left else "right"
            votes.append(
                Vote(
                    rater,
                    pair.id,
                    pair.method(side),
                    side,
                    rng.randint(400, 4000),
                    "2024-01-01T00:00:00.000+00:00",
                    "sim",
                )
            )
    return votes, bad


def _by(items: list[dict], **match) -> dict:  # type: ignore[no-untyped-def]
    return next(i for i in items if all(i[k] == v for k, v in match.items()))


def test_planted_preference_is_recovered(study_bundle: Path, tmp_path: Path) -> None:
    study = load_study(study_bundle)
    votes, bad = simulate_votes(study)
    state = tmp_path / "state"
    store = open_store(study.study_id, state, create=True)
    assert store.import_votes(votes).inserted == len(votes)

    metrics = analyze_study(study_bundle, tmp_path / "report", state, attention_threshold=0.75, bootstrap=500, seed=1)
    result = json.loads((tmp_path / "report" / "analysis.json").read_text())
    assert set(result["excluded_raters"]) == bad
    assert metrics["raters_included"] == GOOD and metrics["votes_used"] == GOOD * 18

    bt = {b["method"]: b for b in result["bradley_terry"]}
    assert bt["multitask"]["score"] > bt["sr_only"]["score"] > bt["bicubic"]["score"] == 0.0
    for name in ("sr_only", "multitask"):
        assert bt[name]["ci_low"] > 0, f"{name} CI should exclude the reference"
        assert abs(bt[name]["score"] - PLANTED[name]) < 0.45
    strong = _by(result["win_rates"], a="bicubic", b="multitask")
    assert strong["ci_high"] < 0.5 and strong["n"] == GOOD * 6
    middle = _by(result["win_rates"], a="sr_only", b="multitask")
    assert middle["ci_low"] < 1 - 1 / (1 + math.exp(-0.8)) < middle["ci_high"]
    assert 0.5 < result["agreement"]["percent"] < 1.0 and result["agreement"]["fleiss_kappa"] > 0

    files = {p.name for p in (tmp_path / "report").iterdir()}
    assert {"metrics.json", "analysis.json", "report.md", "report.html", "study_scores.png"} <= files
    assert (tmp_path / "report" / "study_scores.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (
        json.loads((tmp_path / "report" / "metrics.json").read_text())["bt_score"]["multitask"]["score"]
        == bt["multitask"]["score"]
    )
    assert "| multitask |" in (tmp_path / "report" / "report.md").read_text()

    # without exclusion the left-clicking raters pull the estimate towards 0.5
    loose = analyze_votes(study, votes, attention_threshold=0.0, bootstrap=0)
    assert loose["counts"]["raters_excluded"] == 0
    assert _by(loose["win_rates"], a="bicubic", b="multitask")["rate_a"] > strong["rate_a"]


def test_vote_bootstrap_and_bad_parameters(study_bundle: Path) -> None:
    study = load_study(study_bundle)
    votes, _ = simulate_votes(study, seed=2)
    result = analyze_votes(study, votes, bootstrap=200, bootstrap_unit="vote", reference="multitask")
    bt = {b["method"]: b for b in result["bradley_terry"]}
    assert bt["multitask"]["score"] == 0.0 and bt["bicubic"]["ci_high"] < 0
    with pytest.raises(ValueError, match="reference 'nope'"):
        analyze_votes(study, votes, reference="nope")
    with pytest.raises(ValueError, match="bootstrap_unit must be 'rater' or 'vote', got 'pair'"):
        analyze_votes(study, votes, bootstrap_unit="pair")
    with pytest.raises(ValueError, match="attention_threshold must be in"):
        analyze_votes(study, votes, attention_threshold=1.5)


def test_report_escapes_method_names(study_bundle: Path) -> None:
    from srseg.study.analyze import render_html, render_markdown

    study = load_study(study_bundle)
    votes, _ = simulate_votes(study)
    result = analyze_votes(study, votes, bootstrap=0)
    for entry in result["bradley_terry"] + result["win_rates"]:
        for key in ("method", "a", "b"):
            if entry.get(key) == "multitask":
                entry[key] = "<script>x</script>|*"
    html = render_html(result)
    assert "<script>x</script>" not in html and "&lt;script&gt;x&lt;/script&gt;" in html
    assert "<script>" not in render_markdown(result) and r"\|\*" in render_markdown(result)


def test_mlflow_logging_to_a_local_store(study_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow.tracking import MlflowClient

    # a file: store (opted in) keeps this test fast; the SQLite store costs ~15 s of migrations
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    study = load_study(study_bundle)
    votes, _ = simulate_votes(study)
    open_store(study.study_id, tmp_path / "state", create=True).import_votes(votes)
    uri = (tmp_path / "mlruns").as_uri()
    analyze_study(study_bundle, tmp_path / "report", tmp_path / "state", bootstrap=50, mlflow_tracking_uri=uri)
    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("srseg-study").experiment_id])
    assert run.data.metrics["study.raters_included"] == GOOD
    assert "study.bt_score.multitask.score" in run.data.metrics
    assert run.data.params["study.bootstrap_unit"] == "rater"
    assert {f.path for f in client.list_artifacts(run.info.run_id, "study")} >= {
        "study/report.md",
        "study/study_scores.png",
    }
