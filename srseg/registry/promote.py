"""Promote ``@challenger`` to ``@champion`` through a quality gate; roll back; copy between models.

The registry state lives in aliases (never the deprecated stages) and tags:

- aliases ``champion`` (what is served) and ``challenger`` (the latest registered candidate);
- version tag ``previous_champion=true`` on every version a promotion displaced, plus
  ``gate_decision`` / ``gate_failed`` / ``promoted_at`` written by :func:`promote`;
- model tags ``champion_history`` (JSON list of displaced champions, oldest first) and
  ``previous_champion_version`` (its last entry), which :func:`rollback` pops.

The gate compares both models on the same evaluation set (see :class:`Gate`). A missing metric
fails its criterion ("fail closed"): a model is never promoted on numbers nobody computed.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Mapping, Union

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from srseg.registry.log_model import (
    CHALLENGER,
    CHAMPION,
    UNAVAILABLE,
    ModelVersionInfo,
    RegistryError,
    check_name,
    make_client,
    version_info,
)

logger = logging.getLogger(__name__)

Perceptual = Literal["lpips", "study", "none"]
Action = Literal["bootstrap", "promote", "reject", "already_champion", "rollback"]
MetricsFn = Callable[[str], Mapping[str, Any]]
Evaluation = Union[MetricsFn, Mapping[str, Mapping[str, Any]]]

PSNR_KEY = "psnr_y"
LPIPS_KEY = "lpips"
STUDY_KEY = "study_preference"
HISTORY_TAG = "champion_history"
PREVIOUS_TAG = "previous_champion_version"
PREVIOUS_VERSION_TAG = "previous_champion"
MAX_HISTORY = 20
_STATE_TAGS = ("previous_champion", "gate_decision", "gate_failed", "promoted_at", "rolled_back")


@dataclass(frozen=True)
class Gate:
    """When a challenger may replace the champion (all criteria must pass).

    - ``psnr_y``: challenger >= champion - ``max_psnr_drop_db`` (perceptual SR may trade a little
      PSNR for texture, but not more than this).
    - ``perceptual="lpips"``: LPIPS (lower is better) must improve by at least ``min_lpips_gain``
      (champion - challenger >= gain). If LPIPS is unavailable for either model (no backbone
      weights, metric not computed) the criterion **fails closed**; choose ``"none"`` explicitly
      to gate on PSNR alone.
    - ``perceptual="study"``: ``study_preference`` in the challenger's metrics, the fraction of
      pairwise user-study votes preferring the challenger over the champion, must be >=
      ``min_study_preference``; missing fails closed.
    - ``perceptual="none"``: no perceptual criterion (recorded as such in the decision table).
    """

    max_psnr_drop_db: float = 0.05
    perceptual: Perceptual = "lpips"
    min_lpips_gain: float = 0.0
    min_study_preference: float = 0.5

    def __post_init__(self) -> None:
        if not (math.isfinite(self.max_psnr_drop_db) and self.max_psnr_drop_db >= 0):
            raise RegistryError(f"Gate.max_psnr_drop_db must be a finite number >= 0, got {self.max_psnr_drop_db!r}")
        if self.perceptual not in ("lpips", "study", "none"):
            raise RegistryError(f"Gate.perceptual must be 'lpips', 'study' or 'none', got {self.perceptual!r}")
        if not math.isfinite(self.min_lpips_gain):
            raise RegistryError(f"Gate.min_lpips_gain must be finite, got {self.min_lpips_gain!r}")
        if not 0.0 <= self.min_study_preference <= 1.0:
            raise RegistryError(f"Gate.min_study_preference must lie in [0, 1], got {self.min_study_preference!r}")


@dataclass(frozen=True)
class Criterion:
    """One row of the decision table."""

    name: str
    challenger: float | None
    champion: float | None
    threshold: str
    passed: bool
    note: str = ""


@dataclass
class Decision:
    """What :func:`promote` / :func:`rollback` decided and whether the registry was changed."""

    action: Action
    model_name: str
    challenger_version: str | None
    champion_before: str | None
    champion_after: str | None
    applied: bool
    dry_run: bool
    reason: str
    criteria: list[Criterion] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.criteria)

    def table(self) -> str:
        """Plain-text decision table (criterion, challenger, champion, threshold, pass/fail)."""
        def num(value: float | None) -> str:
            return "n/a" if value is None else f"{value:.4f}"

        rows = [("criterion", "challenger", "champion", "threshold", "result")]
        rows += [(c.name, num(c.challenger), num(c.champion), c.threshold, "pass" if c.passed else "FAIL") for c in self.criteria]
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        lines = [" | ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
        lines.insert(1, "-+-".join("-" * w for w in widths))
        notes = [f"  {c.name}: {c.note}" for c in self.criteria if c.note]
        head = (
            f"{self.model_name}: {self.action}{' (dry run, nothing changed)' if self.dry_run else ''} - {self.reason}\n"
            f"challenger v{self.challenger_version or '-'}, champion v{self.champion_before or '-'} -> v{self.champion_after or '-'}"
        )
        return "\n".join([head, *(lines if self.criteria else []), *notes])

    def __str__(self) -> str:
        return self.table()

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "passed": self.passed}


# ------------------------------------------------------------------------------------- the gate


def metric_value(metrics: Mapping[str, Any], key: str) -> float | None:
    """A metric as a float; None when absent, None, NaN, ``"unavailable"`` or not a number.

    Entries may be numbers or ``{"value": ...}`` / ``{"mean": ...}`` mappings (export format).
    """
    entry = metrics.get(key)
    if isinstance(entry, Mapping):
        entry = entry.get("value", entry.get("mean"))
    if entry is None or entry == UNAVAILABLE or isinstance(entry, bool):
        return None
    try:
        value = float(entry)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def evaluate_gate(gate: Gate, challenger: Mapping[str, Any], champion: Mapping[str, Any]) -> list[Criterion]:
    """The gate's criteria for two metric dicts (pure: no registry access)."""
    rows: list[Criterion] = []
    c, k = metric_value(challenger, PSNR_KEY), metric_value(champion, PSNR_KEY)
    drop = gate.max_psnr_drop_db
    if c is None or k is None:
        rows.append(Criterion(PSNR_KEY, c, k, f">= champion - {drop:g} dB", False, f"{PSNR_KEY} missing: fails closed"))
    else:
        rows.append(Criterion(PSNR_KEY, c, k, f">= {k - drop:.4f} (champion - {drop:g} dB)", c >= k - drop))

    if gate.perceptual == "lpips":
        c, k = metric_value(challenger, LPIPS_KEY), metric_value(champion, LPIPS_KEY)
        gain = gate.min_lpips_gain
        if c is None or k is None:
            rows.append(Criterion(
                LPIPS_KEY, c, k, f"<= champion - {gain:g}", False,
                "LPIPS unavailable: perceptual='lpips' fails closed (use perceptual='none' to gate on PSNR only)",
            ))
        else:
            rows.append(Criterion(LPIPS_KEY, c, k, f"<= {k - gain:.4f} (champion - {gain:g}, lower is better)", k - c >= gain))
    elif gate.perceptual == "study":
        pref = metric_value(challenger, STUDY_KEY)
        need = gate.min_study_preference
        if pref is None:
            rows.append(Criterion(STUDY_KEY, None, None, f">= {need:g}", False, f"{STUDY_KEY} missing: fails closed"))
        else:
            rows.append(Criterion(STUDY_KEY, pref, None, f">= {need:g} of votes for the challenger", pref >= need))
    else:
        rows.append(Criterion("perceptual", None, None, "not gated (perceptual='none')", True))
    return rows


# -------------------------------------------------------------------------------- registry state


def _alias_version(client: MlflowClient, name: str, alias: str) -> str | None:
    """The version ``alias`` points to, or None (read from the model's alias map: no exception games)."""
    aliases = client.get_registered_model(name).aliases or {}
    version = aliases.get(alias)
    return None if version is None else str(version)


def _registered_model(client: MlflowClient, name: str) -> Any:
    try:
        return client.get_registered_model(name)
    except MlflowException as exc:
        raise RegistryError(f"registered model {name!r} not found ({exc.message})") from exc


def _history(model: Any) -> list[str]:
    raw = (model.tags or {}).get(HISTORY_TAG)
    if not raw:
        return []
    try:
        history = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise RegistryError(f"model {model.name!r}: tag {HISTORY_TAG}={raw!r} is not a JSON list") from exc
    if not isinstance(history, list):
        raise RegistryError(f"model {model.name!r}: tag {HISTORY_TAG}={raw!r} is not a JSON list")
    return [str(v) for v in history]


def _write_history(client: MlflowClient, name: str, history: list[str]) -> None:
    history = history[-MAX_HISTORY:]
    client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history))
    if history:
        client.set_registered_model_tag(name, PREVIOUS_TAG, history[-1])
    else:
        _delete_model_tag(client, name, PREVIOUS_TAG)


def _delete_model_tag(client: MlflowClient, name: str, key: str) -> None:
    try:
        client.delete_registered_model_tag(name, key)
    except MlflowException:
        pass  # absent already


def _delete_version_tag(client: MlflowClient, name: str, version: str, key: str) -> None:
    try:
        client.delete_model_version_tag(name, version, key)
    except MlflowException:
        pass  # absent already


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _metrics_for(evaluation: Evaluation, alias: str, uri: str) -> Mapping[str, Any]:
    if callable(evaluation):
        result = evaluation(uri)
    else:
        if alias not in evaluation:
            raise RegistryError(f"precomputed metrics need a {alias!r} entry, got keys {sorted(evaluation)}")
        result = evaluation[alias]
    if not isinstance(result, Mapping):
        raise RegistryError(f"metrics for {alias} ({uri}) must be a mapping, got {type(result).__name__}")
    return result


# ---------------------------------------------------------------------------------- operations


def promote(
    model_name: str,
    tracking_uri: str | None = None,
    evaluation: Evaluation | None = None,
    gate: Gate = Gate(),
    dry_run: bool = False,
) -> Decision:
    """Move ``champion`` to the ``challenger`` version if it passes ``gate`` against the champion.

    ``evaluation`` is either a callable ``model_uri -> metrics`` (called with the stable
    ``models:/NAME/VERSION`` URIs both aliases resolve to, on the same evaluation set) or
    precomputed ``{"challenger": {...}, "champion": {...}}``. No champion yet: the challenger
    becomes champion without evaluation ("bootstrap"). Challenger already champion: no-op
    ("already_champion"). ``dry_run`` decides but changes nothing. The decision table is logged
    and returned (``Decision.table()``).
    """
    check_name("model_name", model_name)
    client = make_client(tracking_uri)
    _registered_model(client, model_name)
    challenger = _alias_version(client, model_name, CHALLENGER)
    if challenger is None:
        raise RegistryError(f"model {model_name!r} has no {CHALLENGER!r} alias: register a version first (log_and_register)")
    champion = _alias_version(client, model_name, CHAMPION)

    if champion == challenger:
        decision = Decision("already_champion", model_name, challenger, champion, champion, False, dry_run,
                            f"v{challenger} already is {CHAMPION}; nothing to do")
    elif champion is None:
        decision = Decision("bootstrap", model_name, challenger, None, challenger, not dry_run, dry_run,
                            f"no {CHAMPION} yet: v{challenger} becomes the first {CHAMPION}")
        if not dry_run:
            client.set_model_version_tag(model_name, challenger, "gate_decision", "bootstrap")
            client.set_model_version_tag(model_name, challenger, "promoted_at", _now())
            client.set_registered_model_alias(model_name, CHAMPION, challenger)
    else:
        if evaluation is None:
            raise RegistryError("promote needs `evaluation` (a model_uri -> metrics callable or precomputed metrics) to compare with the champion")
        chal_metrics = _metrics_for(evaluation, CHALLENGER, f"models:/{model_name}/{challenger}")
        champ_metrics = _metrics_for(evaluation, CHAMPION, f"models:/{model_name}/{champion}")
        criteria = evaluate_gate(gate, chal_metrics, champ_metrics)
        passed = all(c.passed for c in criteria)
        failed = [c.name for c in criteria if not c.passed]
        if passed:
            decision = Decision("promote", model_name, challenger, champion, challenger, not dry_run, dry_run,
                                f"all criteria pass: v{challenger} replaces v{champion}", criteria)
        else:
            decision = Decision("reject", model_name, challenger, champion, champion, not dry_run, dry_run,
                                f"failed: {', '.join(failed)}; {CHAMPION} stays v{champion}", criteria)
        if not dry_run:
            _check_unchanged(client, model_name, challenger, champion)
            if passed:
                _apply_promotion(client, model_name, challenger, champion)
            else:
                client.set_model_version_tag(model_name, challenger, "gate_decision", "reject")
                client.set_model_version_tag(model_name, challenger, "gate_failed", ",".join(failed))
    logger.info("promotion decision\n%s", decision.table())
    return decision


def _check_unchanged(client: MlflowClient, name: str, challenger: str, champion: str | None) -> None:
    """Refuse to act on a decision about aliases that moved while the models were evaluated."""
    now = (_alias_version(client, name, CHALLENGER), _alias_version(client, name, CHAMPION))
    if now != (challenger, champion):
        raise RegistryError(
            f"model {name!r}: aliases moved during evaluation (challenger/champion were v{challenger}/v{champion}, "
            f"now v{now[0]}/v{now[1]}); run promote again"
        )


def _apply_promotion(client: MlflowClient, name: str, challenger: str, champion: str) -> None:
    """Record the displaced champion first and move the alias last, so what is served changes
    only once rollback has what it needs."""
    history = [v for v in _history(client.get_registered_model(name)) if v != challenger]
    _write_history(client, name, [*history, champion])
    client.set_model_version_tag(name, champion, PREVIOUS_VERSION_TAG, "true")
    _delete_version_tag(client, name, challenger, PREVIOUS_VERSION_TAG)
    _delete_version_tag(client, name, challenger, "rolled_back")
    client.set_model_version_tag(name, challenger, "gate_decision", "promote")
    client.set_model_version_tag(name, challenger, "promoted_at", _now())
    client.set_registered_model_alias(name, CHAMPION, challenger)


def rollback(model_name: str, tracking_uri: str | None = None, dry_run: bool = False) -> Decision:
    """Re-point ``champion`` to the previous champion (the last one a promotion displaced).

    The version rolled back from is tagged ``rolled_back=true``; if it is still ``challenger``
    that alias is removed, so the next :func:`promote` cannot put it straight back. Raises
    :class:`RegistryError` when there is no champion or no recorded previous champion.
    """
    check_name("model_name", model_name)
    client = make_client(tracking_uri)
    model = _registered_model(client, model_name)
    current = _alias_version(client, model_name, CHAMPION)
    if current is None:
        raise RegistryError(f"model {model_name!r} has no {CHAMPION!r}: nothing to roll back")
    history = _history(model)
    while history and history[-1] == current:
        history.pop()
    if not history:
        raise RegistryError(f"model {model_name!r}: no previous champion recorded (tag {HISTORY_TAG!r}); cannot roll back v{current}")
    target = history.pop()
    try:
        client.get_model_version(model_name, target)
    except MlflowException as exc:
        raise RegistryError(f"model {model_name!r}: previous champion v{target} no longer exists ({exc.message})") from exc
    challenger = _alias_version(client, model_name, CHALLENGER)
    reason = f"{CHAMPION} v{current} -> v{target}"
    if challenger == current:
        reason += f"; {CHALLENGER} alias removed from v{current}"
    decision = Decision("rollback", model_name, challenger, current, target, not dry_run, dry_run, reason)
    if not dry_run:
        client.set_registered_model_alias(model_name, CHAMPION, target)
        _write_history(client, model_name, history)
        client.set_model_version_tag(model_name, current, "rolled_back", "true")
        _delete_version_tag(client, model_name, target, PREVIOUS_VERSION_TAG)
        if challenger == current:
            client.delete_registered_model_alias(model_name, CHALLENGER)
    logger.info("rollback decision\n%s", decision.table())
    return decision


def copy_to(
    model_name: str,
    source: str | int,
    target_model_name: str,
    tracking_uri: str | None = None,
    alias: str | None = CHALLENGER,
) -> ModelVersionInfo:
    """Copy version or alias ``source`` of ``model_name`` into ``target_model_name`` (e.g. prod).

    Uses ``MlflowClient.copy_model_version`` (same registry; the copy's source is the original
    version, so no bytes move). Promotion-state tags of the source environment are dropped and
    ``copied_from`` records the origin; ``alias`` (default ``challenger``) is set on the copy so
    the target environment's own gate decides whether it becomes champion.
    """
    check_name("model_name", model_name)
    check_name("target_model_name", target_model_name)
    if alias is not None:
        check_name("alias", alias)
        if alias == CHAMPION:
            raise RegistryError("copy_to cannot set 'champion': promote() in the target model decides that")
    client = make_client(tracking_uri)
    _registered_model(client, model_name)
    text = str(source)
    version = text if text.isdigit() else _alias_version(client, model_name, check_name("source alias", text))
    if version is None:
        raise RegistryError(f"model {model_name!r} has no alias {text!r}")
    src_uri = f"models:/{model_name}/{version}"
    try:
        copy = client.copy_model_version(src_uri, target_model_name)
    except MlflowException as exc:
        raise RegistryError(f"cannot copy {src_uri} to {target_model_name!r} ({exc.message})") from exc
    new = str(copy.version)
    for key in _STATE_TAGS:
        if key in (copy.tags or {}):
            _delete_version_tag(client, target_model_name, new, key)
    client.set_model_version_tag(target_model_name, new, "copied_from", src_uri)
    if alias is not None:
        client.set_registered_model_alias(target_model_name, alias, new)
    logger.info("copied %s to %s version %s%s", src_uri, target_model_name, new, f" (@{alias})" if alias else "")
    return version_info(client, target_model_name, new)
