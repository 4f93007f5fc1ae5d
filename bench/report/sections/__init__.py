"""The report's sections, in reading order. A section is a function Ctx -> Section | None
(None: nothing to show for this run) in a module of its own; adding one is that module, its
strings in bench/report/text.py and a line here."""

from __future__ import annotations

from collections.abc import Callable

from bench.report.context import Ctx
from bench.report.document import Section
from bench.report.sections.bottom_line import sec_bottom_line
from bench.report.sections.charts import sec_charts
from bench.report.sections.cost import sec_cost
from bench.report.sections.estimate import sec_estimate
from bench.report.sections.fit import sec_fit
from bench.report.sections.gpus import sec_gpus
from bench.report.sections.load import sec_load
from bench.report.sections.method import sec_method
from bench.report.sections.pvm import sec_projected_vs_measured
from bench.report.sections.quality import sec_quality
from bench.report.sections.share import sec_share
from bench.report.sections.speed_table import sec_speed
from bench.report.sections.targets import sec_targets
from bench.report.sections.verdict import sec_verdict

ORDER: list[Callable[[Ctx], Section | None]] = [
    sec_bottom_line, sec_targets, sec_gpus, sec_speed, sec_fit, sec_share, sec_cost, sec_estimate,
    sec_verdict, sec_quality, sec_load, sec_projected_vs_measured, sec_charts, sec_method,
]  # fmt: skip


def build(c: Ctx) -> list[Section]:
    return [s for s in (section(c) for section in ORDER) if s is not None]
