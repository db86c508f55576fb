"""The report's figures: training curves of both arms over seeds, per-class gains with their CIs.

matplotlib's object API only (``Figure`` + Agg canvas, never ``pyplot``): no global figure state,
no display backend. Every axis is labelled with what it shows and its unit.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from srseg.fileio import write_bytes_atomic

ARM_COLOURS = {"multitask": "#1f6fb4", "sr_only": "#d9711c"}

Curve = Sequence[tuple[float, float]]  # (iteration, value)


def _save(fig: object, path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")  # type: ignore[attr-defined]
    write_bytes_atomic(path, buffer.getvalue())
    return path


def mean_curve(curves: Sequence[Curve]) -> list[tuple[float, float]]:
    """Mean over curves at the iterations every curve has a finite value for."""
    maps = [{x: y for x, y in curve if math.isfinite(y)} for curve in curves]
    common = sorted(set.intersection(*(set(m) for m in maps))) if maps else []
    return [(x, sum(m[x] for m in maps) / len(maps)) for x in common]


def plot_curves(
    path: Path, arms: Mapping[str, Mapping[int, Curve]], title: str, ylabel: str, log_y: bool = False
) -> Path | None:
    """One line per seed (thin) and the mean over seeds (thick) for every arm; None if empty."""
    from matplotlib.figure import Figure

    if not any(curve for seeds in arms.values() for curve in seeds.values()):
        return None
    fig = Figure(figsize=(7.0, 3.6))
    ax = fig.add_subplot(1, 1, 1)
    for arm, seeds in arms.items():
        colour = ARM_COLOURS.get(arm)
        for curve in seeds.values():
            if curve:
                ax.plot([p[0] for p in curve], [p[1] for p in curve], color=colour, alpha=0.35, linewidth=0.8)
        mean = mean_curve([c for c in seeds.values() if c])
        if mean:
            ax.plot(
                [p[0] for p in mean],
                [p[1] for p in mean],
                color=colour,
                linewidth=2.0,
                marker="o",
                markersize=3,
                label=f"{arm} (mean of {len(seeds)} seed{'s' if len(seeds) != 1 else ''})",
            )
    if log_y:
        ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_gains(path: Path, rows: Sequence[Mapping[str, object]], title: str, xlabel: str) -> Path | None:
    """Horizontal bars of ``psnr_y_gain`` per class with their CI as error bars; None if empty."""
    from matplotlib.figure import Figure

    usable = [r for r in rows if isinstance(r.get("psnr_y_gain"), float) and math.isfinite(r["psnr_y_gain"])]  # type: ignore[arg-type]
    if not usable:
        return None
    usable = sorted(usable, key=lambda r: float(r["psnr_y_gain"]))  # type: ignore[arg-type]
    gains = [float(r["psnr_y_gain"]) for r in usable]  # type: ignore[arg-type]
    low = [
        g - float(r["psnr_y_gain_ci_lo"]) if _finite(r.get("psnr_y_gain_ci_lo")) else 0.0 for g, r in zip(gains, usable)
    ]
    high = [
        float(r["psnr_y_gain_ci_hi"]) - g if _finite(r.get("psnr_y_gain_ci_hi")) else 0.0 for g, r in zip(gains, usable)
    ]
    fig = Figure(figsize=(7.0, 0.32 * len(usable) + 1.4))
    ax = fig.add_subplot(1, 1, 1)
    ax.barh(range(len(gains)), gains, xerr=[low, high], capsize=3, color=["#2a7" if g > 0 else "#c44" for g in gains])
    ax.set_yticks(range(len(gains)), labels=[f"{r['class']} ({r['images']} img)" for r in usable], fontsize=8)
    ax.axvline(0.0, color="black", linewidth=0.8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("COCO-Stuff class (images containing it)")
    ax.set_title(title, fontsize=10)
    return _save(fig, path)


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(float(value))
