"""One report document, two renderings: Markdown (PNGs beside it) and a self-contained HTML page.

A document is a list of blocks: `Heading`, `Para`, `Bullets`, `Note`, `Table` (from .tables) and `Image`.
Inline text uses `**bold**`, `<u>underline</u>`, `` `code` `` and `\\*` (a literal star); the HTML renderer
escapes everything else.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass
from pathlib import Path

from .tables import Table


@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Para:
    text: str


@dataclass
class Bullets:
    items: list[str]


@dataclass
class Note:
    """A section that could not be built, and why (rendered in italics)."""

    text: str


@dataclass
class Image:
    path: Path  # a PNG in the output folder
    caption: str
    alt: str = "figure"


# --------------------------------------------------------------------------------------------------
# Markdown


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def table_md(t: Table) -> str:
    lines = ["| " + " | ".join(_md_cell(c) for c in t.columns) + " |",
             "|" + "|".join(["---"] + ["---:"] * (len(t.columns) - 1)) + "|"]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in t.rows]
    return "\n".join(lines + [""] + [n + "\n" for n in t.notes]).rstrip() + "\n"


def to_markdown(blocks: list) -> str:
    out = []
    for b in blocks:
        if isinstance(b, Heading):
            out.append("#" * b.level + " " + b.text + "\n")
        elif isinstance(b, Para):
            out.append(b.text + "\n")
        elif isinstance(b, Bullets):
            out.append("".join(f"- {i}\n" for i in b.items))
        elif isinstance(b, Note):
            out.append(f"_{b.text}_\n")
        elif isinstance(b, Table):
            out.append(table_md(b))
        elif isinstance(b, Image):
            out.append(f"![{b.alt}]({b.path.name})\n\n{b.caption}\n")
    return "\n".join(out)


# --------------------------------------------------------------------------------------------------
# HTML

CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; max-width: 1100px; margin: 2em auto;
       padding: 0 1em; color: #222; line-height: 1.45; }
h1 { border-bottom: 2px solid #444; padding-bottom: .2em; }
h2 { border-bottom: 1px solid #bbb; padding-bottom: .15em; margin-top: 2em; }
table { border-collapse: collapse; margin: .8em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: .3em .6em; }
th { background: #f0f0f0; }
td { text-align: right; font-variant-numeric: tabular-nums; }
td:first-child { text-align: left; }
tr:nth-child(even) td { background: #fafafa; }
div.scroll { overflow-x: auto; }
p.tnote { font-size: 0.88em; color: #444; margin: .3em 0; }
p.note { font-style: italic; color: #666; }
code { background: #f3f3f3; padding: 0 .25em; border-radius: 3px; font-size: 0.92em; }
figure { margin: 1.2em 0; }
figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: 0.9em; color: #444; }
"""


def inline_html(text: str) -> str:
    """Escape `text`, then turn the inline markup (**b**, <u>u</u>, `code`, \\*) into HTML."""
    s = html.escape(text.replace("\\*", "\x00"), quote=False)
    s = re.sub(r"`([^`]+)`", r"<code>\1</code>", s)
    s = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", s)
    s = re.sub(r"&lt;u&gt;(.+?)&lt;/u&gt;", r"<u>\1</u>", s)
    return s.replace("\x00", "*")


def table_html(t: Table) -> str:
    head = "".join(f"<th>{inline_html(c)}</th>" for c in t.columns)
    body = "\n".join("<tr>" + "".join(f"<td>{inline_html(c)}</td>" for c in row) + "</tr>" for row in t.rows)
    notes = "".join(f'<p class="tnote">{inline_html(n)}</p>\n' for n in t.notes)
    return (f'<div class="scroll"><table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table></div>\n'
            f"{notes}")


def image_html(img: Image) -> str:
    data = base64.b64encode(Path(img.path).read_bytes()).decode("ascii")
    alt = html.escape(img.alt)
    return (f'<figure><img alt="{alt}" src="data:image/png;base64,{data}">'
            f"<figcaption>{inline_html(img.caption)}</figcaption></figure>\n")


def to_html(blocks: list, title: str) -> str:
    parts = []
    for b in blocks:
        if isinstance(b, Heading):
            parts.append(f"<h{b.level}>{inline_html(b.text)}</h{b.level}>\n")
        elif isinstance(b, Para):
            parts.append(f"<p>{inline_html(b.text)}</p>\n")
        elif isinstance(b, Bullets):
            parts.append("<ul>\n" + "".join(f"<li>{inline_html(i)}</li>\n" for i in b.items) + "</ul>\n")
        elif isinstance(b, Note):
            parts.append(f'<p class="note">{inline_html(b.text)}</p>\n')
        elif isinstance(b, Table):
            parts.append(table_html(b))
        elif isinstance(b, Image):
            parts.append(image_html(b))
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{html.escape(title)}</title>\n'
            f"<style>{CSS}</style>\n</head>\n<body>\n{''.join(parts)}</body>\n</html>\n")
