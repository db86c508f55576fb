"""The study gate end to end: ``srseg study --gate build`` compares the registered challenger with
bicubic (first promotion) or with the champion, planted votes go into the study's store,
``srseg study analyze`` writes the preference with its Wilson CI, and ``promote`` reads it:
a clear preference passes, a split vote and a stale study are refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient
from train.trainkit import build_prepared_root

from srseg.config import Params, parse_params
from srseg.registry import Gate, log_and_register, promote
from srseg.stages import run_degrade, run_study_analyze, run_study_gate_build
from srseg.stages.ship import read_study_preference
from srseg.study.bundle import load_study
from srseg.study.store import Vote, default_state_dir, open_store

NAME = "gate-study"
VAL_IDS = (1503, 1490, 1268, 1818)  # one selection image, three report images


def _params(root: Path, lr_root: Path, study_dir: Path, tracking_uri: str) -> Params:
    return parse_params(
        {
            "paths": {"data_root": str(root), "lr_root": str(lr_root)},
            "train": {"class_map": "coarse8", "selection_images": 1, "device": "cpu"},
            "study": {"output_dir": str(study_dir), "num_images": 2, "crop_size": 64, "attention_checks": 1},
            "registry": {"model_name": NAME},
            "promote": {"perceptual": "study"},
            "mlflow": {"tracking_uri": tracking_uri},
        },
        "tests/registry gate study",
    )


def _plant_votes(bundle: Path, for_challenger: int, raters: int = 24) -> None:
    """``raters`` raters pass the attention check; ``for_challenger`` of them always pick the challenger."""
    study = load_study(bundle)
    votes = []
    for r in range(raters):
        for pair in study.pairs:
            if pair.attention_check:
                side = "left" if pair.left.method == pair.expected else "right"
            else:
                want = "challenger" if r < for_challenger else next(m for m in study.methods if m != "challenger")
                side = "left" if pair.left.method == want else "right"
            votes.append(
                Vote(f"r{r:02d}", pair.id, pair.method(side), side, 900, "2026-01-01T00:00:00.000+00:00", "test")
            )
    store = open_store(study.study_id, default_state_dir(bundle), create=True)
    assert store.import_votes(votes).inserted == len(votes)


def _passing_scores(specs: dict[str, str]) -> dict:
    """PSNR scores that clear the floor and the champion criterion: only the study decides here."""
    base = [25.0, 26.5, 24.2, 27.1]
    out = {
        role: {
            "psnr_y": [
                b + (0.0 if role == "bicubic" else 0.5 if role == "champion" else 0.8) + 0.01 * i
                for i, b in enumerate(base)
            ]
        }
        for role in specs
    }
    return out


@pytest.mark.timeout(600)
def test_study_gate_passes_on_a_clear_preference_and_refuses_a_split_or_stale_one(
    cocostuff_sample: Path, sr_heads: dict[str, Path], local_store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    root = build_prepared_root(cocostuff_sample, tmp_path / "data" / "cocostuff", train_ids=(17914,), val_ids=VAL_IDS)
    params = _params(root, tmp_path / "data" / "lr", tmp_path / "study", local_store)
    run_degrade(params)
    client = MlflowClient(local_store, registry_uri=local_store)
    gate = Gate(perceptual="study")

    # First promotion: the study compares the challenger with bicubic.
    v1 = log_and_register(sr_heads["fitted"], NAME, local_store, tags={"git_commit": "x", "data_manifest_sha256": "y"})
    bundle = run_study_gate_build(params)
    study = load_study(bundle)
    assert study.methods == ("challenger", "bicubic")
    assert study.gate["challenger"] == f"models:/{NAME}/{v1.version}" and study.gate["opponent"] == "bicubic"
    assert all(pair.stem in {"000000001490", "000000001268", "000000001818", "000000001503"} for pair in study.pairs)
    # no votes yet: the criterion fails closed
    assert promote(NAME, local_store, _passing_scores, gate, study=read_study_preference(params)).action == "reject"
    _plant_votes(bundle, for_challenger=21)
    run_study_analyze(params, bundle=bundle)
    preference = read_study_preference(params)
    assert preference is not None and preference.n == 2 * 24 and preference.preference == pytest.approx(21 / 24)
    assert preference.ci_low > 0.5 and preference.opponent == "bicubic"
    first = promote(NAME, local_store, _passing_scores, gate, study=preference)
    assert first.action == "promote", first.table()
    row = first.criteria[-1]
    assert row.name == "study_preference" and row.passed and row.opponent_name == "bicubic"

    # Second version: the gate study must now be challenger vs champion; the old analysis is stale.
    v2 = log_and_register(
        sr_heads["fitted_more"], NAME, local_store, tags={"git_commit": "x", "data_manifest_sha256": "y"}
    )
    stale = promote(NAME, local_store, _passing_scores, gate, dry_run=True, study=read_study_preference(params))
    assert stale.action == "reject" and "the study compared" in stale.criteria[-1].note
    bundle = run_study_gate_build(params)
    study = load_study(bundle)
    assert study.methods == ("challenger", "champion") and study.gate["opponent"] == f"models:/{NAME}/{v1.version}"
    assert any(p.name.startswith("bundle.state.") for p in bundle.parent.iterdir())  # old votes archived, kept
    _plant_votes(bundle, for_challenger=12)  # a coin flip
    run_study_analyze(params, bundle=bundle)
    split = read_study_preference(params)
    assert split.challenger == f"models:/{NAME}/{v2.version}" and split.ci_low < 0.5 < split.ci_high
    refused = promote(NAME, local_store, _passing_scores, gate, study=split)
    assert refused.action == "reject" and [c.name for c in refused.criteria if not c.passed] == ["study_preference"]
    assert str(client.get_registered_model(NAME).aliases["champion"]) == v1.version
    assert "study_preference" in refused.table() and "FAIL" in refused.table()
