"""Estimate vs actual: what `rig plan` expected this run to take on each cloud target (stored in
meta.json when the run started) against the wall time the run took and its cost."""

from __future__ import annotations

import datetime as dt
from typing import Any

from bench.report.context import Ctx, fmt, stat
from bench.report.document import Block, Section, Table
from bench.report.sections.cost import _bench_seconds, _hms


def _parse(ts: str) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(ts)
    except (TypeError, ValueError):
        return None


def actual_seconds(c: Ctx, name: str) -> tuple[float | None, bool]:
    """(wall seconds on the target, from spans?) — the sessions' spans when recorded, else
    first request to last answer from results.jsonl."""
    spans = c.run.meta.spans.get(name) or []
    total, found = 0.0, False
    for span in spans:
        start, end = (_parse(span[0]), _parse(span[1])) if len(span) == 2 else (None, None)
        if start and end and end >= start:
            total += (end - start).total_seconds()
            found = True
    if found:
        return total, True
    rows = [r for r in c.run.results if r.target == name]
    return (_bench_seconds(rows) if rows else None), False


def _rate(c: Ctx, name: str, est: dict[str, Any]) -> float | None:
    """The $/h the estimate billed at (compute + disk + IP, as the deploy recorded them), else
    what the target's record gives."""
    if est.get("usd_per_hour") is not None:
        return float(est["usd_per_hour"])
    info = c.run.target(name)
    if info.usd_per_hour is None:
        return None
    side = (info.disk_usd_per_hour or 0.0) + (info.public_ip_usd_per_hour or 0.0)
    return info.usd_per_hour + side


def _error(estimated: float | None, actual: float | None) -> str:
    if estimated is None or not actual:
        return "—"
    return f"{estimated / actual - 1:+.0%}"


def _model_rows(c: Ctx, name: str, est: dict[str, Any]) -> list[list[str]]:
    """Per model: estimated time vs the time between the end of the model before it and its
    own last answer (the runner does models one after the other: warm-ups and loads included),
    and the estimated decode rate vs the measured one (chat workloads)."""
    spans = c.run.meta.spans.get(name) or []
    if len(spans) != 1:
        return []
    prev = _parse(spans[0][0])
    ends: dict[str, dt.datetime] = {}
    for r in c.run.results:
        start = _parse(r.started_at) if r.target == name else None
        if start is None:
            continue
        end = start + dt.timedelta(seconds=r.e2e_s or r.ttft_s or 0)
        ends[r.model] = max(ends.get(r.model, end), end)
    rows = []
    for m in est.get("models") or []:
        model = m["model"]
        end = ends.get(model)
        actual = (end - prev).total_seconds() if end and prev and end >= prev else None
        if end is not None:
            prev = end
        decode = stat(r.decode_tok_s for r in c.rows(model, name, speed_only=True))
        rows.append([
            model, _hms(m["seconds"] / 3600), _hms(None if actual is None else actual / 3600),
            _error(m["seconds"], actual), fmt(m.get("decode_tok_s"), 1),
            fmt(decode.mean if decode else None, 1),
        ])  # fmt: skip
    return rows


def sec_estimate(c: Ctx) -> Section | None:
    estimates = c.run.meta.estimates
    if not estimates:
        return None
    rows, bases = [], set()
    details: list[Block] = []
    for name, est in estimates.items():
        actual_s, from_spans = actual_seconds(c, name)
        bases.add(from_spans)
        rate = _rate(c, name, est)
        est_s = float(est.get("total_s") or 0.0)
        actual_usd = None if rate is None or actual_s is None else rate * actual_s / 3600
        est_usd = est.get("usd")
        if est_usd is None and rate is not None:
            est_usd = rate * est_s / 3600
        low, high = est.get("bench_low_s"), est.get("bench_high_s")
        rows.append([
            c.label(name), _hms(est_s / 3600),
            f"{_hms(low / 3600)}–{_hms(high / 3600)}" if low and high else "—",
            _hms(None if actual_s is None else actual_s / 3600), _error(est_s, actual_s),
            fmt(rate, 3) if rate is not None else c.t("est_no_rate"),
            fmt(est_usd, 2), fmt(actual_usd, 2), _error(est_usd, actual_usd),
        ])  # fmt: skip
        per_model = _model_rows(c, name, est)
        if per_model:
            details.append(f"**{c.t('est_models')}: {c.label(name)}**")
            cols = ("model", "est_time", "actual_time", "error", "est_decode", "decode")
            details.append(Table([c.t(k) for k in cols], per_model))
    keys = ["target", "est_time", "est_range", "actual_time", "error", "rate", "est_usd",
            "actual_usd", "error"]  # fmt: skip
    blocks: list[Block] = [c.t("estimate_intro"), Table([c.t(k) for k in keys], rows)]
    blocks += [c.t("est_basis_spans" if b else "est_basis_results") for b in sorted(bases)]
    return Section("estimate", c.t("estimate"), blocks + details)
