"""Speed per model: every target's measurement, then one combined figure per planned card with
each cloud source's projection underneath (and a flag when they disagree)."""

from __future__ import annotations

from bench.report.context import SPEED_WORKLOADS, Ctx, fmt, fmt_stat, prefill_ttft, stat
from bench.report.document import Block, Section, Table


def sec_speed(c: Ctx) -> Section:
    blocks: list[Block] = [c.t("speed_intro", workloads=c.workloads(SPEED_WORKLOADS))]
    if not c.gpu_targets():
        blocks.append(c.t("none_gpu"))
    headers = [c.t(k) for k in ("target", "decode", "prompt", "ttft", "n")]
    for model in c.run.models():
        rows: list[list[str]] = []
        details: set[int] = set()
        for name in c.run.target_names():
            rs = c.rows(model, name, speed_only=True)
            if not rs:
                continue
            rows.append([
                c.label(name), fmt_stat(stat(r.decode_tok_s for r in rs)),
                fmt_stat(stat(r.prompt_tok_s for r in rs), 0),
                fmt_stat(stat(prefill_ttft(r) for r in rs), 2), str(len(rs)),
            ])  # fmt: skip
        for card in c.planned:
            fig = c.figure(model, card)
            if fig is None or fig.measured:
                continue
            flag = f" — {c.t('disagree_short')}" if fig.disagree else ""
            rows.append([
                c.t("combined_row", card=c.card(card), n=len(fig.sources)),
                f"{fig.tok_s:.1f} ({fig.low:.1f}–{fig.high:.1f}){flag}", "—", "—", "—",
            ])  # fmt: skip
            for src, p in fig.sources:
                details.add(len(rows))
                rows.append([
                    f"  {c.t('source_row', target=c.label(src))}",
                    f"{p.projected_tok_s:.1f} ({p.low_tok_s:.1f}–{p.high_tok_s:.1f})",
                    fmt(p.prompt_tok_s, 0), fmt(_ttft(c, model, src, p.prompt_tok_s), 2), "—",
                ])  # fmt: skip
        if rows:
            blocks += [f"**{model}**", Table(headers, rows, frozenset(details))]
    return Section("speed", c.t("speed"), blocks)


def _ttft(c: Ctx, model: str, src: str, projected_prompt: float | None) -> float | None:
    """The source's TTFT scaled by its prefill speed over the projected one (None without)."""
    rows = c.rows(model, src, speed_only=True)
    ttft, prompt = stat(prefill_ttft(r) for r in rows), stat(r.prompt_tok_s for r in rows)
    if not (projected_prompt and ttft and prompt):
        return None
    return ttft.mean * prompt.mean / projected_prompt
