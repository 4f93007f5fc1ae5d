"""Bottom line: the user's question answered first. For each model: does it fit 16 GB, is it
interactive on each planned card; is the faster card's extra speed worth its price; which
models to avoid on 16 GB."""

from __future__ import annotations

import statistics

from bench.report.context import INTERACTIVE_TOK_S, CardFigure, Ctx
from bench.report.document import Block, Section, Table


def sec_bottom_line(c: Ctx) -> Section:
    # The user's models (the profile's) and any other model a GPU target measured; a model only
    # the local CPU demo ran says nothing about the PC.
    # A model whose GPU requests all failed stays: its fit verdict needs no measurement, and
    # the user must see that it has no speed rather than lose the row.
    gpu_ran = {r.model for r in c.run.results if c.gpu_of(r.target)}
    demo_only = set(c.run.models()) - gpu_ran
    models = [m for m in c.profile_models() if m not in demo_only]
    blocks: list[Block] = [c.t("bottom_intro", bar=INTERACTIVE_TOK_S)]
    if not any(c.gpu_of(r.target) for r in c.run.ok):
        blocks.append(c.t("bottom_none"))
    failed = [m for m in models if m in gpu_ran and not any(
        r.model == m and c.gpu_of(r.target) for r in c.run.ok)]  # fmt: skip
    if failed:
        error = next((r.error for r in c.run.results if r.model in failed and r.error), "—")
        blocks.append(c.t("bottom_failed", models=", ".join(failed), error=error))
    headers = [c.t("model"), c.t("fits_col"), *[c.card(card) for card in c.planned]]
    rows, flags = [], []
    for model in models:
        row = [model, _fits(c, model)]
        for card in c.planned:
            fig = c.figure(model, card)
            row.append("—" if fig is None else _speed_cell(c, fig))
            if fig is not None and fig.disagree:
                detail = ", ".join(
                    f"{c.label(src)} {p.projected_tok_s:.1f}" for src, p in fig.sources
                )
                flags.append(f"- {model} / {c.card(card)}: {c.t('disagree_flag', detail=detail)}")
        rows.append(row)
    blocks.append(Table(headers, rows))
    if flags:
        blocks.append("\n".join(flags))
    if len(c.planned) == 2:
        blocks += _worth(c, models)
    blocks += _avoid(c, models)
    return Section("bottom-line", c.t("bottom"), blocks)


def _fits(c: Ctx, model: str) -> str:
    f = c.fit(model, c.pc_gpu)
    if f is None:
        return c.t("fits_unknown")
    if f.verdict == "fits":
        return c.t("fits_yes")
    if f.verdict == "partial":
        return c.t("fits_partial", share=f"{f.gpu_share:.0%}")
    return c.t("fits_no")


def _speed_cell(c: Ctx, fig: CardFigure) -> str:
    verdict = c.t("interactive_yes" if fig.tok_s >= INTERACTIVE_TOK_S else "interactive_no")
    if fig.measured:
        return c.t("measured_cell", verdict=verdict, tok_s=f"{fig.tok_s:.1f}")
    flag = f" ⚠ {c.t('disagree_short')}" if fig.disagree else ""
    return c.t(
        "speed_cell", verdict=verdict, tok_s=f"{fig.tok_s:.1f}", low=f"{fig.low:.0f}",
        high=f"{fig.high:.0f}",
    ) + flag  # fmt: skip


def _worth(c: Ctx, models: list[str]) -> list[Block]:
    a, b = c.planned
    pairs = [(c.pc_decode(m, a), c.pc_decode(m, b)) for m in models]
    pairs = [(x, y) for x, y in pairs if x and y]
    if not pairs:
        title = c.t("worth_title", fast=c.card(b))
        return [f"**{title}**", c.t("worth_unknown", fast=c.card(b), slow=c.card(a))]
    ratios = [y / x for x, y in pairs]
    fast, slow = (b, a) if statistics.median(ratios) >= 1 else (a, b)
    gains = sorted(r - 1 for r in ratios) if fast == b else sorted(1 / r - 1 for r in ratios)
    price_fast = c.cat.gpus[fast].launch_msrp_usd or 0.0
    price_slow = c.cat.gpus[slow].launch_msrp_usd or 0.0
    diff = price_fast - price_slow
    gain = statistics.median(gains)
    kw = dict(
        fast=c.card(fast), slow=c.card(slow), gain=f"{gain:.0%}", n=len(gains),
        lo=f"{gains[0]:+.0%}", hi=f"{gains[-1]:+.0%}", diff=f"${abs(diff):,.0f}",
        fast_p=price_fast, slow_p=price_slow,
    )  # fmt: skip
    if diff <= 0:
        text = c.t("worth_cheaper", **kw)
    else:
        price_pct = diff / price_slow if price_slow else 0.0
        text = c.t("worth_yes" if gain >= price_pct else "worth_no", price_pct=f"{price_pct:.0%}",
                   **kw)  # fmt: skip
    return [f"**{c.t('worth_title', fast=c.card(fast))}**", text]


def _avoid(c: Ctx, models: list[str]) -> list[Block]:
    lines = []
    for model in models:
        f = c.fit(model, c.pc_gpu)
        figs = {card: c.figure(model, card) for card in c.planned}
        speed = (
            ", ".join(f"{c.card(card)} {fig.tok_s:.1f} tok/s" for card, fig in figs.items() if fig)
            or "—"
        )
        if f is not None and f.verdict != "fits":
            lines.append(f"- {c.t('avoid_spill', model=model, fit=_fits(c, model), speed=speed)}")
        elif figs and all(fig and fig.tok_s < INTERACTIVE_TOK_S for fig in figs.values()):
            lines.append(f"- {c.t('avoid_slow', model=model, bar=INTERACTIVE_TOK_S, speed=speed)}")
    body = "\n".join(lines) if lines else c.t("avoid_none")
    return [f"**{c.t('avoid_title')}**", body]
