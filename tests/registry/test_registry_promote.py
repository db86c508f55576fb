"""Gate, promotion, rollback and copy against a local SQLite registry (precomputed metrics)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from srseg.models.io import load_generator
from srseg.registry import Gate, RegistryError, copy_to, evaluate_gate, load_sr_head, log_and_register, promote, rollback
from srseg.registry.promote import metric_value

TAGS = {"git_commit": "0123abcd", "data_manifest_sha256": "e" * 64}


def aliases(client: MlflowClient, name: str) -> dict[str, str]:
    return {k: str(v) for k, v in client.get_registered_model(name).aliases.items()}


def metrics(challenger: float, champion: float, extra_challenger: dict | None = None, extra_champion: dict | None = None) -> dict:
    """Precomputed ``metrics_by_alias``: psnr_y for both, plus any extra metrics."""
    return {"challenger": {"psnr_y": challenger, **(extra_challenger or {})}, "champion": {"psnr_y": champion, **(extra_champion or {})}}


# ------------------------------------------------------------------------------------- the gate


def test_gate_psnr_tolerance_and_failing_row() -> None:
    gate = Gate(perceptual="none")
    [psnr, perceptual] = evaluate_gate(gate, {"psnr_y": 25.96}, {"psnr_y": 26.0})
    assert psnr.passed and perceptual.passed and perceptual.threshold.startswith("not gated")
    [psnr, _] = evaluate_gate(gate, {"psnr_y": 25.9}, {"psnr_y": 26.0})
    assert not psnr.passed and (psnr.challenger, psnr.champion) == (25.9, 26.0)
    [psnr, _] = evaluate_gate(gate, {}, {"psnr_y": 26.0})
    assert not psnr.passed and "fails closed" in psnr.note


def test_gate_lpips_fails_closed_when_unavailable() -> None:
    gate = Gate(perceptual="lpips", min_lpips_gain=0.01)
    for missing in (None, float("nan"), "unavailable"):
        rows = evaluate_gate(gate, {"psnr_y": 27.0, "lpips": missing}, {"psnr_y": 26.0, "lpips": 0.30})
        assert [r.passed for r in rows] == [True, False] and "fails closed" in rows[1].note
    rows = evaluate_gate(gate, {"psnr_y": 27.0, "lpips": 0.28}, {"psnr_y": 26.0, "lpips": 0.30})
    assert all(r.passed for r in rows)
    rows = evaluate_gate(gate, {"psnr_y": 27.0, "lpips": {"value": 0.295}}, {"psnr_y": 26.0, "lpips": 0.30})
    assert not rows[1].passed  # gain 0.005 < 0.01


def test_gate_study_preference() -> None:
    gate = Gate(perceptual="study", min_study_preference=0.6)
    assert evaluate_gate(gate, {"psnr_y": 26.0, "study_preference": 0.65}, {"psnr_y": 26.0})[1].passed
    assert not evaluate_gate(gate, {"psnr_y": 26.0, "study_preference": 0.55}, {"psnr_y": 26.0})[1].passed
    assert not evaluate_gate(gate, {"psnr_y": 26.0}, {"psnr_y": 26.0})[1].passed


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"max_psnr_drop_db": -0.1}, "max_psnr_drop_db"), ({"perceptual": "fid"}, "perceptual"),
     ({"min_study_preference": 1.5}, "min_study_preference"), ({"min_lpips_gain": float("inf")}, "min_lpips_gain")],
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


def test_promotion_flow_bootstrap_reject_promote_rollback(registry: dict[str, str], local_store: str) -> None:
    client = MlflowClient(local_store, registry_uri=local_store)
    name = "prom"
    # v1 as challenger, no champion yet: bootstrap.
    client.set_registered_model_alias(name, "challenger", registry["nearest"])
    with pytest.raises(RegistryError, match="no 'champion'"):
        rollback(name, local_store)
    dry = promote(name, local_store, dry_run=True)
    assert dry.action == "bootstrap" and not dry.applied and "champion" not in aliases(client, name)
    boot = promote(name, local_store)
    assert boot.action == "bootstrap" and boot.applied and aliases(client, name)["champion"] == "1"
    again = promote(name, local_store, metrics(1.0, 2.0))
    assert again.action == "already_champion" and not again.applied

    # v2 (worse) as challenger: rejected; the dry run changes nothing, the real one only tags.
    client.set_registered_model_alias(name, "challenger", registry["dimmed"])
    scores = metrics(18.9, 26.3)
    dry = promote(name, local_store, scores, Gate(perceptual="none"), dry_run=True)
    assert dry.action == "reject" and not dry.applied
    assert "gate_decision" not in client.get_model_version(name, "2").tags
    rejected = promote(name, local_store, scores, Gate(perceptual="none"))
    assert rejected.action == "reject" and aliases(client, name)["champion"] == "1"
    table = rejected.table()
    assert "psnr_y" in table and "FAIL" in table and "champion stays v1" in table
    assert client.get_model_version(name, "2").tags["gate_failed"] == "psnr_y"

    # Better by PSNR but LPIPS unavailable: the default gate fails closed.
    closed = promote(name, local_store, metrics(27.0, 26.3, {"lpips": None}, {"lpips": 0.3}))
    assert closed.action == "reject" and [c.name for c in closed.criteria if not c.passed] == ["lpips"]

    # Passing gate: promoted, the old champion tagged and recorded for rollback.
    promoted = promote(name, local_store, metrics(26.3, 26.3, {"lpips": 0.2}, {"lpips": 0.3}))
    assert promoted.action == "promote" and promoted.passed and aliases(client, name)["champion"] == "2"
    assert client.get_model_version(name, "1").tags["previous_champion"] == "true"
    model_tags = client.get_registered_model(name).tags
    assert model_tags["previous_champion_version"] == "1" and model_tags["champion_history"] == '["1"]'
    assert promote(name, local_store, metrics(0.0, 0.0)).action == "already_champion"

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
        promote(name, local_store, metrics(30.0, 1.0))
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
            promote(name, local_store)
    with pytest.raises(RegistryError, match="needs `evaluation`"):
        promote(name, local_store)
    with pytest.raises(RegistryError, match="'champion' entry"):
        promote(name, local_store, {"challenger": {"psnr_y": 1.0}})
    calls: list[str] = []

    def evaluate(uri: str) -> dict:
        calls.append(uri)
        return {"psnr_y": 10.0 if uri.endswith("/2") else 20.0}

    decision = promote(name, local_store, evaluate, Gate(perceptual="none"))
    assert calls == [f"models:/{name}/2", f"models:/{name}/1"] and decision.action == "reject"


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
    assert client.get_model_version("prom-prod", by_alias.version).tags["copied_from"] == f"models:/prom/{registry['nearest']}"
    with pytest.raises(RegistryError, match="no alias 'ghost'"):
        copy_to("prom", "ghost", "prom-prod", local_store)
    with pytest.raises(RegistryError, match="champion"):
        copy_to("prom", "1", "prom-prod", local_store, alias="champion")
