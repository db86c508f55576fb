"""Promote ``@challenger`` to ``@champion`` through a quality gate; roll back; copy between models.

The registry state lives in aliases (never the deprecated stages) and tags:

- aliases ``champion`` (what is served) and ``challenger`` (the latest registered candidate);
- version tag ``previous_champion=true`` on every version a promotion displaced, plus
  ``gate_decision`` / ``gate_failed`` / ``promoted_at`` written by :func:`promote`;
- model tags ``champion_history`` (JSON list of displaced champions, oldest first) and
  ``previous_champion_version`` (its last entry), which :func:`rollback` pops.

The gate (see :class:`Gate`) judges *paired per-image differences* on one evaluation set (the
report images) with their confidence intervals, never point means, and it judges every
promotion, the first one included: a model that does not beat bicubic is never promoted. A
missing metric fails its criterion ("fail closed"): a model is never promoted on numbers nobody
computed.

Promotion is two halves: :func:`judge` reads the aliases and scores the models (read-only on the
registry; with :class:`srseg.registry.evalcache.CachedEvaluation` each model is scored once per
evaluation set), :func:`apply` carries a decision out. :func:`promote` does both. Every change
(apply, rollback) runs under the model's lock (:mod:`srseg.registry.lock`) and is a
compare-and-set: the aliases must still be what the decision saw, else nothing changes and a
:class:`RegistryError` says so; the champion alias is read back after it is set.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode

from srseg.registry.lock import Lease, LockSettings, locked
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
Action = Literal["promote", "reject", "already_champion", "rollback"]
Scores = Mapping[str, Mapping[str, Sequence[float | None]]]  # None: a value that was not finite
"""Per-image metric values by role: ``{"challenger" | "champion" | "bicubic": {"psnr_y": [...], ...}}``,
the i-th value of every list belonging to the same image."""


@dataclass(frozen=True)
class Evaluated:
    """Scores with their provenance: ``sources[role]`` = ``{"model", "spec", "cached", "run_id"}``
    (the MLflow run holding that role's stored scores), ``key`` = the evaluation set's key."""

    scores: Scores
    sources: Mapping[str, Mapping[str, Any]]
    key: str = ""


Evaluation = Callable[[Mapping[str, str]], Scores | Evaluated] | Scores
"""A callable ``{role: model spec} -> Scores | Evaluated`` (specs are ``models:/NAME/VERSION`` and
``bicubic``), or precomputed :data:`Scores`."""

PSNR_KEY = "psnr_y"
LPIPS_KEY = "lpips"
STUDY_KEY = "study_preference"
BICUBIC = "bicubic"
HISTORY_TAG = "champion_history"
PREVIOUS_TAG = "previous_champion_version"
PREVIOUS_VERSION_TAG = "previous_champion"
MAX_HISTORY = 20
_STATE_TAGS = ("previous_champion", "gate_decision", "gate_failed", "promoted_at", "rolled_back")


@dataclass(frozen=True)
class Gate:
    """When a challenger may become champion (all criteria must pass; ``confidence`` = CI level).

    Every criterion is one-sided on the lower bound of a CI of paired per-image differences:

    - ``bicubic floor`` (every promotion, the first included): challenger psnr_y minus bicubic's,
      CI lower bound >= ``min_gain_over_bicubic_db``. A +0.001 dB "win" whose CI merely clears 0
      does not pass the default 0.1 dB.
    - ``psnr_y vs champion`` (when there is one): challenger minus champion, CI lower bound >=
      ``-max_psnr_drop_db`` (a perceptual model may trade a little PSNR, but not more than this,
      with confidence).
    - ``perceptual="lpips"``: LPIPS improvement (opponent minus challenger; lower LPIPS is better)
      against the champion, or bicubic on the first promotion, CI lower bound >= ``min_lpips_gain``.
      LPIPS unavailable (no backbone weights) fails closed; choose ``"none"`` explicitly to gate
      without a perceptual criterion.
    - ``perceptual="study"``: the share of user-study votes preferring the challenger over the
      champion (bicubic on the first promotion), Wilson CI lower bound >= ``min_study_preference``
      (default 0.5: raters prefer it beyond chance). The study must have compared exactly these
      two versions (``srseg study gate-build`` / ``srseg study analyze``); otherwise it fails closed.
    - ``perceptual="none"``: no perceptual criterion (recorded as such in the decision table).
    """

    min_gain_over_bicubic_db: float = 0.1
    max_psnr_drop_db: float = 0.05
    perceptual: Perceptual = "lpips"
    min_lpips_gain: float = 0.0
    min_study_preference: float = 0.5
    confidence: float = 0.95

    def __post_init__(self) -> None:
        for name in ("min_gain_over_bicubic_db", "max_psnr_drop_db"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise RegistryError(f"Gate.{name} must be a finite number >= 0, got {value!r}")
        if self.perceptual not in ("lpips", "study", "none"):
            raise RegistryError(f"Gate.perceptual must be 'lpips', 'study' or 'none', got {self.perceptual!r}")
        if not math.isfinite(self.min_lpips_gain):
            raise RegistryError(f"Gate.min_lpips_gain must be finite, got {self.min_lpips_gain!r}")
        if not 0.0 <= self.min_study_preference <= 1.0:
            raise RegistryError(f"Gate.min_study_preference must lie in [0, 1], got {self.min_study_preference!r}")
        if not 0.0 < self.confidence < 1.0:
            raise RegistryError(f"Gate.confidence must lie in (0, 1), got {self.confidence!r}")


@dataclass(frozen=True)
class StudyPreference:
    """What ``srseg study analyze`` measured on a gate study: challenger vs one opponent."""

    challenger: str  # models:/NAME/VERSION
    opponent: str  # models:/NAME/VERSION of the champion, or "bicubic"
    preference: float | None  # share of votes for the challenger
    ci_low: float | None
    ci_high: float | None
    n: int

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StudyPreference:
        try:
            return cls(
                str(data["challenger"]),
                str(data["opponent"]),
                data.get("preference"),
                data.get("ci_low"),
                data.get("ci_high"),
                int(data.get("n", 0)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise RegistryError(f"study preference {dict(data)!r} is malformed ({exc})") from exc


@dataclass(frozen=True)
class Criterion:
    """One row of the decision table: both sides' means, the paired difference and its CI."""

    name: str
    challenger: float | None  # the challenger's mean (or the study preference)
    opponent: float | None  # the opponent's mean
    opponent_name: str  # "bicubic", "champion v2", ...
    difference: float | None  # mean paired improvement of the challenger (None: not computed)
    ci_low: float | None
    ci_high: float | None
    n: int
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
    evaluation_key: str = ""
    evaluations: dict[str, dict[str, Any]] = field(default_factory=dict)  # role -> Evaluated.sources entry

    @property
    def passed(self) -> bool:
        return bool(self.criteria) and all(c.passed for c in self.criteria)

    def table(self) -> str:
        """Plain-text decision table: criterion, challenger, opponent, difference [CI] (n), threshold, result."""

        def num(value: float | None) -> str:
            return "n/a" if value is None else f"{value:.4f}"

        def diff(c: Criterion) -> str:
            if c.difference is None:
                return "n/a"
            interval = "CI n/a" if c.ci_low is None or c.ci_high is None else f"[{c.ci_low:+.4f}, {c.ci_high:+.4f}]"
            return f"{c.difference:+.4f} {interval} (n={c.n})"

        rows = [("criterion", "challenger", "opponent", "difference [95% CI]", "threshold", "result")]
        rows += [
            (
                c.name,
                num(c.challenger),
                f"{num(c.opponent)} ({c.opponent_name})",
                diff(c),
                c.threshold,
                "pass" if c.passed else "FAIL",
            )
            for c in self.criteria
        ]
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = [" | ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
        lines.insert(1, "-+-".join("-" * w for w in widths))
        notes = [f"  {c.name}: {c.note}" for c in self.criteria if c.note]
        head = (
            f"{self.model_name}: {self.action}{' (dry run, nothing changed)' if self.dry_run else ''} - {self.reason}\n"
            f"challenger v{self.challenger_version or '-'}, champion v{self.champion_before or '-'} -> "
            f"v{self.champion_after or '-'}"
        )
        return "\n".join([head, *(lines if self.criteria else []), *notes])

    def __str__(self) -> str:
        return self.table()

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "passed": self.passed}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Decision:
        """The decision :meth:`to_dict` wrote (e.g. the gate step's output, applied by the promote step)."""
        try:
            values = {f.name: data[f.name] for f in dataclasses.fields(cls) if f.name in data}
            values["criteria"] = [Criterion(**c) for c in data.get("criteria") or []]
            decision = cls(**values)
        except (KeyError, TypeError) as exc:
            raise RegistryError(f"not a promotion decision ({exc}): {str(dict(data))[:200]}") from exc
        if "passed" in data and bool(data["passed"]) != decision.passed:
            raise RegistryError("promotion decision: 'passed' does not match its criteria")
        return decision


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


def _values(scores: Scores, role: str, key: str) -> list[float] | None:
    """Per-image values of one metric for one role; None when absent or any value is not a
    number (None, NaN, "unavailable"): the criterion then fails closed. ``inf`` (PSNR of an exact
    reconstruction) is a number."""
    entry = scores.get(role, {}).get(key)
    if entry is None or isinstance(entry, (str, bytes)):
        return None
    values = []
    for value in entry:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            return None
        values.append(float(value))
    return values or None


def _failed(name: str, opponent: str, threshold: str, note: str) -> Criterion:
    """A criterion that fails closed: nothing could be compared, ``note`` says why."""
    return Criterion(name, None, None, opponent, None, None, None, 0, threshold, False, note)


def _paired_criterion(
    name: str,
    scores: Scores,
    key: str,
    opponent_role: str,
    opponent_name: str,
    minimum: float,
    unit: str,
    confidence: float,
    lower_is_better: bool = False,
    missing_note: str = "",
) -> Criterion:
    """Challenger vs ``opponent_role`` on ``key``: pass when the CI lower bound of the paired
    improvement (challenger minus opponent, or the reverse for lower-is-better) is >= ``minimum``."""
    from srseg.evaluate.stats import paired_difference

    threshold = f"CI low >= {minimum:+g}{unit}"
    mine, theirs = _values(scores, "challenger", key), _values(scores, opponent_role, key)
    if mine is None or theirs is None:
        note = missing_note or f"{key} missing for {'challenger' if mine is None else opponent_name}: fails closed"
        return _failed(name, opponent_name, threshold, note)
    if len(mine) != len(theirs):
        return _failed(
            name,
            opponent_name,
            threshold,
            f"{len(mine)} challenger vs {len(theirs)} {opponent_name} images: not paired, fails closed",
        )
    a, b = (theirs, mine) if lower_is_better else (mine, theirs)
    pair = paired_difference(a, b, n_boot=2000, seed=0, confidence=confidence)
    low, high = pair.ci
    finite = math.isfinite(low) and math.isfinite(high)
    passed = finite and low >= minimum
    note = "" if finite else f"no CI from {pair.n} image(s) (needs >= 3): fails closed"
    return Criterion(
        name,
        sum(mine) / len(mine),
        sum(theirs) / len(theirs),
        opponent_name,
        pair.mean,
        low if finite else None,
        high if finite else None,
        pair.n,
        threshold,
        passed,
        note,
    )


def _study_criterion(
    gate: Gate, study: StudyPreference | None, challenger_uri: str, opponent_uri: str, opponent_name: str
) -> Criterion:
    threshold = f"CI low >= {gate.min_study_preference:g} of votes"
    if study is None:
        return _failed(
            STUDY_KEY,
            opponent_name,
            threshold,
            "no gate study analysed (srseg study gate-build, collect votes, srseg study analyze): fails closed",
        )
    if (study.challenger, study.opponent) != (challenger_uri, opponent_uri):
        return Criterion(
            STUDY_KEY,
            study.preference,
            None,
            opponent_name,
            None,
            study.ci_low,
            study.ci_high,
            study.n,
            threshold,
            False,
            f"the study compared {study.challenger} with {study.opponent}, the gate needs {challenger_uri} "
            f"vs {opponent_uri}: fails closed",
        )
    if study.preference is None or study.ci_low is None:
        return Criterion(
            STUDY_KEY,
            None,
            None,
            opponent_name,
            None,
            None,
            None,
            study.n,
            threshold,
            False,
            "no votes on the gate pairs yet: fails closed",
        )
    return Criterion(
        STUDY_KEY,
        study.preference,
        None,
        opponent_name,
        study.preference - 0.5,
        study.ci_low,
        study.ci_high,
        study.n,
        threshold,
        study.ci_low >= gate.min_study_preference,
        "challenger's share of votes; difference = share - 0.5, CI = Wilson 95% of the share",
    )


def evaluate_gate(
    gate: Gate,
    scores: Scores,
    study: StudyPreference | None = None,
    *,
    champion_label: str = "champion",
    challenger_uri: str = "",
    opponent_uri: str = BICUBIC,
) -> list[Criterion]:
    """The gate's criteria (pure: no registry access). ``scores`` holds ``challenger`` and
    ``bicubic`` (and ``champion`` unless this is a first promotion); see :class:`Gate`."""
    has_champion = "champion" in scores
    rows = [
        _paired_criterion(
            "bicubic floor (psnr_y)",
            scores,
            PSNR_KEY,
            "bicubic",
            BICUBIC,
            gate.min_gain_over_bicubic_db,
            " dB",
            gate.confidence,
        )
    ]
    if has_champion:
        rows.append(
            _paired_criterion(
                "psnr_y vs champion",
                scores,
                PSNR_KEY,
                "champion",
                champion_label,
                -gate.max_psnr_drop_db,
                " dB",
                gate.confidence,
            )
        )
    opponent_role, opponent_name = ("champion", champion_label) if has_champion else ("bicubic", BICUBIC)
    if gate.perceptual == "lpips":
        rows.append(
            _paired_criterion(
                f"lpips vs {opponent_name}",
                scores,
                LPIPS_KEY,
                opponent_role,
                opponent_name,
                gate.min_lpips_gain,
                "",
                gate.confidence,
                lower_is_better=True,
                missing_note="LPIPS unavailable: perceptual='lpips' fails closed (use perceptual='none' to gate on "
                "PSNR only)",
            )
        )
    elif gate.perceptual == "study":
        rows.append(_study_criterion(gate, study, challenger_uri, opponent_uri, opponent_name))
    else:
        rows.append(
            Criterion(
                "perceptual", None, None, opponent_name, None, None, None, 0, "not gated (perceptual='none')", True
            )
        )
    return rows


# -------------------------------------------------------------------------------- registry state


def _alias_version(client: MlflowClient, name: str, alias: str) -> str | None:
    """The version ``alias`` points to, or None (read from the model's alias map: no exception games)."""
    aliases = client.get_registered_model(name).aliases or {}
    version = aliases.get(alias)
    return None if version is None else str(version)


def _registered_model(client: MlflowClient, name: str) -> Any:
    """The registered model; "not found" only when the registry says so (other failures, e.g. an
    unreachable server, propagate as they are)."""
    try:
        return client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
            raise RegistryError(f"registered model {name!r} not found ({exc.message})") from exc
        raise


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
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _scores_for(evaluation: Evaluation, specs: Mapping[str, str]) -> Evaluated:
    result = evaluation(specs) if callable(evaluation) else evaluation
    evaluated = (
        result if isinstance(result, Evaluated) else Evaluated(result, {}) if isinstance(result, Mapping) else None
    )
    if evaluated is None or not isinstance(evaluated.scores, Mapping):
        raise RegistryError(f"evaluation of {dict(specs)} must return per-role scores, got {type(result).__name__}")
    missing = sorted(set(specs) - set(evaluated.scores))
    if missing:
        raise RegistryError(f"evaluation scores need entries for {missing} (got {sorted(evaluated.scores)})")
    return evaluated


# ---------------------------------------------------------------------------------- operations


def judge(
    model_name: str,
    tracking_uri: str | None = None,
    evaluation: Evaluation | None = None,
    gate: Gate = Gate(),
    study: StudyPreference | None = None,
) -> Decision:
    """Decide whether ``@challenger`` may replace ``@champion``, changing nothing in the registry.

    ``evaluation`` scores ``{"challenger": "models:/NAME/V", "bicubic": "bicubic"}`` plus
    ``"champion": "models:/NAME/W"`` when there is a champion (stable version URIs, one
    evaluation set, per-image values), or is such scores precomputed. There is no ungated first
    promotion: without a champion the challenger must still clear the bicubic floor (and the
    perceptual criterion against bicubic). Challenger already champion: ``already_champion``.
    ``study`` is the analysed gate study (``perceptual="study"``). The returned decision is not
    applied (``applied=False``); :func:`apply` carries it out.
    """
    check_name("model_name", model_name)
    client = make_client(tracking_uri)
    _registered_model(client, model_name)
    challenger = _alias_version(client, model_name, CHALLENGER)
    if challenger is None:
        raise RegistryError(
            f"model {model_name!r} has no {CHALLENGER!r} alias: register a version first (log_and_register)"
        )
    champion = _alias_version(client, model_name, CHAMPION)

    if champion == challenger:
        return Decision(
            "already_champion",
            model_name,
            challenger,
            champion,
            champion,
            False,
            True,
            f"v{challenger} already is {CHAMPION}; nothing to do",
        )
    if evaluation is None:
        raise RegistryError("promote needs `evaluation` (a {role: model} -> per-image scores callable, or the scores)")
    challenger_uri = f"models:/{model_name}/{challenger}"
    specs = {"challenger": challenger_uri, "bicubic": BICUBIC}
    if champion is not None:
        specs["champion"] = f"models:/{model_name}/{champion}"
    evaluated = _scores_for(evaluation, specs)
    criteria = evaluate_gate(
        gate,
        evaluated.scores,
        study,
        champion_label=f"champion v{champion}",
        challenger_uri=challenger_uri,
        opponent_uri=specs.get("champion", BICUBIC),
    )
    return _verdict(model_name, challenger, champion, criteria, evaluated)


def _verdict(
    model_name: str, challenger: str, champion: str | None, criteria: list[Criterion], evaluated: Evaluated
) -> Decision:
    """``promote`` when every criterion passed, else ``reject``; with the evaluations' provenance."""
    failed = [c.name for c in criteria if not c.passed]
    provenance: dict[str, Any] = {
        "evaluation_key": evaluated.key,
        "evaluations": {r: dict(s) for r, s in evaluated.sources.items()},
    }
    if not failed:
        replaces = f"replaces v{champion}" if champion else f"becomes the first {CHAMPION}"
        reason = f"all criteria pass: v{challenger} {replaces}"
        return Decision(
            "promote", model_name, challenger, champion, challenger, False, True, reason, criteria, **provenance
        )
    stays = f"{CHAMPION} stays v{champion}" if champion else f"still no {CHAMPION}"
    reason = f"failed: {', '.join(failed)}; {stays}"
    return Decision("reject", model_name, challenger, champion, champion, False, True, reason, criteria, **provenance)


def apply(decision: Decision, tracking_uri: str | None = None, lock: LockSettings = LockSettings()) -> Decision:
    """Carry out a decision of :func:`judge` under the model's lock, as a compare-and-set.

    ``promote``: the displaced champion goes into the history, the challenger is tagged
    (``gate_decision``, ``promoted_at``, ``gate.evaluation_run_id``) and ``champion`` moves last,
    then is read back. ``reject``: the challenger is tagged ``gate_decision=reject`` and
    ``gate_failed``. Either way, only if both aliases still are what the decision saw; otherwise
    :class:`RegistryError` and nothing changed (a concurrent promotion won, or a new version was
    registered meanwhile). ``already_champion`` changes nothing. Returns the applied decision.
    """
    if decision.action == "already_champion":
        return dataclasses.replace(decision, applied=False, dry_run=False)
    if decision.action not in ("promote", "reject"):
        raise RegistryError(f"cannot apply a {decision.action!r} decision (only promote or reject)")
    if decision.action == "promote" and not decision.passed:
        raise RegistryError(f"decision to promote v{decision.challenger_version} has failing criteria; not applied")
    name, challenger, champion = decision.model_name, decision.challenger_version, decision.champion_before
    check_name("model_name", name)
    if challenger is None:
        raise RegistryError("the decision names no challenger version")
    client = make_client(tracking_uri)
    _registered_model(client, name)
    with locked(client, name, f"promote v{challenger}", lock) as lease:
        _check_unchanged(client, name, challenger, champion)
        judged_by = (decision.evaluations.get("challenger") or {}).get("run_id", "")
        lease.check()
        if decision.action == "promote":
            _apply_promotion(client, lease, name, challenger, champion, judged_by)
        else:
            failed = ",".join(c.name for c in decision.criteria if not c.passed)
            client.set_model_version_tag(name, challenger, "gate_decision", "reject")
            client.set_model_version_tag(name, challenger, "gate_failed", failed)
            if judged_by:
                client.set_model_version_tag(name, challenger, "gate.evaluation_run_id", judged_by)
    applied = dataclasses.replace(decision, applied=True, dry_run=False)
    logger.info("promotion decision applied\n%s", applied.table())
    return applied


def promote(
    model_name: str,
    tracking_uri: str | None = None,
    evaluation: Evaluation | None = None,
    gate: Gate = Gate(),
    dry_run: bool = False,
    study: StudyPreference | None = None,
    lock: LockSettings = LockSettings(),
) -> Decision:
    """:func:`judge`, then (unless ``dry_run``) :func:`apply`: move ``champion`` to the
    ``challenger`` version if it passes ``gate``. The decision table is logged and returned."""
    decision = judge(model_name, tracking_uri, evaluation, gate, study)
    if dry_run or decision.action == "already_champion":
        decision = dataclasses.replace(decision, dry_run=dry_run)
        logger.info("promotion decision\n%s", decision.table())
        return decision
    return apply(decision, tracking_uri, lock)


def _check_unchanged(client: MlflowClient, name: str, challenger: str | None, champion: str | None) -> None:
    """Refuse to act on a decision about aliases that moved since it was made (compare-and-set)."""
    now = (_alias_version(client, name, CHALLENGER), _alias_version(client, name, CHAMPION))
    if now != (challenger, champion):
        raise RegistryError(
            f"model {name!r}: aliases moved since the decision (challenger/champion were v{challenger}/v{champion}, "
            f"now v{now[0]}/v{now[1]}): another promotion, rollback or registration came first; nothing changed, run "
            "it again"
        )


def _apply_promotion(
    client: MlflowClient, lease: Lease, name: str, challenger: str, champion: str | None, judged_by: str
) -> None:
    """Record the displaced champion (if any) first and move the alias last, so what is served
    changes only once rollback has what it needs; then read the alias back."""
    if champion is not None:
        history = [v for v in _history(client.get_registered_model(name)) if v != challenger]
        _write_history(client, name, [*history, champion])
        client.set_model_version_tag(name, champion, PREVIOUS_VERSION_TAG, "true")
    _delete_version_tag(client, name, challenger, PREVIOUS_VERSION_TAG)
    _delete_version_tag(client, name, challenger, "rolled_back")
    client.set_model_version_tag(name, challenger, "gate_decision", "promote")
    client.set_model_version_tag(name, challenger, "promoted_at", _now())
    if judged_by:
        client.set_model_version_tag(name, challenger, "gate.evaluation_run_id", judged_by)
    lease.check()
    client.set_registered_model_alias(name, CHAMPION, challenger)
    now = _alias_version(client, name, CHAMPION)
    if now != challenger:
        raise RegistryError(
            f"model {name!r}: {CHAMPION} reads v{now} right after it was set to v{challenger}: "
            "another writer changed it without the registry lock; check the registry"
        )


def rollback(
    model_name: str, tracking_uri: str | None = None, dry_run: bool = False, lock: LockSettings = LockSettings()
) -> Decision:
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
        raise RegistryError(
            f"model {model_name!r}: no previous champion recorded (tag {HISTORY_TAG!r}); cannot roll back v{current}"
        )
    target = history.pop()
    try:
        client.get_model_version(model_name, target)
    except MlflowException as exc:
        raise RegistryError(
            f"model {model_name!r}: previous champion v{target} no longer exists ({exc.message})"
        ) from exc
    challenger = _alias_version(client, model_name, CHALLENGER)
    reason = f"{CHAMPION} v{current} -> v{target}"
    if challenger == current:
        reason += f"; {CHALLENGER} alias removed from v{current}"
    decision = Decision("rollback", model_name, challenger, current, target, not dry_run, dry_run, reason)
    if not dry_run:
        with locked(client, model_name, f"rollback v{current}", lock) as lease:
            _check_unchanged(client, model_name, challenger, current)
            lease.check()
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
