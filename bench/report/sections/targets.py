"""Targets: each machine benched, its GPU, instance, region and price."""

from __future__ import annotations

from bench.report.context import Ctx, fmt
from bench.report.document import Block, Section, Table
from bench.report.text import TEXT


def sec_targets(c: Ctx) -> Section:
    run = c.run
    n_ok = len(run.ok)
    head = c.t(
        "run", run_id=run.meta.run_id, started=run.meta.started_at,
        finished=run.meta.finished_at or "—", n_ok=n_ok, n=len(run.results),
    )  # fmt: skip
    rows = []
    for name in run.target_names():
        t = run.target(name)
        gpu = c.card(t.gpu) if c.gpu_of(name) and t.gpu else c.t("cpu_only")
        kind = c.t(f"kind_{t.kind}") if t.kind in ("cloud", "local", "demo") else t.kind
        # The demo's source as the bench writes it (bench/cli.py), said in the report's language.
        own = t.price_source == TEXT["en"]["own_machine"]
        rows.append([
            c.label(name), kind, gpu, t.instance_type or "—", t.region or "—",
            "—" if t.spot is None else c.t("yes" if t.spot else "no"),
            fmt(t.usd_per_hour, 3), c.t("own_machine") if own else (t.price_source or "—"),
        ])  # fmt: skip
    keys = ["target", "kind", "gpu", "instance", "region", "spot", "price", "price_source"]
    blocks: list[Block] = [head, Table([c.t(k) for k in keys], rows)]
    blocks += [c.t("demo_note", label=c.label(n)) for n in run.target_names()
               if run.target(n).kind == "demo"]  # fmt: skip
    return Section("targets", c.t("targets"), blocks)
