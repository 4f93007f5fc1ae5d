"""Projected vs measured: the real PC against what the cloud runs projected for it."""

from __future__ import annotations

from bench import mirror
from bench.report.context import BACKEND_ENGINE, Ctx, stat
from bench.report.document import Block, Section, Table


def sec_projected_vs_measured(c: Ctx) -> Section | None:
    locals_ = [(n, c.gpu_of(n)) for n in c.run.target_names() if c.run.target(n).kind == "local"]
    locals_ = [(n, g) for n, g in locals_ if g]
    if not locals_:
        return None
    rows = []
    pc_bw = c.cat.ram[c.pc_ram].bandwidth_gbs
    for name, card in locals_:
        for model in c.run.models():
            measured = stat(r.decode_tok_s for r in c.rows(model, name, speed_only=True))
            for src in c.gpu_targets():
                if src == name or measured is None or card is None:
                    continue
                rows_src = c.rows(model, src, speed_only=True)
                decode, gib = stat(r.decode_tok_s for r in rows_src), c.model_gib(model, rows_src)
                if decode is None or gib is None:
                    continue
                share = stat(r.gpu_share for r in rows_src)
                local_share = stat(r.gpu_share for r in c.rows(model, name))
                engine = BACKEND_ENGINE.get(c.run.target(src).backend, "ollama")
                try:
                    p = mirror.project(
                        c.gpu_of(src) or "", decode.mean, gib,
                        min(1.0, share.mean) if share else 1.0, card,
                        c.run.target(src).host_mem_bandwidth_gbs, pc_bw, None, c.cat,
                        min(1.0, local_share.mean) if local_share else None, engine,
                        c.weights_gib(model, rows_src),
                    )  # fmt: skip
                except mirror.MirrorError:
                    continue
                inside = p.low_tok_s <= measured.mean <= p.high_tok_s
                rows.append([
                    model, c.label(src), c.label(name), f"{p.projected_tok_s:.1f}",
                    f"{p.low_tok_s:.1f}–{p.high_tok_s:.1f}", f"{measured.mean:.1f}",
                    f"{p.projected_tok_s / measured.mean - 1:+.0%}", c.t("yes" if inside else "no"),
                ])  # fmt: skip
    keys = ["model", "target", "target", "projected", "range", "measured", "error", "in_range"]
    headers = [c.t(k) for k in keys]
    headers[1] = c.t("pvm_cloud", target=headers[1])
    headers[2] = c.t("pvm_pc", target=headers[2])
    blocks: list[Block] = [c.t("pvm_intro"), Table(headers, rows) if rows else c.t("no_data")]
    return Section("projected-vs-measured", c.t("pvm"), blocks)
