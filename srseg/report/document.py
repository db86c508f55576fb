"""A small document model rendered twice, as Markdown and as one HTML page, from the same blocks.

Why not Markdown converted to HTML: the project has no Markdown library, and building both from
the same blocks keeps the two files saying exactly the same thing. All text is escaped for its
target (HTML entities; Markdown table pipes), so a class or method name can never inject markup;
image links are relative, so the report folder can be moved, served or logged to MLflow as is.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass, field

from srseg.evaluate.report import md_escape

_CSS = (
    "body{font-family:system-ui,sans-serif;max-width:72em;margin:1.5em auto;padding:0 1em;line-height:1.45;color:#222}"
    "table{border-collapse:collapse;margin:.6em 0 1.2em;font-size:.9em}th,td{border:1px solid #bbb;padding:.25em .55em;"
    "text-align:right}th{background:#eef}td:first-child,th:first-child{text-align:left}"
    "img{max-width:100%;border:1px solid #ccc;margin:.4em 0}pre{background:#f6f6f6;padding:.8em;overflow:auto;"
    "font-size:.8em;max-height:30em}h1{font-size:1.6em}h2{font-size:1.25em;margin-top:1.6em;border-bottom:1px solid "
    "#ddd}"
    "h3{font-size:1.05em}p.note{color:#555;font-size:.9em}details{margin:.6em 0}"
)


@dataclass
class _Block:
    kind: str  # heading | text | note | bullets | table | image | code
    text: str = ""
    level: int = 2
    items: Sequence[str] = ()
    headers: Sequence[str] = ()
    rows: Sequence[Sequence[str]] = ()
    src: str = ""
    summary: str = ""


@dataclass
class Document:
    """Blocks in reading order; :meth:`markdown` and :meth:`html` render them."""

    title: str
    blocks: list[_Block] = field(default_factory=list)

    def heading(self, text: str, level: int = 2) -> Document:
        self.blocks.append(_Block("heading", text=text, level=level))
        return self

    def text(self, text: str) -> Document:
        self.blocks.append(_Block("text", text=text))
        return self

    def note(self, text: str) -> Document:
        """A paragraph that qualifies what is above it (how to read a table, what a CI covers)."""
        self.blocks.append(_Block("note", text=text))
        return self

    def bullets(self, items: Sequence[str]) -> Document:
        self.blocks.append(_Block("bullets", items=list(items)))
        return self

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> Document:
        width = len(headers)
        if any(len(row) != width for row in rows):
            raise ValueError(f"table rows must have {width} cells like the header {list(headers)}")
        self.blocks.append(_Block("table", headers=list(headers), rows=[list(map(str, r)) for r in rows]))
        return self

    def image(self, src: str, alt: str) -> Document:
        self.blocks.append(_Block("image", src=src, text=alt))
        return self

    def code(self, text: str, summary: str) -> Document:
        """A preformatted block (the configuration), folded away under ``summary`` in HTML."""
        self.blocks.append(_Block("code", text=text, summary=summary))
        return self

    def markdown(self) -> str:
        out = [f"# {md_escape(self.title)}", ""]
        for b in self.blocks:
            if b.kind == "heading":
                out += [f"{'#' * b.level} {md_escape(b.text)}", ""]
            elif b.kind in ("text", "note"):
                out += [("_" if b.kind == "note" else "") + md_escape(b.text) + ("_" if b.kind == "note" else ""), ""]
            elif b.kind == "bullets":
                out += [f"- {md_escape(item)}" for item in b.items] + [""]
            elif b.kind == "table":
                out.append("| " + " | ".join(md_escape(h) for h in b.headers) + " |")
                out.append("|" + "---|" * len(b.headers))
                out += ["| " + " | ".join(md_escape(c) for c in row) + " |" for row in b.rows]
                out.append("")
            elif b.kind == "image":
                out += [f"![{md_escape(b.text)}]({b.src})", ""]
            elif b.kind == "code":
                fence = "````" if "```" in b.text else "```"
                out += [f"{md_escape(b.summary)}:", "", fence, b.text.rstrip("\n"), fence, ""]
        return "\n".join(out)

    def html(self) -> str:
        esc = html.escape
        out = [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{esc(self.title)}</title><style>{_CSS}</style></head><body>",
            f"<h1>{esc(self.title)}</h1>",
        ]
        for b in self.blocks:
            if b.kind == "heading":
                out.append(f"<h{b.level}>{esc(b.text)}</h{b.level}>")
            elif b.kind == "text":
                out.append(f"<p>{esc(b.text)}</p>")
            elif b.kind == "note":
                out.append(f'<p class="note">{esc(b.text)}</p>')
            elif b.kind == "bullets":
                out.append("<ul>" + "".join(f"<li>{esc(item)}</li>" for item in b.items) + "</ul>")
            elif b.kind == "table":
                head = "".join(f"<th>{esc(h)}</th>" for h in b.headers)
                body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in b.rows)
                out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
            elif b.kind == "image":
                out.append(f'<p><img src="{esc(b.src, quote=True)}" alt="{esc(b.text, quote=True)}"></p>')
            elif b.kind == "code":
                out.append(f"<details><summary>{esc(b.summary)}</summary><pre>{esc(b.text)}</pre></details>")
        out.append("</body></html>\n")
        return "\n".join(out)
