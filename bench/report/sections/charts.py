"""Charts: decode speed (measured and one combined projection per card), TTFT, share.

A chart with nothing to draw (no GPU share measured in a CPU-only run, no TTFT point) is left
out, and the section with it when no chart has data. Japanese charts need a Japanese font
(bench.charts.cjk_font); without one they keep English labels, said once on stderr."""

from __future__ import annotations

import dataclasses

from bench import charts
from bench.report.context import Ctx, prefill_ttft, stat
from bench.report.document import Image, Section

# Every file this section can write under charts/ (a rewritten report removes the ones it no
# longer draws, so an old chart never sits beside a report that left it out).
CHART_FILES = ("decode.png", "ttft.png", "share.png")


def chart_ctx(c: Ctx) -> Ctx:
    """The context the charts' labels come from: the report's, or English where no font can
    draw Japanese."""
    if c.lang == "en" or charts.cjk_font():
        return c
    return dataclasses.replace(c, lang="en")


def sec_charts(c: Ctx) -> Section | None:
    g = chart_ctx(c)
    drawn = [(name, png) for name, png in (_decode(g), _ttft(g), _share(g)) if png is not None]
    if not drawn:
        return None
    # The page's own text (alt) stays in the report's language whatever the PNG could draw.
    alt = {"decode.png": "chart_decode", "ttft.png": "chart_ttft", "share.png": "chart_share"}
    return Section("charts", c.t("charts"), [Image(n, c.t(alt[n]), png) for n, png in drawn])


def _decode(c: Ctx) -> tuple[str, bytes | None]:
    models = c.run.models()
    series = []
    for name in c.run.target_names():
        vals = [
            (s.mean if (s := stat(r.decode_tok_s for r in c.rows(m, name, True))) else None)
            for m in models
        ]
        if any(v is not None for v in vals):
            series.append(charts.Series(c.label(name), vals))
    for card in c.planned:
        figs = [c.figure(m, card) for m in models]
        figs = [f if f is not None and not f.measured else None for f in figs]
        if any(figs):
            series.append(charts.Series(
                f"{c.t('projected')} {c.card(card)}",
                [f.tok_s if f else None for f in figs],
                [f.low if f else None for f in figs],
                [f.high if f else None for f in figs], projected=True,
            ))  # fmt: skip
    if not series:
        return "decode.png", None
    png = charts.grouped_bars(models, series, c.t("chart_decode"), c.t("axis_tok_s"), c.lang)
    return "decode.png", png


def _ttft(c: Ctx) -> tuple[str, bytes | None]:
    points = {
        c.label(n): [(r.prompt_tokens, t) for r in c.run.ok
                     if r.target == n and r.prompt_tokens is not None
                     and (t := prefill_ttft(r)) is not None]
        for n in c.run.target_names()
    }  # fmt: skip
    if not any(points.values()):
        return "ttft.png", None
    png = charts.scatter(points, c.t("chart_ttft"), c.t("axis_prompt"), c.t("axis_ttft"), c.lang)
    return "ttft.png", png


def _share(c: Ctx) -> tuple[str, bytes | None]:
    """Measured share on the GPU beside the 16 GB prediction; without a measured share (a
    CPU-only run) there is nothing to compare the prediction with: no chart."""
    models = c.run.models()
    series = []
    for name in c.run.target_names():
        vals = []
        for m in models:
            s = stat(r.gpu_share for r in c.rows(m, name))
            vals.append(None if s is None or not c.gpu_of(name) else 100 * s.mean)
        if any(v is not None for v in vals):
            series.append(charts.Series(c.label(name), vals))
    if not series:
        return "share.png", None
    predicted = [(f.gpu_share * 100 if (f := c.fit(m, c.pc_gpu)) else None) for m in models]
    series.append(charts.Series(f"{c.t('predicted_16')} ({c.card(c.pc_gpu)})", predicted))
    png = charts.grouped_bars(models, series, c.t("chart_share"), c.t("axis_share"), c.lang)
    return "share.png", png
