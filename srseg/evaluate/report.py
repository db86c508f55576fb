"""Writers for the evaluation outputs: CSV and Markdown tables, PNG plots, the HTML gallery.

Everything is written atomically through :mod:`srseg.fileio`. Plots use matplotlib's object API
(``Figure`` + Agg canvas), never ``pyplot``, so no global figure state or display backend is
touched. The gallery's text (class and method names, ids) is HTML-escaped and its image links are
relative, so the folder can be moved, served or logged to MLflow as is.
"""

from __future__ import annotations

import csv
import html
import io
import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from srseg.fileio import write_bytes_atomic, write_text_atomic

logger = logging.getLogger(__name__)


def format_value(value: Any, digits: int = 4) -> str:
    """Numbers as fixed-point text (``inf``/``nan`` spelled out); everything else via ``str``."""
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value).lower()
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return f"{value:.{digits}f}"
    return str(value)


def write_csv(path: Path, rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> Path:
    """A CSV with a header row; missing keys are empty cells, floats keep full precision."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(
            [
                format_value(row.get(c), 10) if isinstance(row.get(c), float) else format_value(row.get(c))
                for c in columns
            ]
        )
    write_text_atomic(path, buffer.getvalue())
    return path


def markdown_table(
    rows: Sequence[dict[str, Any]], columns: Sequence[str], headers: Sequence[str] | None = None, digits: int = 4
) -> str:
    """A GitHub-flavoured Markdown table; cells are HTML-escaped (Markdown renders raw HTML) and
    pipes escaped, so a method or class name can never inject markup. NaN reads "n/a" (e.g. no
    confidence interval for a class seen in fewer than three images)."""
    heads = list(headers) if headers is not None else list(columns)
    lines = ["| " + " | ".join(md_escape(h) for h in heads) + " |", "|" + "---|" * len(heads)]
    for row in rows:
        values = [row.get(c) for c in columns]
        cells = [
            md_escape("n/a" if isinstance(v, float) and math.isnan(v) else format_value(v, digits)) for v in values
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def md_escape(text: str) -> str:
    """Text safe inside a Markdown table cell or heading."""
    return html.escape(str(text), quote=False).replace("|", "\\|")


def slug(text: str) -> str:
    """A file-name-safe version of a class or method name."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")
    return cleaned or "x"


def _save_figure(fig: Any, path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    write_bytes_atomic(path, buffer.getvalue())
    return path


def plot_class_gains(
    path: Path, rows: Sequence[dict[str, Any]], metric: str, title: str, top_k: int = 10, min_pixels: int = 0
) -> Path | None:
    """Horizontal bars of the ``top_k`` largest and smallest per-class gains; None if nothing to plot.

    Classes under ``min_pixels`` are left out (a 50-pixel class's gain is noise) unless no class
    reaches it.
    """
    from matplotlib.figure import Figure

    finite = [r for r in rows if isinstance(r.get(metric), float) and math.isfinite(r[metric])]
    finite = [r for r in finite if int(r.get("pixels", 0)) >= min_pixels] or finite
    if not finite:
        return None
    ordered = sorted(finite, key=lambda r: r[metric])
    chosen = ordered if len(ordered) <= 2 * top_k else ordered[:top_k] + ordered[-top_k:]
    names = [str(r["class"]) for r in chosen]
    values = [float(r[metric]) for r in chosen]
    fig = Figure(figsize=(7.0, 0.3 * len(chosen) + 1.2))
    ax = fig.add_subplot(1, 1, 1)
    ax.barh(range(len(values)), values, color=["#2a7" if v > 0 else "#c44" for v in values])
    ax.set_yticks(range(len(values)), labels=names, fontsize=8)
    ax.axvline(0.0, color="black", linewidth=0.8)
    ax.set_xlabel(metric)
    ax.set_title(title, fontsize=10)
    return _save_figure(fig, path)


def _read_numeric_csv(path: Path) -> dict[str, list[float]]:
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns: dict[str, list[float]] = {name: [] for name in reader.fieldnames or []}
        for row in reader:
            for name in columns:
                try:
                    columns[name].append(float(row[name]))
                except (TypeError, ValueError):
                    columns[name].append(math.nan)
    return columns


def plot_training_curves(train_dir: Path, out_dir: Path) -> list[Path]:
    """One PNG per ``<train_dir>/plots/*.csv``: every numeric column against ``iteration``."""
    from matplotlib.figure import Figure

    written: list[Path] = []
    plots = Path(train_dir) / "plots"
    if not plots.is_dir():
        logger.warning("training curves: %s has no plots/ folder; skipped", train_dir)
        return written
    for csv_path in sorted(plots.glob("*.csv")):
        columns = _read_numeric_csv(csv_path)
        x = columns.pop("iteration", None)
        series = {k: v for k, v in columns.items() if any(math.isfinite(val) for val in v)}
        if not x or not series:
            logger.warning("training curves: %s has no iteration column or no numbers; skipped", csv_path)
            continue
        fig = Figure(figsize=(6.0, 2.2 * len(series)))
        for i, (name, values) in enumerate(sorted(series.items()), start=1):
            ax = fig.add_subplot(len(series), 1, i)
            points = [(i, v) for i, v in zip(x, values) if math.isfinite(i) and math.isfinite(v)]  # skip gaps
            ax.plot([p[0] for p in points], [p[1] for p in points], linewidth=1.0, marker="o", markersize=2)
            ax.set_ylabel(name, fontsize=8)
            ax.grid(True, alpha=0.3)
        fig.axes[-1].set_xlabel("iteration")
        fig.suptitle(f"{Path(train_dir).name}/{csv_path.name}", fontsize=10)
        written.append(_save_figure(fig, out_dir / f"train_{slug(Path(train_dir).name)}_{slug(csv_path.stem)}.png"))
    return written


@dataclass
class GalleryTile:
    """One image of a gallery row: a caption and the PNG's path relative to the HTML file."""

    caption: str
    src: str


@dataclass
class GalleryRow:
    """Side-by-side crops of one image region, with a heading that says why it was chosen."""

    title: str
    detail: str
    tiles: list[GalleryTile] = field(default_factory=list)


def write_gallery(path: Path, title: str, intro: str, rows: Sequence[GalleryRow]) -> Path:
    """A self-contained HTML page of crop rows (all text escaped, links relative)."""
    esc = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{esc(title)}</title>",
        "<style>body{font-family:sans-serif;margin:1.5em}figure{display:inline-block;vertical-align:top;margin:0 .4em "
        ".8em 0;"
        "text-align:center}img{width:192px;height:auto;image-rendering:pixelated;border:1px solid #888}"
        "figcaption{font-size:.8em;max-width:192px;overflow-wrap:anywhere}h2{font-size:1.05em;margin-top:1.4em}"
        "p.detail{font-size:.85em;color:#444;margin:.2em 0 .6em}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
        f"<p>{esc(intro)}</p>",
    ]
    for row in rows:
        parts.append(f'<section><h2>{esc(row.title)}</h2><p class="detail">{esc(row.detail)}</p>')
        for tile in row.tiles:
            src = esc(tile.src, quote=True)
            parts.append(
                f'<figure><a href="{src}"><img src="{src}" alt="{esc(tile.caption, quote=True)}"></a>'
                f"<figcaption>{esc(tile.caption)}</figcaption></figure>"
            )
        parts.append("</section>")
    if not rows:
        parts.append("<p>No crops: nothing to compare.</p>")
    parts.append("</body></html>\n")
    write_text_atomic(path, "\n".join(parts))
    return path
