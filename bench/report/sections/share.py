"""Share of each model on the GPU: measured (/api/ps) and predicted for 16 GB."""

from __future__ import annotations

from bench.report.context import Ctx, pct, stat
from bench.report.document import Section, Table


def sec_share(c: Ctx) -> Section:
    names = c.run.target_names()
    headers = [c.t("model"), *[c.label(n) for n in names], c.t("predicted_16")]
    rows = []
    for model in c.run.models():
        row = [model]
        for name in names:
            rs = c.rows(model, name)
            if not rs:
                row.append("—")
            elif not c.gpu_of(name):
                row.append(c.t("cpu_only"))
            else:
                s = stat(r.gpu_share for r in rs)
                row.append(c.t("not_recorded") if s is None else pct(s.mean))
        f = c.fit(model, c.pc_gpu)
        row.append("—" if f is None else pct(f.gpu_share))
        rows.append(row)
    return Section("share", c.t("share"), [c.t("share_intro"), Table(headers, rows)])
