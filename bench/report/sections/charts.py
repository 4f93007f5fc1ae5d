"""Charts: decode speed (measured and one combined projection per card), TTFT, share."""

from __future__ import annotations

from bench import charts
from bench.report.context import Ctx, stat
from bench.report.document import Image, Section


def sec_charts(c: Ctx) -> Section:
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
    decode = charts.grouped_bars(models, series, c.t("chart_decode"), c.t("axis_tok_s"), c.lang)
    ttft_points = {
        c.label(n): [(r.prompt_tokens, r.ttft_s) for r in c.run.ok
                     if r.target == n and r.prompt_tokens is not None and r.ttft_s is not None]
        for n in c.run.target_names()
    }  # fmt: skip
    ttft = charts.scatter(
        ttft_points, c.t("chart_ttft"), c.t("axis_prompt"), c.t("axis_ttft"), c.lang
    )
    share_series = []
    for name in c.run.target_names():
        vals = []
        for m in models:
            s = stat(r.gpu_share for r in c.rows(m, name))
            vals.append(None if s is None or not c.gpu_of(name) else 100 * s.mean)
        if any(v is not None for v in vals):
            share_series.append(charts.Series(c.label(name), vals))
    predicted = [(f.gpu_share * 100 if (f := c.fit(m, c.pc_gpu)) else None) for m in models]
    share_series.append(charts.Series(f"{c.t('predicted_16')} ({c.card(c.pc_gpu)})", predicted))
    share = charts.grouped_bars(models, share_series, c.t("chart_share"), c.t("axis_share"), c.lang)
    return Section("charts", c.t("charts"), [
        Image("decode.png", c.t("chart_decode"), decode),
        Image("ttft.png", c.t("chart_ttft"), ttft),
        Image("share.png", c.t("chart_share"), share),
    ])  # fmt: skip
