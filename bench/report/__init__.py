"""`python -m bench report RUN_DIR`: what the user reads after a bench run.

Reads only RUN_DIR/results.jsonl, RUN_DIR/meta.json and the catalog. Writes report.md (with
charts/*.png beside it) and a self-contained report.html (the same PNGs as data: URIs).

The package is split by concern: run.py reads the run, context.py assembles the numbers every
section shares (projections, one combined figure per card), sections/ builds one section per
module, text.py holds every string in English and Japanese, render.py writes md and html.
"""

from __future__ import annotations

from pathlib import Path

from bench.report.context import DEMO_LABEL, INTERACTIVE_TOK_S, Ctx, build_context
from bench.report.document import Image, Section, Table
from bench.report.render import render_html, render_md
from bench.report.run import Run, check_run_dir, load_run
from bench.report.sections import build
from bench.report.sections.charts import CHART_FILES
from bench.report.text import TEXT
from rig.catalog import Catalog, load_catalog

LANGS = ("en", "ja")

__all__ = [
    "DEMO_LABEL", "INTERACTIVE_TOK_S", "LANGS", "TEXT", "Ctx", "Image", "Run", "Section", "Table",
    "build_context", "build_sections", "check_run_dir", "load_run", "write_report",
]  # fmt: skip


def build_sections(run: Run, lang: str = "en", cat: Catalog | None = None) -> list[Section]:
    return build(build_context(run, lang, cat or load_catalog()))


def write_report(run_dir: Path, lang: str = "en", cat: Catalog | None = None) -> list[Path]:
    """Write report.md, report.html and charts/*.png into run_dir; return the paths."""
    run = load_run(run_dir)
    sections = build_sections(run, lang, cat)
    title = f"{TEXT[lang]['title']}: {run.meta.run_id}"
    charts_dir = run_dir / "charts"
    written = []
    for s in sections:
        for b in s.blocks:
            if isinstance(b, Image):
                charts_dir.mkdir(exist_ok=True)
                (charts_dir / b.name).write_bytes(b.png)
                written.append(charts_dir / b.name)
    for name in CHART_FILES:
        stale = charts_dir / name
        if stale not in written:
            stale.unlink(missing_ok=True)
    md, page = run_dir / "report.md", run_dir / "report.html"
    md.write_text(render_md(title, sections), encoding="utf-8")
    page.write_text(render_html(title, sections, lang), encoding="utf-8")
    return [md, page, *written]
