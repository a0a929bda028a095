"""The subset of Markdown our tables and ledger are written in (experiments/tables/render.py):
headings, pipe tables, bullet lists, paragraphs; **bold**, _italic_, `code`; the cells' own
<br> and <sub> tags are kept, everything else is escaped. Output is trusted HTML for Jinja2."""
from __future__ import annotations

import re

from markupsafe import Markup, escape

KEPT_TAGS = re.compile(r"&lt;(/?)(br|sub|sup|b|i|em|strong)\s*/?&gt;")


def inline(text: str) -> str:
    html = KEPT_TAGS.sub(lambda m: f"<{m.group(1)}{m.group(2)}>", str(escape(text)))
    html = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", html)
    html = re.sub(r"`([^`]+)`", r"<code>\1</code>", html)
    return re.sub(r"(?<![\w/])_([^_]+?)_(?![\w/])", r"<em>\1</em>", html)


def _table(lines: list[str]) -> str:
    def cells(line):
        return [c.strip() for c in line.strip().strip("|").split("|")]

    head, body = cells(lines[0]), [cells(ln) for ln in lines[2:]]
    out = ["<table><thead><tr>", *(f"<th>{inline(c)}</th>" for c in head), "</tr></thead><tbody>"]
    for row in body:
        out += ["<tr>", *(f"<td>{inline(c)}</td>" for c in row), "</tr>"]
    return "".join(out + ["</tbody></table>"])


def _blocks(text: str):
    """(kind, lines) blocks: heading, table, list, paragraph."""
    block, kind = [], None
    for line in text.splitlines() + [""]:
        stripped = line.strip()
        new = ("table" if stripped.startswith("|") else "list" if stripped.startswith("- ")
               else "heading" if stripped.startswith("#") else "para" if stripped else None)
        if kind and (new != kind or kind == "heading"):
            yield kind, block
            block, kind = [], None
        if new:
            block.append(stripped)
            kind = new


def to_html(text: str, shift: int = 2) -> Markup:
    """Markdown -> HTML; headings go `shift` levels down (a table's `#` title becomes <h3>)."""
    parts = []
    for kind, lines in _blocks(text):
        if kind == "heading":
            level = min(6, len(lines[0]) - len(lines[0].lstrip("#")) + shift)
            parts.append(f"<h{level}>{inline(lines[0].lstrip('#').strip())}</h{level}>")
        elif kind == "table" and len(lines) >= 2:
            parts.append(_table(lines))
        elif kind == "list":
            parts.append("<ul>" + "".join(f"<li>{inline(ln[2:])}</li>" for ln in lines) + "</ul>")
        else:
            text = " ".join(lines)
            if len(text) > 2 and text[0] == "_" and text[-1] == "_":    # a whole-line note
                parts.append(f'<p class="note"><em>{inline(text[1:-1])}</em></p>')
            else:
                parts.append(f"<p>{inline(text)}</p>")
    return Markup("\n".join(parts))
