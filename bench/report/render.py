"""Rendering only: the same sections as Markdown and as one self-contained HTML page."""

from __future__ import annotations

import base64
import html

from bench.report.document import Image, Section, Table


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_md(title: str, sections: list[Section]) -> str:
    out = [f"# {title}", ""]
    for s in sections:
        out += [f"## {s.title}", ""]
        for b in s.blocks:
            if isinstance(b, Table):
                out.append("| " + " | ".join(_md_cell(h) for h in b.headers) + " |")
                out.append("|" + "---|" * len(b.headers))
                out += ["| " + " | ".join(_md_cell(x) for x in row) + " |" for row in b.rows]
            elif isinstance(b, Image):
                out.append(f"![{b.alt}](charts/{b.name})")
            else:
                out.append(b)
            out.append("")
    return "\n".join(out)


CSS = """
body { font-family: system-ui, "Noto Sans CJK JP", "Noto Sans JP", sans-serif; margin: 2rem;
       color: #222; max-width: 1200px; }
table { border-collapse: collapse; margin: 0.5rem 0 1.2rem; font-size: 0.9rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.5rem; text-align: left; }
th { background: #f2f2f2; }
tr.detail td { color: #555; font-size: 0.8rem; border-top: none; }
tr.detail td:first-child { padding-left: 1.5rem; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5rem 0; }
h2 { border-bottom: 2px solid #4C72B0; padding-bottom: 0.2rem; margin-top: 2rem; }
#bottom-line { background: #f6f8fc; border: 1px solid #c9d3e8; padding: 0 1rem 0.5rem; }
"""


def _html_text(text: str) -> str:
    """A paragraph, a bold line (**x**) or a list ("- " lines), escaped."""
    lines = text.split("\n")
    if all(line.startswith("- ") for line in lines):
        return "<ul>" + "".join(f"<li>{html.escape(line[2:])}</li>" for line in lines) + "</ul>"
    if text.startswith("**") and text.endswith("**"):
        return f"<h3>{html.escape(text[2:-2])}</h3>"
    return f"<p>{html.escape(text)}</p>"


def _html_table(t: Table) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in t.headers)
    rows = "".join(
        ('<tr class="detail">' if i in t.detail_rows else "<tr>")
        + "".join(f"<td>{html.escape(x)}</td>" for x in row)
        + "</tr>"
        for i, row in enumerate(t.rows)
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def render_html(title: str, sections: list[Section], lang: str) -> str:
    body = [f"<h1>{html.escape(title)}</h1>"]
    for s in sections:
        body.append(f'<section id="{s.key}"><h2>{html.escape(s.title)}</h2>')
        for b in s.blocks:
            if isinstance(b, Table):
                body.append(_html_table(b))
            elif isinstance(b, Image):
                data = base64.b64encode(b.png).decode("ascii")
                body.append(f'<img alt="{html.escape(b.alt)}" src="data:image/png;base64,{data}">')
            else:
                body.append(_html_text(b))
        body.append("</section>")
    return (
        f'<!DOCTYPE html>\n<html lang="{lang}"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head>"
        f"<body>{''.join(body)}</body></html>\n"
    )
