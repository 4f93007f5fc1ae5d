"""Method and assumptions: the back-test's record and what every projection assumes."""

from __future__ import annotations

from bench import mirror, speed
from bench.report.context import Ctx
from bench.report.document import Block, Section
from rig.version import BENCH


def sec_method(c: Ctx) -> Section:
    bt = speed.back_test(c.cat)
    summary = c.t(
        "backtest_summary", n=len(bt.cases), err=f"{bt.median_abs_error:.1%}",
        cov=f"{bt.coverage:.0%}", width=f"{bt.median_half_width:.0%}",
        command=f"{BENCH} backtest",
    )  # fmt: skip
    blocks: list[Block] = [summary, f"- {_fitted(c, bt.model)}"]
    sample = next(iter(c.projections.values()), None)
    if sample is not None:
        blocks.append("\n".join(f"- {c.say(a)}" for a in sample.assumptions))
    blocks.append(
        "- " + c.t("method_fit_overhead", reserve=mirror.CUDA_RESERVE_GIB,
                   ram=mirror.RAM_RESERVED_GIB)
    )  # fmt: skip
    return Section("method", c.t("method"), blocks)


def _fitted(c: Ctx, model: speed.SpeedModel) -> str:
    """What the fit found (as the last line of `bench backtest`): each family's efficiency and
    each engine's fixed cost per token."""
    sep = c.t("list_sep")
    effs = sep.join(c.t("method_eff", family=f, eff=1 / u) for f, u in model.inv_efficiency.items())
    fixed = sep.join(
        c.t("method_fixed", engine=c.say(speed.engine_label(k)), ms=v * 1000)
        for k, v in model.fixed_s.items()
    )
    return c.t("method_fitted", efficiencies=effs, fixed=fixed)
