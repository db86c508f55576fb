"""Gate, promotion, rollback and copy against a local SQLite registry (precomputed per-image scores)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from srseg.models.io import load_generator
from srseg.registry import (
    Gate,
    RegistryError,
    StudyPreference,
    copy_to,
    evaluate_gate,
    load_sr_head,
    log_and_register,
    promote,
    rollback,
)
from srseg.registry.promote import metric_value

TAGS = {"git_commit": "0123abcd", "data_manifest_sha256": "e" * 64}
BASE = [24.0 + 0.75 * i for i in range(8)]  # per-image bicubic psnr_y of eight report images
WOBBLE = [0.03, -0.02, 0.01, -0.03, 0.02, 0.0, -0.01, 0.0]  # small per-image spread of a gain (mean 0)


def aliases(client: MlflowClient, name: str) -> dict[str, str]:
    return {k: str(v) for k, v in client.get_registered_model(name).aliases.items()}


def per_image(gain: float, spread: float = 1.0) -> list[float]:
    return [b + gain + spread * w for b, w in zip(BASE, WOBBLE)]


def scores(challenger: float, champion: float | None = None, lpips: tuple[float, float] | None = None) -> dict:
    """Precomputed per-image scores: gains over bicubic for the challenger (and the champion)."""
    out = {"challenger": {"psnr_y": per_image(challenger)}, "bicubic": {"psnr_y": per_image(0.0, 0.0)}}
    if champion is not None:
        out["champion"] = {"psnr_y": per_image(champion, -1.0)}
    if lpips is not None:
        out["challenger"]["lpips"] = [lpips[0] + 0.01 * w for w in WOBBLE]
        out["champion" if champion is not None else "bicubic"]["lpips"] = [lpips[1]] * 8
    return out


# ------------------------------------------------------------------------------------- the gate


def test_bicubic_floor_judges_the_ci_of_paired_gains_not_the_mean() -> None:
    gate = Gate(perceptual="none")
    [floor, perceptual] = evaluate_gate(gate, scores(0.4))
    assert floor.passed and perceptual.passed and perceptual.threshold.startswith("not gated")
    assert floor.difference == pytest.approx(0.4) and floor.ci_low > 0.1 and floor.n == 8
    assert floor.opponent_name == "bicubic" and floor.challenger - floor.opponent == pytest.approx(0.4)
    # a consistent but meaningless +0.005 dB: CI above 0, below the 0.1 dB floor
    [floor, _] = evaluate_gate(gate, scores(0.005, None) | {"challenger": {"psnr_y": [b + 0.005 for b in BASE]}})
    assert not floor.passed and 0.0 < floor.ci_low < 0.1
    # a +0.4 dB mean made of one huge win and losses elsewhere: the CI straddles the floor
    lopsided = [b + (3.2 if i == 0 else 0.0) for i, b in enumerate(BASE)]
    [floor, _] = evaluate_gate(gate, {"challenger": {"psnr_y": lopsided}, "bicubic": {"psnr_y": BASE}})
    assert floor.difference == pytest.approx(0.4) and not floor.passed and floor.ci_low < 0.1
    [floor, _] = evaluate_gate(Gate(perceptual="none", min_gain_over_bicubic_db=0.0), scores(-0.2))
    assert not floor.passed  # worse than bicubic fails even a zero floor


def test_champion_criterion_is_paired_and_both_sides_fail_closed() -> None:
    gate = Gate(perceptual="none")
    [floor, versus, _] = evaluate_gate(gate, scores(0.5, 0.5), champion_label="champion v1")
    assert floor.passed and versus.passed and versus.opponent_name == "champion v1"
    [_, versus, _] = evaluate_gate(gate, scores(0.5, 0.7))
    assert not versus.passed and versus.difference == pytest.approx(-0.2, abs=0.01) and versus.ci_high < 0
    missing = scores(0.5, 0.5)
    missing["champion"] = {"psnr_y": [None] * 8}
    [_, versus, _] = evaluate_gate(gate, missing)
    assert not versus.passed and "fails closed" in versus.note
    [floor, _] = evaluate_gate(gate, {"challenger": {"psnr_y": [25.0, 26.0]}, "bicubic": {"psnr_y": [24.0, 25.0]}})
    assert not floor.passed and "needs >= 3" in floor.note  # two images: no CI, no promotion


def test_gate_lpips_fails_closed_when_unavailable() -> None:
    gate = Gate(perceptual="lpips", min_lpips_gain=0.01)
    for missing in (None, [float("nan")] * 8, "unavailable"):
        rows = scores(1.0, 0.5)
        rows["challenger"]["lpips"] = missing
        rows["champion"]["lpips"] = [0.3] * 8
        result = evaluate_gate(gate, rows)
        assert [r.passed for r in result] == [True, True, False] and "fails closed" in result[2].note
    rows = evaluate_gate(gate, scores(1.0, 0.5, lpips=(0.25, 0.30)))
    assert all(r.passed for r in rows) and rows[2].difference == pytest.approx(0.05, abs=0.002)
    assert not evaluate_gate(gate, scores(1.0, 0.5, lpips=(0.295, 0.30)))[2].passed  # gain 0.005 < 0.01
    first = evaluate_gate(gate, scores(1.0, None, lpips=(0.25, 0.30)))  # no champion: LPIPS vs bicubic
    assert first[1].name == "lpips vs bicubic" and first[1].passed


def test_gate_study_preference_reads_the_wilson_lower_bound_of_the_right_study() -> None:
    gate = Gate(perceptual="study", min_study_preference=0.5)
    chal, champ = "models:/m/3", "models:/m/2"
    good = StudyPreference(chal, champ, 0.7, 0.56, 0.81, 60)
    rows = evaluate_gate(gate, scores(1.0, 0.5), good, challenger_uri=chal, opponent_uri=champ)
    assert rows[2].passed and rows[2].challenger == 0.7 and rows[2].ci_low == 0.56
    unsure = StudyPreference(chal, champ, 0.58, 0.45, 0.70, 60)
    assert not evaluate_gate(gate, scores(1.0, 0.5), unsure, challenger_uri=chal, opponent_uri=champ)[2].passed
    stale = StudyPreference("models:/m/2", "models:/m/1", 0.9, 0.8, 0.95, 60)
    row = evaluate_gate(gate, scores(1.0, 0.5), stale, challenger_uri=chal, opponent_uri=champ)[2]
    assert not row.passed and "the study compared models:/m/2 with models:/m/1" in row.note
    assert not evaluate_gate(gate, scores(1.0, 0.5), None, challenger_uri=chal, opponent_uri=champ)[2].passed


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_psnr_drop_db": -0.1}, "max_psnr_drop_db"),
        ({"perceptual": "fid"}, "perceptual"),
        ({"min_study_preference": 1.5}, "min_study_preference"),
        ({"min_lpips_gain": float("inf")}, "min_lpips_gain"),
        ({"min_gain_over_bicubic_db": -1.0}, "min_gain_over_bicubic_db"),
    ],
)
def test_gate_validation_names_the_bad_value(kwargs: dict, match: str) -> None:
    with pytest.raises(RegistryError, match=match):
        Gate(**kwargs)


def test_metric_value_reads_numbers_and_export_entries() -> None:
    assert metric_value({"a": 1}, "a") == 1.0 and metric_value({"a": {"mean": 2.5}}, "a") == 2.5
    assert metric_value({"a": True}, "a") is None and metric_value({}, "a") is None


# ------------------------------------------------------------------------------- registry flow


@pytest.fixture(scope="module")
def registry(sr_heads: dict[str, Path], local_store: str) -> dict[str, str]:
    """Model ``prom``: v1 (nearest), v2 (dimmed), v3 (random); challenger = v3 after registration."""
    versions = {}
    for name in ("nearest", "dimmed", "random"):
        versions[name] = log_and_register(sr_heads[name], "prom", local_store, tags=TAGS).version
    return versions


def test_promotion_flow_floor_reject_promote_rollback(registry: dict[str, str], local_store: str) -> None:
    client = MlflowClient(local_store, registry_uri=local_store)
    name = "prom"
    gate = Gate(perceptual="none")
    # v1 as challenger, no champion yet: still gated; worse than bicubic -> refused.
    client.set_registered_model_alias(name, "challenger", registry["nearest"])
    with pytest.raises(RegistryError, match="no 'champion'"):
        rollback(name, local_store)
    dry = promote(name, local_store, scores(-1.0), gate, dry_run=True)
    assert dry.action == "reject" and not dry.applied and "champion" not in aliases(client, name)
    refused = promote(name, local_store, scores(-1.0), gate)
    assert (
        refused.action == "reject" and "champion" not in aliases(client, name) and "still no champion" in refused.reason
    )
    assert client.get_model_version(name, "1").tags["gate_failed"] == "bicubic floor (psnr_y)"
    first = promote(name, local_store, scores(0.6), gate)
    assert first.action == "promote" and first.applied and aliases(client, name)["champion"] == "1"
    assert "becomes the first champion" in first.reason and first.champion_before is None
    again = promote(name, local_store, scores(0.0, 0.0))
    assert again.action == "already_champion" and not again.applied

    # v2 as challenger, clearly worse than the champion: rejected; a dry run changes nothing.
    client.set_registered_model_alias(name, "challenger", registry["dimmed"])
    dry = promote(name, local_store, scores(0.4, 0.9), gate, dry_run=True)
    assert dry.action == "reject" and not dry.applied
    assert "gate_decision" not in client.get_model_version(name, "2").tags
    rejected = promote(name, local_store, scores(0.4, 0.9), gate)
    assert rejected.action == "reject" and aliases(client, name)["champion"] == "1"
    table = rejected.table()
    assert (
        "psnr_y vs champion" in table and "FAIL" in table and "champion stays v1" in table and "(champion v1)" in table
    )
    assert client.get_model_version(name, "2").tags["gate_failed"] == "psnr_y vs champion"

    # Better, but LPIPS unavailable: the default gate fails closed.
    closed = promote(name, local_store, scores(1.0, 0.5))
    assert closed.action == "reject" and [c.name for c in closed.criteria if not c.passed] == ["lpips vs champion v1"]

    # Passing gate: promoted, the old champion tagged and recorded for rollback.
    promoted = promote(name, local_store, scores(1.0, 0.5, lpips=(0.2, 0.3)))
    assert promoted.action == "promote" and promoted.passed and aliases(client, name)["champion"] == "2"
    assert client.get_model_version(name, "1").tags["previous_champion"] == "true"
    model_tags = client.get_registered_model(name).tags
    assert model_tags["previous_champion_version"] == "1" and model_tags["champion_history"] == '["1"]'
    assert promote(name, local_store, scores(0.0, 0.0)).action == "already_champion"

    # Rollback: champion back to v1, v2 marked, challenger alias (still v2) removed.
    dry = rollback(name, local_store, dry_run=True)
    assert dry.champion_after == "1" and aliases(client, name)["champion"] == "2"
    back = rollback(name, local_store)
    assert (back.action, back.champion_before, back.champion_after) == ("rollback", "2", "1")
    assert aliases(client, name) == {"champion": "1"}
    assert client.get_model_version(name, "2").tags["rolled_back"] == "true"
    assert "previous_champion" not in client.get_model_version(name, "1").tags
    assert "previous_champion_version" not in client.get_registered_model(name).tags
    with pytest.raises(RegistryError, match="no previous champion"):
        rollback(name, local_store)
    with pytest.raises(RegistryError, match="no 'challenger' alias"):
        promote(name, local_store, scores(3.0, 1.0))
    net = load_sr_head(f"models:/{name}@champion", local_store)
    assert net.num_parameters() > 0


def test_promote_errors_name_what_is_missing(registry: dict[str, str], local_store: str) -> None:
    client = MlflowClient(local_store, registry_uri=local_store)
    with pytest.raises(RegistryError, match="'nope' not found"):
        promote("nope", local_store)
    name = "prom-errors"
    client.create_registered_model(name)
    for version in ("1", "3"):
        mv = client.get_model_version("prom", version)
        new = client.create_model_version(name, mv.source, mv.run_id)
        client.set_registered_model_alias(name, "challenger", new.version)
        if version == "1":
            assert promote(name, local_store, scores(0.5), Gate(perceptual="none")).action == "promote"
    with pytest.raises(RegistryError, match="needs `evaluation`"):
        promote(name, local_store)
    with pytest.raises(RegistryError, match=r"entries for \['champion'\]"):
        promote(name, local_store, scores(1.0))
    calls: list[dict] = []

    def evaluate(specs: dict) -> dict:
        calls.append(specs)
        return scores(0.3, 0.6)

    decision = promote(name, local_store, evaluate, Gate(perceptual="none"))
    assert calls == [{"challenger": f"models:/{name}/2", "bicubic": "bicubic", "champion": f"models:/{name}/1"}]
    assert decision.action == "reject"


def test_copy_to_another_model(registry: dict[str, str], sr_heads: dict[str, Path], local_store: str) -> None:
    client = MlflowClient(local_store, registry_uri=local_store)
    client.set_model_version_tag("prom", registry["dimmed"], "gate_decision", "reject")  # source-side state
    copied = copy_to("prom", registry["dimmed"], "prom-prod", local_store)
    assert copied.name == "prom-prod" and copied.aliases == ("challenger",)
    tags = client.get_model_version("prom-prod", copied.version).tags
    assert tags["copied_from"] == f"models:/prom/{registry['dimmed']}" and tags["git_commit"] == TAGS["git_commit"]
    assert not {"rolled_back", "gate_decision", "gate_failed", "previous_champion", "promoted_at"} & set(tags)
    net = load_sr_head("models:/prom-prod@challenger", local_store)
    assert torch.equal(net.sr_head.weight, load_generator(sr_heads["dimmed"]).sr_head.weight)
    client.set_registered_model_alias("prom", "picked", registry["nearest"])
    by_alias = copy_to("prom", "picked", "prom-prod", local_store, alias=None)
    assert by_alias.aliases == () and aliases(client, "prom-prod") == {"challenger": copied.version}
    assert (
        client.get_model_version("prom-prod", by_alias.version).tags["copied_from"]
        == f"models:/prom/{registry['nearest']}"
    )
    with pytest.raises(RegistryError, match="no alias 'ghost'"):
        copy_to("prom", "ghost", "prom-prod", local_store)
    with pytest.raises(RegistryError, match="champion"):
        copy_to("prom", "1", "prom-prod", local_store, alias="champion")
