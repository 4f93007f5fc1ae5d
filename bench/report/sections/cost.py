"""Cost: $/h as deployed and what this run's bench time cost per target."""

from __future__ import annotations

import datetime as dt

from bench.report.context import Ctx, fmt
from bench.report.document import Section, Table
from bench.schema import RequestResult


def target_cost(c: Ctx, name: str) -> tuple[float | None, float | None, int, float | None]:
    """(bench hours, this run's $, output tokens, $ per 1M output tokens) for one target."""
    rs = [r for r in c.run.results if r.target == name]
    hours = _bench_seconds(rs) / 3600 if rs else None
    tokens = sum(r.output_tokens or 0 for r in rs if r.ok)
    price = c.run.target(name).usd_per_hour
    if hours is None or not price:
        return hours, None, tokens, None
    cost = hours * price
    return hours, cost, tokens, (cost / tokens * 1e6 if tokens else None)


def _bench_seconds(rs: list[RequestResult]) -> float:
    spans = []
    for r in rs:
        try:
            start = dt.datetime.fromisoformat(r.started_at)
        except ValueError:
            continue
        spans.append((start, start + dt.timedelta(seconds=r.e2e_s or r.ttft_s or 0)))
    if not spans:  # no timestamps: the requests' own durations, back to back
        return sum(r.e2e_s or 0 for r in rs)
    return (max(e for _, e in spans) - min(s for s, _ in spans)).total_seconds()


def _hms(hours: float | None) -> str:
    if hours is None:
        return "—"
    secs = round(hours * 3600)
    return f"{secs // 3600}:{secs % 3600 // 60:02d}:{secs % 60:02d}"


def sec_cost(c: Ctx) -> Section:
    keys = ["target", "price", "bench_time", "run_cost", "out_tokens", "per_m"]
    rows = []
    for name in c.run.target_names():
        hours, cost, tokens, per_m = target_cost(c, name)
        price = c.run.target(name).usd_per_hour
        rows.append([
            c.label(name), fmt(price, 3) if price else c.t("no_price"), _hms(hours),
            fmt(cost, 4), f"{tokens:,}", fmt(per_m, 2),
        ])  # fmt: skip
    return Section("cost", c.t("cost"), [c.t("cost_intro"), Table([c.t(k) for k in keys], rows)])
