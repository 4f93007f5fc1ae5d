"""16 GB fit: weights + KV cache + overhead on each planned card's usable VRAM."""

from __future__ import annotations

from collections import defaultdict

from bench import mirror
from bench.report.context import Ctx, pct
from bench.report.document import Block, Section, Table


def sec_fit(c: Ctx) -> Section:
    cat = c.cat
    profile_models = (c.run.meta.profile.get("bench") or {}).get("models") or []
    models = list(dict.fromkeys([*c.run.models(), *profile_models]))
    by_vram: dict[float, list[str]] = defaultdict(list)
    for card in c.planned:
        by_vram[cat.gpus[card].vram_gb].append(card)
    blocks: list[Block] = []
    keys = ["model", "ctx", "weights", "kv", "overhead", "total", "verdict_col", "on_gpu"]
    headers = [c.t(k) for k in (*keys, "max_ctx", "kv_full")]
    for vram, cards in by_vram.items():
        names = " / ".join(c.card(k) for k in cards)
        blocks.append(c.t("fit_intro", kv="f16", cards=f"{names} ({vram:g} GB)", ram=c.pc_ram_gib))
        rows = []
        for model in models:
            f = c.fit(model, cards[0])
            if f is None:
                rows.append([model, str(c.ctx_of(model)), c.t("unknown_arch"), *["—"] * 7])
                continue
            full = cat.models[model].context_length
            # Beyond its trained context a model degrades: never advertise more than that.
            max_ctx = min(mirror.max_ctx_on_gpu(model, "f16", cards[0]), full)
            kv_full = mirror.fit(model, full, "f16", cards[0], c.pc_ram_gib, cat).kv_cache_gib
            rows.append([
                model, str(f.ctx), f"{f.weights_gib:.2f}", f"{f.kv_cache_gib:.2f}",
                f"{f.overhead_gib:.2f}", f"{f.total_gib:.2f}", c.verdict(f.verdict),
                pct(f.gpu_share),
                f"{max_ctx:,}" if max_ctx else "—", f"{kv_full:.2f} @ {full:,}",
            ])  # fmt: skip
        blocks.append(Table(headers, rows))
    return Section("fit", c.t("fit"), blocks)
