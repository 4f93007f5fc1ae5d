"""Model load times, shown but not mirrored (cloud block storage is not the PC's SSD)."""

from __future__ import annotations

from bench.report.context import Ctx, fmt
from bench.report.document import Section, Table


def sec_load(c: Ctx) -> Section:
    names = c.run.target_names()
    rows = []
    for model in c.run.models():
        # The first request loads the model; later ones find it resident (load ~0).
        cells = [fmt(max((r.load_s for r in c.rows(model, n) if r.load_s is not None),
                         default=None), 1) for n in names]  # fmt: skip
        rows.append([model, *cells])
    headers = [c.t("model"), *[f"{c.label(n)}: {c.t('load_s')}" for n in names]]
    return Section("load", c.t("load"), [c.t("load_intro"), Table(headers, rows)])
