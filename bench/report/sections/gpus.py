"""GPUs compared: the planned cards, the cards benched and the alternatives, with the specs the
user asked for beside each (CUDA cores, tensor FP16, INT8 TOPS dense / sparse, tensor-core
generation) and the launch price."""

from __future__ import annotations

from bench.report.context import Ctx
from bench.report.document import Section, Table


def _num(v: float | None, digits: int = 0) -> str:
    return "—" if v is None else f"{v:,.{digits}f}"


def sec_gpus(c: Ctx) -> Section:
    keys = list(dict.fromkeys([
        *c.planned, *(g for n in c.gpu_targets() if (g := c.gpu_of(n))),
        *(k for k, g in c.cat.gpus.items() if g.role == "alternative"),
    ]))  # fmt: skip
    headers = [c.t(k) for k in ("gpu", "vram", "usable", "bandwidth", "cores", "fp16", "int8",
                                "tensor_gen", "msrp")]  # fmt: skip
    rows = []
    for key in keys:
        g = c.cat.gpus[key]
        int8 = f"{_num(g.int8_tops_dense, 1)} / {_num(g.int8_tops_sparse, 1)}"
        rows.append([
            c.card(key), f"{g.vram_gb:g}", f"{g.usable_mib:,}", f"{g.bandwidth_gbs:g}",
            _num(g.cuda_cores), _num(g.tensor_fp16_tflops, 1), int8,
            c.t("gen_name", n=g.tensor_core_gen), _num(g.launch_msrp_usd),
        ])  # fmt: skip
    return Section("gpus", c.t("gpus"), [c.t("gpus_intro"), Table(headers, rows)])
