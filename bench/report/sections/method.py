"""Method and assumptions: the back-test's record and what every projection assumes."""

from __future__ import annotations

from bench import mirror, speed
from bench.report.context import Ctx
from bench.report.document import Block, Section


def sec_method(c: Ctx) -> Section:
    bt = speed.back_test(c.cat)
    summary = c.t(
        "backtest_summary", n=len(bt.cases), err=f"{bt.median_abs_error:.1%}",
        cov=f"{bt.coverage:.0%}", width=f"{bt.median_half_width:.0%}",
    )  # fmt: skip
    blocks: list[Block] = [summary, "\n".join(f"- {line}" for line in bt.lines()[-1:])]
    sample = next(iter(c.projections.values()), None)
    if sample is not None:
        blocks.append("\n".join(f"- {a}" for a in sample.assumptions))
    blocks.append(
        f"- fit overhead: {mirror.CUDA_RESERVE_GIB:.2f} GiB CUDA reserve (Ollama) + compute "
        f"buffer, against the card's usable VRAM (nvidia-smi memory.total); partial when whole "
        f"layers spill, no when the spill exceeds the PC's RAM minus "
        f"{mirror.RAM_RESERVED_GIB:g} GiB"
    )
    return Section("method", c.t("method"), blocks)
