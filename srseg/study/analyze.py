"""Analyse study votes: who to trust, which method wins, by how much, and how sure we are.

Methods (why these):

- Rater exclusion: a rater whose attention-check accuracy is below ``attention_threshold`` (or
  who answered fewer than ``min_attention_answered`` checks) is excluded entirely, since a rater
  who cannot tell a photo from a heavily blurred copy adds only noise. Attention pairs never
  enter the method statistics.
- Win rates per method pair with Wilson score 95% intervals: correct coverage for small counts and
  rates near 0 or 1, unlike the normal approximation.
- Bradley-Terry strengths from all pairs jointly, fitted with Hunter's MM algorithm. A weak prior
  of ``prior`` (0.5) virtual wins in each direction of every compared pair keeps scores finite when
  a method wins or loses everything. Scores are log-strengths relative to a fixed reference method
  (score 0; default the first method of the bundle), so exp(score) is the odds of beating it.
- Bootstrap CIs for the scores (percentile, ``bootstrap`` replicates): raters are resampled with
  replacement (``bootstrap_unit="rater"``), which respects that one rater's votes are correlated;
  ``"vote"`` resamples votes, and is used when fewer than two raters remain.
- Agreement on non-attention pairs answered by at least two included raters: pooled pairwise
  percent agreement and Fleiss' kappa (variable raters per item; category = side chosen, whose
  method is fixed per pair).
- Gate studies (bundles built by ``srseg study gate-build``): the challenger's share of the votes
  against its opponent with the Wilson interval, written to ``gate.json`` together with the two
  registered versions it is about; ``srseg promote`` reads exactly that file.
"""

from __future__ import annotations

import html
import logging
import math
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from srseg import tracking
from srseg.fileio import atomic_open, write_json_atomic, write_text_atomic
from srseg.study.bundle import Study, load_study
from srseg.study.store import Vote, default_state_dir, open_store

log = logging.getLogger(__name__)

Z95 = 1.959963984540054
PLOT_NAME = "study_scores.png"


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion; (nan, nan) when n == 0."""
    if n == 0:
        return math.nan, math.nan
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be in [0, n={n}], got {successes}")
    p = successes / n
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, center - half), min(1.0, center + half)


def bradley_terry(
    wins: np.ndarray, design: np.ndarray, prior: float = 0.5, tol: float = 1e-10, max_iter: int = 10_000
) -> np.ndarray:
    """Log-strengths (geometric mean 1) from win counts, batched over leading axes.

    ``wins[..., i, j]`` = times i beat j; ``design[i, j]`` marks compared pairs (symmetric), which
    get ``prior`` virtual wins each way. Hunter's MM update: p_i = W_i / sum_j N_ij / (p_i + p_j).
    """
    design = np.asarray(design, dtype=bool)
    w = np.asarray(wins, dtype=np.float64) + prior * design
    n = w + np.swapaxes(w, -1, -2)
    total_wins = w.sum(-1)
    p = np.ones(w.shape[:-1])
    for _ in range(max_iter):
        denom = (n / (p[..., :, None] + p[..., None, :])).sum(-1)
        new = total_wins / denom
        new = new / np.exp(np.log(new).mean(-1, keepdims=True))
        change = np.max(np.abs(np.log(new) - np.log(p)))
        p = new
        if change < tol:
            break
    else:
        log.warning("Bradley-Terry MM did not converge in %d iterations (last change %.2e)", max_iter, change)
    return np.log(p)


def fleiss_kappa(counts: np.ndarray) -> float:
    """Fleiss' kappa for items x categories counts with a variable number of raters per item."""
    counts = np.asarray(counts, dtype=np.float64)
    per_item = counts.sum(1)
    counts = counts[per_item >= 2]
    per_item = per_item[per_item >= 2]
    if len(counts) == 0:
        return math.nan
    p_item = ((counts * (counts - 1)).sum(1) / (per_item * (per_item - 1))).mean()
    p_cat = counts.sum(0) / counts.sum()
    p_exp = float((p_cat**2).sum())
    if p_exp >= 1.0:
        return math.nan
    return float((p_item - p_exp) / (1 - p_exp))


def _check_connected(methods: Sequence[str], method_pairs: Sequence[tuple[str, str]]) -> None:
    seen = {methods[0]}
    frontier = [methods[0]]
    while frontier:
        current = frontier.pop()
        for a, b in method_pairs:
            for x, y in ((a, b), (b, a)):
                if x == current and y not in seen:
                    seen.add(y)
                    frontier.append(y)
    unreachable = [m for m in methods if m not in seen]
    if unreachable:
        raise ValueError(
            f"method pairs do not connect all methods: {unreachable} never meet {methods[0]!r} (scores not comparable)"
        )


@dataclass(frozen=True)
class RaterQuality:
    rater_id: str
    votes: int
    attention_answered: int
    attention_correct: int
    median_response_ms: float | None
    excluded: bool
    reason: str | None

    @property
    def attention_accuracy(self) -> float | None:
        return self.attention_correct / self.attention_answered if self.attention_answered else None


def _nan_to_none(value: float) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def analyze_votes(
    study: Study,
    votes: Sequence[Vote],
    attention_threshold: float = 0.75,
    min_attention_answered: int = 0,
    reference: str | None = None,
    bootstrap: int = 1000,
    bootstrap_unit: str = "rater",
    prior: float = 0.5,
    seed: int = 0,
) -> dict[str, Any]:
    """All statistics as one JSON-able dict (see module docstring); writes nothing."""
    _check_settings(attention_threshold, bootstrap, bootstrap_unit)
    methods = list(study.methods)
    reference = methods[0] if reference is None else reference
    if reference not in methods:
        raise ValueError(f"reference {reference!r} is not a method of the study; methods are {methods}")
    _check_connected(methods, study.method_pairs)

    unknown = [v for v in votes if v.pair_id not in study.by_id]
    if unknown:
        log.warning("%d vote(s) for pair ids not in the bundle are ignored (e.g. %r)", len(unknown), unknown[0].pair_id)
    by_rater: dict[str, list[Vote]] = {}
    for vote in votes:
        if vote.pair_id in study.by_id:
            by_rater.setdefault(vote.rater_id, []).append(vote)
    quality = [
        _rater_quality(study, r, rv, attention_threshold, min_attention_answered) for r, rv in sorted(by_rater.items())
    ]
    included = [q.rater_id for q in quality if not q.excluded]
    used = [v for r in included for v in by_rater[r] if not study.by_id[v.pair_id].attention_check]

    per_rater = _win_counts(study, used, included)
    wins = per_rater.sum(0)
    unit = bootstrap_unit
    if unit == "rater" and len(included) < 2:
        log.warning("fewer than two included raters: bootstrap resamples votes instead of raters")
        unit = "vote"
    scores = _bradley_terry_scores(study, per_rater, reference, prior, bootstrap if used else 0, unit, seed)
    table = _side_table(used)
    return {
        "gate": _gate_preference(study, wins),
        "params": {
            "attention_threshold": attention_threshold,
            "min_attention_answered": min_attention_answered,
            "reference": reference,
            "bootstrap": bootstrap,
            "bootstrap_unit": unit,
            "prior": prior,
            "seed": seed,
        },
        "study_id": study.study_id,
        "methods": methods,
        "raters": [_rater_row(q) for q in quality],
        "excluded_raters": [q.rater_id for q in quality if q.excluded],
        "counts": {
            "votes_total": len(votes),
            "votes_unknown_pair": len(unknown),
            "votes_used": len(used),
            "raters_total": len(quality),
            "raters_included": len(included),
            "raters_excluded": len(quality) - len(included),
        },
        "win_rates": _win_rates(study, wins),
        "bradley_terry": scores,
        "agreement": _agreement(table),
        "left_choice_rate": float(table[:, 0].sum() / table.sum()) if table.sum() else None,
    }


def _check_settings(attention_threshold: float, bootstrap: int, bootstrap_unit: str) -> None:
    if not 0.0 <= attention_threshold <= 1.0:
        raise ValueError(f"attention_threshold must be in [0, 1], got {attention_threshold}")
    if bootstrap_unit not in ("rater", "vote"):
        raise ValueError(f"bootstrap_unit must be 'rater' or 'vote', got {bootstrap_unit!r}")
    if bootstrap < 0:
        raise ValueError(f"bootstrap must be >= 0, got {bootstrap}")


def _rater_quality(
    study: Study, rater_id: str, votes: Sequence[Vote], attention_threshold: float, min_attention_answered: int
) -> RaterQuality:
    """Attention-check record of one rater and whether (and why) they are excluded."""
    checks = [v for v in votes if study.by_id[v.pair_id].attention_check]
    correct = sum(1 for v in checks if v.choice == study.by_id[v.pair_id].expected)
    times = [v.response_ms for v in votes if v.response_ms is not None]
    reason = None
    if len(checks) < min_attention_answered:
        reason = f"answered {len(checks)} attention checks, fewer than {min_attention_answered}"
    elif checks and correct / len(checks) < attention_threshold:
        reason = f"attention checks {correct}/{len(checks)} below threshold {attention_threshold:g}"
    median = float(np.median(times)) if times else None
    return RaterQuality(rater_id, len(votes), len(checks), correct, median, reason is not None, reason)


def _rater_row(q: RaterQuality) -> dict[str, Any]:
    return {
        "rater_id": q.rater_id,
        "votes": q.votes,
        "attention_answered": q.attention_answered,
        "attention_correct": q.attention_correct,
        "attention_accuracy": q.attention_accuracy,
        "median_response_ms": q.median_response_ms,
        "excluded": q.excluded,
        "reason": q.reason,
    }


def _method_index(study: Study) -> dict[str, int]:
    return {m: i for i, m in enumerate(study.methods)}


def _win_counts(study: Study, used: Sequence[Vote], included: Sequence[str]) -> np.ndarray:
    """``[rater, winner, loser]`` vote counts (per rater, for the rater bootstrap)."""
    index, m = _method_index(study), len(study.methods)
    per_rater = np.zeros((len(included), m, m))
    rater_index = {r: i for i, r in enumerate(included)}
    for vote in used:
        pair = study.by_id[vote.pair_id]
        loser = pair.right.method if vote.choice == pair.left.method else pair.left.method
        per_rater[rater_index[vote.rater_id], index[vote.choice], index[loser]] += 1
    return per_rater


def _win_rates(study: Study, wins: np.ndarray) -> list[dict[str, Any]]:
    """Win rate of ``a`` over ``b`` with its Wilson interval, per compared method pair."""
    index = _method_index(study)
    rows = []
    for a, b in study.method_pairs:
        k, n = int(wins[index[a], index[b]]), int(wins[index[a], index[b]] + wins[index[b], index[a]])
        low, high = wilson_interval(k, n)
        rows.append(
            {
                "a": a,
                "b": b,
                "wins_a": k,
                "n": n,
                "rate_a": k / n if n else None,
                "ci_low": _nan_to_none(low),
                "ci_high": _nan_to_none(high),
            }
        )
    return rows


def _bradley_terry_scores(
    study: Study, per_rater: np.ndarray, reference: str, prior: float, bootstrap: int, unit: str, seed: int
) -> list[dict[str, Any]]:
    """Bradley-Terry log-strengths relative to ``reference`` with percentile bootstrap CIs."""
    index, methods = _method_index(study), list(study.methods)
    m = len(methods)
    design = np.zeros((m, m), dtype=bool)
    for a, b in study.method_pairs:
        design[index[a], index[b]] = design[index[b], index[a]] = True
    wins = per_rater.sum(0)
    scores = bradley_terry(wins, design, prior)
    scores = scores - scores[index[reference]]
    ci = np.full((m, 2), np.nan)
    if bootstrap:
        rng = np.random.default_rng(seed)
        raters = per_rater.shape[0]
        if unit == "rater":
            weights = rng.multinomial(raters, np.full(raters, 1 / raters), size=bootstrap)
            samples = np.tensordot(weights, per_rater, axes=(1, 0))
        else:
            flat = wins.reshape(-1)
            samples = (
                rng.multinomial(int(flat.sum()), flat / flat.sum(), size=bootstrap)
                .reshape(bootstrap, m, m)
                .astype(float)
            )
        boot = bradley_terry(samples, design, prior)
        boot = boot - boot[:, [index[reference]]]
        ci = np.percentile(boot, [2.5, 97.5], axis=0).T
    return [
        {
            "method": name,
            "score": float(scores[i]),
            "ci_low": _nan_to_none(ci[i, 0]),
            "ci_high": _nan_to_none(ci[i, 1]),
            "p_beats_reference": float(1 / (1 + math.exp(-scores[i]))),
        }
        for i, name in enumerate(methods)
    ]


def _side_table(used: Sequence[Vote]) -> np.ndarray:
    """``[pair, (left votes, right votes)]`` over the used votes."""
    side_counts: dict[str, list[int]] = {}
    for vote in used:
        side_counts.setdefault(vote.pair_id, [0, 0])[0 if vote.side == "left" else 1] += 1
    return np.array(list(side_counts.values()), dtype=np.float64).reshape(-1, 2)


def _agreement(table: np.ndarray) -> dict[str, Any]:
    """Pooled pairwise agreement and Fleiss' kappa over pairs answered by at least two raters."""
    shared = table[table.sum(1) >= 2]
    agree = float(sum(math.comb(int(a), 2) + math.comb(int(b), 2) for a, b in shared))
    pairs_of_raters = float(sum(math.comb(int(a + b), 2) for a, b in shared))
    return {
        "items": int(len(shared)),
        "percent": agree / pairs_of_raters if pairs_of_raters else None,
        "fleiss_kappa": _nan_to_none(fleiss_kappa(table)) if len(table) else None,
    }


def _gate_preference(study: Study, wins: np.ndarray) -> dict[str, Any] | None:
    """For a gate study: the challenger's share of the votes against its opponent (Wilson CI)."""
    if study.gate is None:
        return None
    index = _method_index(study)
    mine, theirs = index[study.gate["challenger_method"]], index[study.gate["opponent_method"]]
    k, n = int(wins[mine, theirs]), int(wins[mine, theirs] + wins[theirs, mine])
    low, high = wilson_interval(k, n)
    return {
        "challenger": study.gate["challenger"],
        "opponent": study.gate["opponent"],
        "preference": k / n if n else None,
        "ci_low": _nan_to_none(low),
        "ci_high": _nan_to_none(high),
        "n": n,
        "votes_for_challenger": k,
    }


def metrics_from(result: dict[str, Any]) -> dict[str, Any]:
    """The numeric subset for DVC's metrics.json (flat-ish, no strings)."""
    included = [r for r in result["raters"] if not r["excluded"] and r["attention_accuracy"] is not None]
    return {
        **result["counts"],
        "attention_accuracy_included": float(np.mean([r["attention_accuracy"] for r in included]))
        if included
        else None,
        "agreement_percent": result["agreement"]["percent"],
        "fleiss_kappa": result["agreement"]["fleiss_kappa"],
        "left_choice_rate": result["left_choice_rate"],
        "win_rate": {
            f"{w['a']}_vs_{w['b']}": {"rate": w["rate_a"], "ci_low": w["ci_low"], "ci_high": w["ci_high"], "n": w["n"]}
            for w in result["win_rates"]
        },
        "bt_score": {
            b["method"]: {"score": b["score"], "ci_low": b["ci_low"], "ci_high": b["ci_high"]}
            for b in result["bradley_terry"]
        },
    }


def _mathtext_safe(text: str) -> str:
    return text.replace("$", r"\$")


def write_plot(result: dict[str, Any], path: Path) -> None:
    """BT scores with bootstrap CIs (left) and win rates with Wilson CIs (right), one PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    bt = result["bradley_terry"]
    rates = result["win_rates"]
    fig = Figure(figsize=(11, 0.6 * max(len(bt), len(rates)) + 2.0))
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    ys = np.arange(len(bt))
    scores = np.array([b["score"] for b in bt])
    lows = np.array([b["ci_low"] if b["ci_low"] is not None else b["score"] for b in bt])
    highs = np.array([b["ci_high"] if b["ci_high"] is not None else b["score"] for b in bt])
    left.errorbar(scores, ys, xerr=[scores - lows, highs - scores], fmt="o", capsize=4)
    left.axvline(0.0, color="grey", lw=0.8)
    left.set_yticks(ys, [_mathtext_safe(b["method"]) for b in bt])
    left.set_xlabel(f"Bradley-Terry log-strength vs {_mathtext_safe(result['params']['reference'])} (95% bootstrap CI)")
    ys = np.arange(len(rates))
    values = np.array([w["rate_a"] if w["rate_a"] is not None else np.nan for w in rates])
    lo = np.array([w["ci_low"] if w["ci_low"] is not None else np.nan for w in rates])
    hi = np.array([w["ci_high"] if w["ci_high"] is not None else np.nan for w in rates])
    right.errorbar(values, ys, xerr=[values - lo, hi - values], fmt="s", capsize=4, color="tab:orange")
    right.axvline(0.5, color="grey", lw=0.8)
    right.set_xlim(0, 1)
    right.set_yticks(ys, [_mathtext_safe(f"{w['a']} vs {w['b']}") for w in rates])
    right.set_xlabel("win rate of the first method (95% Wilson CI)")
    fig.tight_layout()
    with atomic_open(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=100)


def _md(text: Any) -> str:
    """Markdown table cell: escape markup and raw HTML so names render as plain text."""
    value = html.escape(str(text), quote=False)
    return re.sub(r"([\\`*_\[\]|#])", r"\\\1", value)


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def render_markdown(result: dict[str, Any]) -> str:
    counts, params = result["counts"], result["params"]
    lines = [
        "# User study results",
        "",
        f"Votes used: {counts['votes_used']} of {counts['votes_total']}; raters included: {counts['raters_included']} "
        f"of {counts['raters_total']} (attention threshold {params['attention_threshold']:g}).",
        "",
        f"![scores]({PLOT_NAME})",
        "",
        f"## Bradley-Terry scores (reference: {_md(params['reference'])}, "
        f"{params['bootstrap']} bootstrap replicates over {params['bootstrap_unit']}s)",
        "",
        "| method | score | 95% CI | P(beats reference) |",
        "|---|---:|---:|---:|",
    ]
    for b in sorted(result["bradley_terry"], key=lambda b: -b["score"]):
        ci = f"[{_fmt(b['ci_low'])}, {_fmt(b['ci_high'])}]"
        lines.append(f"| {_md(b['method'])} | {b['score']:.3f} | {ci} | {b['p_beats_reference']:.3f} |")
    lines += [
        "",
        "## Win rates (Wilson 95% CI)",
        "",
        "| A | B | A wins | n | rate of A | 95% CI |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for w in result["win_rates"]:
        ci = f"[{_fmt(w['ci_low'])}, {_fmt(w['ci_high'])}]"
        lines.append(f"| {_md(w['a'])} | {_md(w['b'])} | {w['wins_a']} | {w['n']} | {_fmt(w['rate_a'])} | {ci} |")
    agreement = result["agreement"]
    lines += [
        "",
        "## Agreement",
        "",
        f"Pairwise percent agreement {_fmt(agreement['percent'])}, Fleiss' kappa {_fmt(agreement['fleiss_kappa'])} "
        f"over {agreement['items']} pairs; left chosen in {_fmt(result['left_choice_rate'])} of votes.",
        "",
        "## Raters",
        "",
        "| rater | votes | attention | median ms | status |",
        "|---|---:|---:|---:|---|",
    ]
    for r in result["raters"]:
        status = f"excluded: {r['reason']}" if r["excluded"] else "included"
        lines.append(
            f"| {_md(r['rater_id'])} | {r['votes']} | {r['attention_correct']}/{r['attention_answered']} | "
            f"{_fmt(r['median_response_ms'], 0)} | {_md(status)} |"
        )
    return "\n".join(lines) + "\n"


def render_html(result: dict[str, Any]) -> str:
    from jinja2 import Environment, FileSystemLoader

    env = Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"), autoescape=True)
    env.filters["fmt"] = _fmt
    return env.get_template("report.html").render(r=result, plot=PLOT_NAME)


def log_to_mlflow(
    metrics: dict[str, Any],
    params: dict[str, Any],
    files: Sequence[Path],
    tracking_uri: str | None,
    experiment: str = "srseg-study",
) -> str | None:
    """Log to a new run at ``tracking_uri``, or to the caller's active run; return the run id.

    Without a tracking URI and without an active run nothing is logged (and mlflow is not even
    imported when nobody imported it: then no run can be active).
    """
    if tracking_uri is None and "mlflow" not in sys.modules:
        return None
    import mlflow

    run_id = None
    if tracking_uri is None:
        active = mlflow.active_run()
        if active is None:
            return None
        run_id = active.info.run_id
    client = tracking.make_client(tracking_uri)
    with tracking.standalone_run(client, experiment, "study-analysis", run_id=run_id) as run:
        flat = tracking.flatten_metrics(metrics, "study.")
        tracking.log_metrics(client, run.info.run_id, flat)
        tracking.log_params(
            client, run.info.run_id, {tracking.metric_key(f"study.{k}"): str(v)[:500] for k, v in params.items()}
        )
        tracking.log_files(client, run.info.run_id, files, artifact_path="study")
    log.info("logged %d study metrics to MLflow run %s", len(flat), run.info.run_id)
    return str(run.info.run_id)


def analyze_study(
    bundle: Path,
    output: Path,
    state_dir: Path | None = None,
    attention_threshold: float = 0.75,
    min_attention_answered: int = 0,
    reference: str | None = None,
    bootstrap: int = 1000,
    bootstrap_unit: str = "rater",
    seed: int = 0,
    mlflow_tracking_uri: str | None = None,
    mlflow_experiment: str = "srseg-study",
) -> dict[str, Any]:
    """Analyse the votes stored for ``bundle``; write metrics.json, analysis.json, report.md/.html
    and the plot into ``output``; log to MLflow when a tracking URI or an active run is given.
    Returns the metrics dict."""
    study = load_study(Path(bundle), verify=False)
    store = open_store(study.study_id, Path(state_dir) if state_dir else default_state_dir(Path(bundle)))
    result = analyze_votes(
        study,
        store.votes(),
        attention_threshold,
        min_attention_answered,
        reference,
        bootstrap,
        bootstrap_unit,
        seed=seed,
    )
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    metrics = metrics_from(result)
    write_plot(result, output / PLOT_NAME)
    write_text_atomic(output / "report.md", render_markdown(result))
    write_text_atomic(output / "report.html", render_html(result))
    write_json_atomic(output / "analysis.json", result)
    write_json_atomic(output / "metrics.json", metrics)
    if result["gate"] is None:
        (output / "gate.json").unlink(missing_ok=True)  # never leave another study's verdict behind
    else:
        write_json_atomic(output / "gate.json", result["gate"])
        log.info(
            "gate study: challenger preferred in %s of %d votes (95%% CI %s - %s)",
            result["gate"]["preference"],
            result["gate"]["n"],
            result["gate"]["ci_low"],
            result["gate"]["ci_high"],
        )
    run_id = log_to_mlflow(
        metrics,
        result["params"],
        [output / n for n in ("report.md", "report.html", PLOT_NAME, "analysis.json")],
        mlflow_tracking_uri,
        mlflow_experiment,
    )
    if run_id:
        result["mlflow_run_id"] = run_id
    log.info("study analysis written to %s", output)
    return metrics
