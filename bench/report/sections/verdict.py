"""Verdict: interactive or not on each planned card, and the best model per category."""

from __future__ import annotations

from dataclasses import dataclass

from bench.report.context import CATEGORY_WORKLOADS, INTERACTIVE_TOK_S, Ctx, japanese_share, stat
from bench.report.document import Block, Section, Table


@dataclass(frozen=True)
class ModelFacts:
    model: str
    categories: list[str]  # from the catalog
    benched: list[str]  # further categories whose workload ran on the model
    fits: str  # fit verdict on the PC's card, or "—"
    decode: dict[str, float | None]  # per planned card
    ja_share: float | None
    code_ok: float | None
    long_ok: float | None


def model_facts(c: Ctx, model: str) -> ModelFacts:
    m = c.cat.models.get(model)
    workloads = {r.workload for r in c.run.results if r.model == model}
    # Catalog categories (general = en) say what a model is for; workloads run add candidates.
    cats = [("en" if k == "general" else k) for k in (m.categories if m else [])]
    extra = [k for k, w in CATEGORY_WORKLOADS.items() if w in workloads and k not in cats]
    f = c.fit(model, c.pc_gpu)
    rows = [r for r in c.run.ok if r.model == model]

    def share_true(workload: str) -> float | None:
        judged = [r.correct for r in rows if r.workload == workload and r.correct is not None]
        return sum(judged) / len(judged) if judged else None

    ja = stat(japanese_share(r) for r in rows if r.workload == "chat-ja")
    return ModelFacts(
        model, cats, extra, f.verdict if f else "—", {k: c.pc_decode(model, k) for k in c.planned},
        ja.mean if ja else None, share_true("code"), share_true("long-context"),
    )  # fmt: skip


def sec_verdict(c: Ctx) -> Section:
    facts = [model_facts(c, m) for m in c.run.models()]
    headers = [c.t("model"), c.t("categories"), c.t("fits16")]
    for card in c.planned:
        headers += [c.t("interactive", card=c.card(card))]
    rows = []
    for f in facts:
        cats = c.t("list_sep").join(c.t(f"cat_{k}") for k in f.categories) or "—"
        row = [f.model, cats, c.verdict(f.fits)]
        for card in c.planned:
            v = f.decode[card]
            row.append("—" if v is None else f"{c.t('yes' if v >= INTERACTIVE_TOK_S else 'no')} "
                       f"({v:.1f} tok/s)")  # fmt: skip
        rows.append(row)
    blocks: list[Block] = [c.t("verdict_intro", bar=INTERACTIVE_TOK_S), Table(headers, rows)]
    blocks += [f"**{c.t('best')}**", *_best_blocks(c, facts)]
    return Section("verdict", c.t("verdict"), blocks)


def _best_blocks(c: Ctx, facts: list[ModelFacts]) -> list[Block]:
    """The best model per category, among models a GPU (or the PC) measured: a run where
    nothing succeeded, or only the CPU demo did, recommends nothing and says why."""
    if not c.run.ok:
        error = next((r.error for r in c.run.results if r.error), "—")
        return [c.t("best_none", error=error)]
    measured = {r.model for r in c.run.ok if c.gpu_of(r.target) or c.is_pc(r.target)}
    if not measured:
        return [c.t("best_demo_only")]
    best_rows = [_best(c, cat, [f for f in facts if f.model in measured])
                 for cat in CATEGORY_WORKLOADS]  # fmt: skip
    return [c.t("best_intro"), Table([c.t("category"), c.t("best_model"), c.t("why")], best_rows)]


def _best(c: Ctx, category: str, facts: list[ModelFacts]) -> list[str]:
    label = c.t(f"cat_{category}")
    workload = CATEGORY_WORKLOADS[category]
    # Only models with a successful request of the category's own workload compete: a model
    # whose every chat-ja request failed is no one's best Japanese model.
    ran = {r.model for r in c.run.ok if r.workload == workload}
    candidates = [f for f in facts if f.model in ran]
    pool = [f for f in candidates if category in f.categories] or [
        f for f in candidates if category in f.benched
    ]
    if not pool:
        return [label, "—", c.t("best_none_cat", workload=c.workloads([workload]))]
    quality = {"ja": "ja_share", "code": "code_ok", "long-context": "long_ok"}.get(category)

    def key(f: ModelFacts) -> tuple[float, float, float]:
        fits = {"fits": 2, "partial": 1}.get(f.fits, 0)
        q = getattr(f, quality) if quality else None
        return (fits, q if q is not None else -1.0, f.decode[c.pc_gpu] or 0.0)

    best = max(pool, key=key)
    why = [c.t("why_fit", verdict=c.verdict(best.fits))]
    if quality and getattr(best, quality) is not None:
        why.append(c.t(f"why_{quality}", value=f"{getattr(best, quality):.0%}"))
    if best.decode[c.pc_gpu] is not None:
        why.append(c.t("why_speed", card=c.card(c.pc_gpu), tok_s=f"{best.decode[c.pc_gpu]:.1f}"))
    return [label, best.model, c.t("why_sep").join(why)]
