"""Quality: long-context correctness and the share of Japanese script."""

from __future__ import annotations

from collections import defaultdict

from bench.report.context import Ctx, japanese_share, pct, stat
from bench.report.document import Block, Section, Table


def sec_quality(c: Ctx) -> Section:
    rows = []
    for model in c.run.models():
        for name in c.run.target_names():
            rs = c.rows(model, name)
            long_rows = [r for r in rs if r.workload == "long-context"]
            by_case: dict[str, list[bool]] = defaultdict(list)
            for r in long_rows:
                if r.correct is not None:
                    by_case[r.case].append(r.correct)
            cases = ", ".join(f"{k} {sum(v)}/{len(v)}" for k, v in sorted(by_case.items()))
            ja = stat(japanese_share(r) for r in rs if r.workload == "chat-ja")
            if rs and (cases or ja):
                rows.append([model, c.label(name), cases or "—", pct(ja.mean if ja else None)])
    headers = [c.t("model"), c.t("target"), c.t("long_correct"), c.t("ja_share")]
    blocks: list[Block] = [Table(headers, rows)] if rows else [c.t("no_data")]
    return Section("quality", c.t("quality"), blocks)
