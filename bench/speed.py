"""Decode speed on any catalog GPU, fitted to the catalog's published points.

The model (kept because it wins the held-out checks; see `back_test`):

    seconds per token = weight bytes / (bandwidth x efficiency[family]) + fixed[engine]

- Decode reads every weight once per token, so the first term is memory traffic. Its efficiency
  is shared by an architecture family (turing, ampere, ada, blackwell; HBM cards apart), never
  per card: a per-card factor fits the points better but lets a faster card of the same family
  be projected slower than a slower one (the L4, power-limited to 72 W, measures below an RTX
  4060 Ti with more bandwidth), and it leaves cards without points to borrow from unlike cards.
- The second term is the per-token cost that does not scale with bytes: kernel launches,
  sampling, synchronisation, the server's own loop. It explains what a bandwidth ratio cannot:
  an RTX 4090 (1,008 GB/s) and an A100 (2,039 GB/s) decode Llama-2-7B Q4_0 at nearly the same
  speed. It depends on the engine and whether it runs with CUDA graphs: one value per engine,
  and a separate one without them (llama.cpp builds before 2024-06, and any card below compute
  capability 8.0, the T4, where ggml-cuda.cu disables them), which cut it sharply.
- Why this form (`python -m bench backtest --compare`, on the catalog of 2026-12-02 as reviewed):
  bandwidth-only (no fixed cost): median error 12.6 %, range +/-40 %: misses the width goal.
  per-card efficiency + fixed cost: median error 6.6 %, but one same-architecture pair comes
  out with the faster card slower (the L4 below the RTX 4060 Ti), which a buyer must never
  be told. This form: median error 7.7 %, 88 % of truths inside a +/-21 % range, monotone.
  The form, the prior and the band quantile were chosen looking at this same back-test, so
  these figures flatter the model somewhat; only new published points can test it afresh.
  (The earlier one-parameter model, efficiency per card with fallbacks across architectures,
  missed the published A10G/L4 pairs by a median 58 %.) Efficiency is an effective figure:
  with the fixed cost beside it, a family may sit at the bound of 1.

Fitting: weighted least squares on relative time error (each point counts the same whatever its
speed), a weak ridge prior (efficiency 0.8, fixed cost 2 ms) so that a family or engine with few
points stays sane, efficiency <= 1 and fixed cost >= 0 enforced. The model is linear in
1/efficiency and in the fixed costs, so a small normal-equation solve does it (no SciPy).

The range printed with a projection is the back-test's own record: the 90th percentile of its
absolute log errors, widened for the part of a model that runs on the CPU (no published point).
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from functools import cache
from typing import Any

from bench.notes import Note
from rig.catalog import Catalog, load_catalog
from rig.catalog.schema import CalibrationPoint, Gpu
from rig.compare import GIB

CUDA_GRAPHS_SINCE = "2024-06"  # llama.cpp PR 6766 (CUDA graphs) landed in May 2024
# llama.cpp enables CUDA graphs only from compute capability 8.0 (Ampere): ggml-cuda.cu sets
# disable_due_to_gpu_arch below GGML_CUDA_CC_AMPERE. PR 25749 ("Enable CUDA graphs on
# Volta+Turing", 2026-07-16) lowered the gate to Volta; Ollama 0.9.2, which the rehearsal
# pins (ansible/roles/ollama/defaults/main.yml), vendors a ggml from long before it. So a T4
# decodes without CUDA graphs: its per-token fixed cost is the no-graphs one of its engine.
GRAPHS_MIN_CC = 8.0
TURING_GRAPHS_SINCE = "2026-08"  # llama.cpp builds after PR 25749 (not Ollama's vendored ggml)
# Engines built on llama.cpp. llama-cli is llama.cpp's own `main` / `llama-cli` program.
LLAMA_CPP_ENGINES = ("llama-bench", "llama-server", "llama-cli", "ollama")
NO_GRAPHS = "(no CUDA graphs)"
LLAMA_CPP_PROGRAMS = ("llama-bench", "llama-server", "llama-cli")  # llama.cpp's own, same kernels
PRIOR_EFFICIENCY = 0.8
PRIOR_FIXED_S = 0.002
RIDGE = 0.05  # prior weight, against points that each weigh 1 (relative error)
BAND_QUANTILE = 0.9  # the printed range covers this share of the back-test's errors
# The CPU part of a partially offloaded model has no published point: its time is taken as
# uncertain by this factor either way (an estimate, stated in every projection that uses it).
CPU_PART_UNCERTAINTY = 0.5
# Share of DDR peak bandwidth that llama.cpp's CPU decode reaches on a desktop (about 12-14 t/s
# for a 7B Q4_0 on dual-channel DDR5-5600). No calibration point exists for it: an estimate.
CPU_DECODE_EFFICIENCY = 0.6
# A cloud VM's share of its host's memory bandwidth is not published. Ollama issue 12770 shows
# a T4 instance at 2.3 t/s on llama3.1 8B Q4_K_M (4.56 GiB) after a CPU fallback: 11.3 GB/s
# achieved. Used as the effective CPU-side rate of a cloud host when the target gives none.
CLOUD_HOST_EFFECTIVE_GBS = 2.3 * 4.56 * GIB
DEFAULT_ENGINE = "ollama"  # what the rehearsal and the planned PC run


class SpeedModelError(ValueError):
    """The catalog cannot support a fit (a data bug, not user input)."""


def family(gpu: Gpu) -> str:
    """The efficiency group of a card: its architecture, HBM cards apart."""
    return f"{gpu.arch}-hbm" if gpu.hbm else gpu.arch


def cuda_graphs(engine: str, gpu: Gpu | None = None, measured: str | None = None) -> bool:
    """Whether a llama.cpp-based engine decodes with CUDA graphs on this card.

    `measured` is the month of a published measurement; None means a run of today's pinned
    builds (Ollama 0.9.2), which predate graphs on cards below compute capability 8.0.
    """
    if engine not in LLAMA_CPP_ENGINES:
        return True  # not llama.cpp: its own launch overhead, fitted as its own group
    if measured is not None and measured < CUDA_GRAPHS_SINCE:
        return False
    if gpu is not None and float(gpu.compute_capability) < GRAPHS_MIN_CC:
        return engine != "ollama" and measured is not None and measured >= TURING_GRAPHS_SINCE
    return True


def engine_key(engine: str, gpu: Gpu | None = None, measured: str | None = None) -> str:
    """The fixed-cost group: the engine, and for llama.cpp-based engines running without
    CUDA graphs (builds before them, or a card below Ampere) a group of its own: without
    graphs every kernel is launched on its own, a per-token cost that bandwidth cannot
    explain."""
    return engine if cuda_graphs(engine, gpu, measured) else f"{engine} {NO_GRAPHS}"


def engine_label(key: str) -> str:
    """An engine key as text: the key itself, a Note where it carries the no-graphs suffix
    (so the report can translate that part; the engine's own name is data)."""
    if key.endswith(f" {NO_GRAPHS}"):
        return Note("note_engine_no_graphs", engine=key.removesuffix(f" {NO_GRAPHS}"))
    return key


def point_key(p: CalibrationPoint, cat: Catalog) -> str:
    return engine_key(p.engine, cat.gpus[p.gpu], p.measured)


# ------------------------------------------------------------------------------------ fitting


# The model forms the back-test compares (`python -m bench backtest --compare`). The first is
# the one projections use; the others are kept to show why it was chosen.
VARIANTS = {
    "two-term": "bytes / (bandwidth x efficiency per family) + fixed cost per engine",
    "bandwidth-only": "bytes / (bandwidth x efficiency per family), no fixed cost",
    "per-card": "bytes / (bandwidth x efficiency per card) + fixed cost per engine",
}
DEFAULT_VARIANT = "two-term"


@dataclass(frozen=True)
class SpeedModel:
    inv_efficiency: dict[str, float]  # efficiency group (family, or card) -> 1 / efficiency
    fixed_s: dict[str, float]  # engine key -> seconds per token
    n_points: int
    variant: str = DEFAULT_VARIANT

    def group(self, gpu: Gpu) -> str:
        """The efficiency group of a card under this variant (per-card falls back to family)."""
        if self.variant == "per-card" and gpu.key in self.inv_efficiency:
            return gpu.key
        return family(gpu)

    def efficiency(self, fam: str) -> tuple[float, Note]:
        """(efficiency, basis) for a group; groups without points take the others' mean."""
        if fam in self.inv_efficiency:
            return 1 / self.inv_efficiency[fam], Note("note_fitted")
        gddr = [u for f, u in self.inv_efficiency.items() if not f.endswith("-hbm")]
        pool = gddr or list(self.inv_efficiency.values())
        return 1 / statistics.fmean(pool), Note("note_mean_families")

    def fixed(self, key: str) -> tuple[float, Note]:
        """(seconds, basis) for an engine key. Without a point of its own: a sibling llama.cpp
        program (llama-bench, llama-server, llama-cli run the same kernels) with CUDA graphs
        in the same state, then the same engine in the other state, then the mean of all."""
        if self.variant == "bandwidth-only":
            return 0.0, Note("note_no_fixed_cost")
        if key in self.fixed_s:
            return self.fixed_s[key], Note("note_fitted")
        label = engine_label(key)
        base, sep, state = key.partition(" (")
        if base in LLAMA_CPP_PROGRAMS:
            for sib in LLAMA_CPP_PROGRAMS:
                if f"{sib}{sep}{state}" in self.fixed_s:
                    basis = Note("note_sibling", engine=label, sibling=sib)
                    return self.fixed_s[f"{sib}{sep}{state}"], basis
        same = [v for k, v in self.fixed_s.items() if k.partition(" (")[0] == base]
        if same:
            return statistics.fmean(same), Note("note_other_builds", engine=label, base=base)
        return statistics.fmean(self.fixed_s.values()), Note("note_mean_engines", engine=label)

    def seconds_per_token(
        self,
        gpu: Gpu,
        model_gib: float,
        engine: str,
        share: float = 1.0,
        cpu_gbs: float | None = None,
    ) -> float:
        """Decode time per token: GPU layers at fitted bandwidth, spilled layers from RAM."""
        gb = model_gib * GIB
        eff, _ = self.efficiency(self.group(gpu))
        fixed, _ = self.fixed(engine)
        t = share * gb / (gpu.bandwidth_gbs * eff) + fixed
        if share < 1:
            if not cpu_gbs:
                raise ValueError("a CPU bandwidth is needed when part of the model is on the CPU")
            t += (1 - share) * gb / cpu_gbs
        return t

    def predict_point(self, p: CalibrationPoint, cat: Catalog) -> float:
        """tok/s the model gives a published point from its card, bytes and engine alone."""
        return 1 / self.seconds_per_token(cat.gpus[p.gpu], p.model_gib, point_key(p, cat))


def fit_model(
    points: Sequence[CalibrationPoint], cat: Catalog, variant: str = DEFAULT_VARIANT
) -> SpeedModel:
    """Least squares on relative error, linear in 1/efficiency and the fixed costs."""
    if not points:
        raise SpeedModelError("no usable calibration point to fit the speed model")
    if variant not in VARIANTS:
        raise SpeedModelError(f"unknown speed model variant {variant!r}")

    def group(p: CalibrationPoint) -> str:
        return p.gpu if variant == "per-card" else family(cat.gpus[p.gpu])

    fams = sorted({group(p) for p in points})
    keys = [] if variant == "bandwidth-only" else sorted({point_key(p, cat) for p in points})
    names = [("u", f) for f in fams] + [("c", k) for k in keys]
    prior = [1 / PRIOR_EFFICIENCY] * len(fams) + [PRIOR_FIXED_S] * len(keys)
    scale = [1.0] * len(fams) + [PRIOR_FIXED_S] * len(keys)
    rows: list[list[float]] = []
    for p in points:
        t = 1 / p.tok_s
        row = [0.0] * len(names)
        gpu = cat.gpus[p.gpu]
        row[fams.index(group(p))] = p.model_gib * GIB / gpu.bandwidth_gbs / t
        if keys:
            row[len(fams) + keys.index(point_key(p, cat))] = 1 / t
        rows.append(row)
    lower = [1.0] * len(fams) + [0.0] * len(keys)  # efficiency <= 1, fixed cost >= 0
    fixed_at: dict[int, float] = {}
    for _ in range(len(names) + 1):  # active set: clamp a violated bound, solve the rest again
        x = _ridge_solve(rows, [1.0] * len(rows), prior, scale, fixed_at)
        violated = [i for i, v in enumerate(x) if v < lower[i] - 1e-12 and i not in fixed_at]
        if not violated:
            break
        for i in violated:
            fixed_at[i] = lower[i]
    return SpeedModel(
        inv_efficiency={f: x[i] for i, (_, f) in enumerate(names[: len(fams)])},
        fixed_s={k: x[len(fams) + i] for i, (_, k) in enumerate(names[len(fams) :])},
        n_points=len(points),
        variant=variant,
    )


def _ridge_solve(
    rows: list[list[float]],
    y: list[float],
    prior: list[float],
    scale: list[float],
    fixed_at: dict[int, float],
) -> list[float]:
    """argmin |A x - y|^2 + RIDGE^2 |(x - prior) / scale|^2, some coordinates held fixed."""
    n = len(prior)
    free = [i for i in range(n) if i not in fixed_at]
    resid = [yi - sum(r[i] * v for i, v in fixed_at.items()) for r, yi in zip(rows, y, strict=True)]
    m = [[0.0] * (len(free) + 1) for _ in free]
    for a, fi in enumerate(free):
        w = (RIDGE / scale[fi]) ** 2
        m[a][a] += w
        m[a][-1] += w * prior[fi]
        for r, ri in zip(rows, resid, strict=True):
            m[a][-1] += r[fi] * ri
            for b, fj in enumerate(free):
                m[a][b] += r[fi] * r[fj]
    sol = _gauss(m)
    x = [0.0] * n
    for a, fi in enumerate(free):
        x[fi] = sol[a]
    for i, v in fixed_at.items():
        x[i] = v
    return x


def _gauss(m: list[list[float]]) -> list[float]:
    """Solve an augmented n x (n+1) system by Gaussian elimination with partial pivoting."""
    n = len(m)
    for col in range(n):
        pivot = max(range(col, n), key=lambda r: abs(m[r][col]))
        m[col], m[pivot] = m[pivot], m[col]
        if abs(m[col][col]) < 1e-18:
            raise SpeedModelError("the speed model's normal equations are singular")
        for r in range(n):
            if r != col and m[r][col]:
                f = m[r][col] / m[col][col]
                m[r] = [a - f * b for a, b in zip(m[r], m[col], strict=True)]
    return [m[i][n] / m[i][i] for i in range(n)]


def usable_points(cat: Catalog) -> list[CalibrationPoint]:
    return [p for p in cat.calibration if p.use]


@cache
def _model_for(cat_id: int) -> SpeedModel:
    cat = _CATALOGS[cat_id]
    return fit_model(usable_points(cat), cat)


_CATALOGS: dict[int, Catalog] = {}


def speed_model(cat: Catalog | None = None) -> SpeedModel:
    """The model fitted to every usable point of the catalog (cached per catalog object)."""
    cat = cat or load_catalog()
    _CATALOGS[id(cat)] = cat
    return _model_for(id(cat))


# --------------------------------------------------------------------------------- back-test


@dataclass(frozen=True)
class BackTestCase:
    """One held-out published point and what the model, fitted without it, said of it."""

    gpu: str
    model: str
    series: str
    source_gpu: str | None  # the same series' measurement it was projected from; None: absolute
    measured: float
    predicted: float
    band: float  # log half-width of the range printed with the prediction

    @property
    def error(self) -> float:
        return self.predicted / self.measured - 1

    @property
    def low(self) -> float:
        return self.predicted * math.exp(-self.band)

    @property
    def high(self) -> float:
        return self.predicted * math.exp(self.band)

    @property
    def inside(self) -> bool:
        return self.low <= self.measured <= self.high

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(
            error=round(self.error, 4), low=round(self.low, 2), high=round(self.high, 2),
            inside=self.inside, predicted=round(self.predicted, 2),
        )  # fmt: skip
        return out


@dataclass(frozen=True)
class BackTest:
    cases: list[BackTestCase]
    gpus: list[str]  # the GPUs with at least two usable points, whose points were held out
    model: SpeedModel  # fitted to every usable point (what projections use)
    band: float  # the band projections print: this back-test's own error quantile

    @property
    def median_abs_error(self) -> float:
        return statistics.median(abs(c.error) for c in self.cases)

    @property
    def coverage(self) -> float:
        return sum(c.inside for c in self.cases) / len(self.cases)

    @property
    def median_half_width(self) -> float:
        return statistics.median(math.exp(c.band) - 1 for c in self.cases)

    def per_point(self) -> list[tuple[float, bool]]:
        """(error, inside) per held-out point, its sources' projections combined as the report
        combines cloud targets (geometric mean). The headline figures count every source
        pairing as a case, so a crowd-sourced series with many cards (LocalScore, 7) weighs
        more there; this view counts each published point once."""
        groups: dict[tuple[str, str, str, float], list[BackTestCase]] = {}
        for c in self.cases:
            groups.setdefault((c.gpu, c.model, c.series, c.measured), []).append(c)
        out = []
        for cs in groups.values():
            pred = math.exp(statistics.fmean(math.log(c.predicted) for c in cs))
            out.append(
                (pred / cs[0].measured - 1, abs(math.log(pred / cs[0].measured)) <= cs[0].band)
            )
        return out

    def per_gpu_median(self) -> float:
        """The median over held-out GPUs of each GPU's median absolute error."""
        by: dict[str, list[float]] = {}
        for c in self.cases:
            by.setdefault(c.gpu, []).append(abs(c.error))
        return statistics.median(statistics.median(v) for v in by.values())

    def lines(self) -> list[str]:
        head = (
            f"{'held-out GPU':24} {'model':34} {'from':24} {'measured':>8} {'predicted':>9} "
            f"{'range':>15} {'error':>7}  in"
        )
        out = [head, "-" * len(head)]
        for c in self.cases:
            rng = f"{c.low:.1f}-{c.high:.1f}"
            out.append(
                f"{c.gpu:24} {c.model[:34]:34} {c.source_gpu or '(model only)':24} "
                f"{c.measured:8.1f} {c.predicted:9.1f} {rng:>15} {c.error:+7.1%}  "
                f"{'yes' if c.inside else 'NO'}"
            )
        out += [
            f"cases: {len(self.cases)} from {len(self.gpus)} GPUs with >= 2 usable points",
            f"median absolute error: {self.median_abs_error:.1%} (goal <= 15%)",
            f"truth inside the printed range: {self.coverage:.0%} (goal >= 80%)",
            f"median range half-width: +/-{self.median_half_width:.1%} (goal < +/-25%)",
            "the same, each published point once (its sources combined): median error "
            f"{statistics.median(abs(e) for e, _ in self.per_point()):.1%}, inside the range "
            f"{sum(i for _, i in self.per_point()) / len(self.per_point()):.0%} of "
            f"{len(self.per_point())}; median of the per-GPU medians {self.per_gpu_median():.1%}",
            "fitted: "
            + ", ".join(f"{f} efficiency {1 / u:.2f}" for f, u in self.model.inv_efficiency.items())
            + "; "
            + ", ".join(f"{k} {v * 1000:.2f} ms/token" for k, v in self.model.fixed_s.items()),
        ]
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "cases": [c.as_dict() for c in self.cases],
            "gpus": self.gpus,
            "median_abs_error": round(self.median_abs_error, 4),
            "coverage": round(self.coverage, 4),
            "median_half_width": round(self.median_half_width, 4),
            "per_point_median_abs_error": round(
                statistics.median(abs(e) for e, _ in self.per_point()), 4
            ),
            "per_gpu_median_abs_error": round(self.per_gpu_median(), 4),
            "band": round(self.band, 4),
            "efficiency": {f: round(1 / u, 4) for f, u in self.model.inv_efficiency.items()},
            "fixed_ms": {k: round(v * 1000, 3) for k, v in self.model.fixed_s.items()},
        }


def _without_campaign(points: Sequence[CalibrationPoint], i: int) -> list[CalibrationPoint]:
    """Every point but the i-th and the others its publisher measured on that card in that
    series."""
    p = points[i]
    return [q for j, q in enumerate(points) if j != i and (q.gpu, q.series) != (p.gpu, p.series)]


def _same_series(p: CalibrationPoint, q: CalibrationPoint) -> bool:
    return q.series == p.series and q.model == p.model and q.quant == p.quant and q.gpu != p.gpu


def _held_out_predictions(
    points: Sequence[CalibrationPoint], cat: Catalog, variant: str = DEFAULT_VARIANT
) -> list[tuple[int, str | None, float]]:
    """(point index, source GPU or None, predicted tok/s) for each held-out point of a GPU
    with at least two points, from a model fitted without it. A point with same-series
    measurements on other GPUs is projected from each of them (as the report projects a cloud
    run onto the PC); one without is predicted from the model alone.

    The fit leaves out the held-out point's whole campaign on that card (every point of the
    same series and GPU), not the point alone: a sibling measured in the same run on the same
    card (quack-ai's two A10G models) would hand the fit the card's efficiency, which a real
    projection onto a PC card never has from the cloud run that measured it."""
    counts = Counter(p.gpu for p in points)
    out = []
    for i, p in enumerate(points):
        if counts[p.gpu] < 2:
            continue
        rest = _without_campaign(points, i)
        m = fit_model(rest, cat, variant)
        t_p = m.seconds_per_token(cat.gpus[p.gpu], p.model_gib, point_key(p, cat))
        sources = [q for q in rest if _same_series(p, q)]
        for q in sources:
            t_q = m.seconds_per_token(cat.gpus[q.gpu], q.model_gib, point_key(q, cat))
            out.append((i, q.gpu, q.tok_s * t_q / t_p))
        if not sources:
            out.append((i, None, 1 / t_p))
    return out


def _band_of(
    points: Sequence[CalibrationPoint], cat: Catalog, variant: str = DEFAULT_VARIANT
) -> float:
    """The log half-width that covers BAND_QUANTILE of these points' own held-out errors."""
    held = _held_out_predictions(points, cat, variant)
    errors = sorted(abs(math.log(pred / points[i].tok_s)) for i, _, pred in held)
    if not errors:
        raise SpeedModelError("no GPU has two usable points: the range cannot be calibrated")
    return errors[min(len(errors) - 1, math.ceil(BAND_QUANTILE * len(errors)) - 1)]


def back_test(cat: Catalog | None = None, variant: str = DEFAULT_VARIANT) -> BackTest:
    """Hold out each usable point of every GPU with at least two; predict it from the rest.

    The range printed with each prediction is calibrated on the other points only (their own
    leave-one-out errors, nested), so the coverage figure is an honest out-of-sample check.
    `variant` names a model form of VARIANTS (the default is the one projections use).
    """
    cat = cat or load_catalog()
    return _back_test(id(_remember(cat)), variant)


def _remember(cat: Catalog) -> Catalog:
    _CATALOGS[id(cat)] = cat
    return cat


@cache
def _back_test(cat_id: int, variant: str) -> BackTest:
    cat = _CATALOGS[cat_id]
    points = usable_points(cat)
    counts = Counter(p.gpu for p in points)
    bands: dict[int, float] = {}
    cases = []
    for i, src, pred in _held_out_predictions(points, cat, variant):
        if i not in bands:
            bands[i] = _band_of(_without_campaign(points, i), cat, variant)
        p = points[i]
        cases.append(BackTestCase(p.gpu, f"{p.model} {p.quant}", p.series, src, p.tok_s, pred,
                                  bands[i]))  # fmt: skip
    return BackTest(
        cases,
        sorted(g for g, n in counts.items() if n >= 2),
        fit_model(points, cat, variant),
        _band_of(points, cat, variant),
    )


def monotonicity_violations(
    model: SpeedModel, cat: Catalog, model_gib: float = 4.4, engine: str = DEFAULT_ENGINE
) -> int:
    """Same-architecture pairs where the card with more bandwidth is predicted slower (each
    card with its own fixed-cost group: CUDA graphs depend on the card)."""
    gpus = list(cat.gpus.values())

    def t(g: Gpu) -> float:
        return model.seconds_per_token(g, model_gib, engine_key(engine, g))

    return sum(
        1
        for a in gpus
        for b in gpus
        if a.arch == b.arch and a.bandwidth_gbs > b.bandwidth_gbs and t(a) > t(b)
    )


# -------------------------------------------------------------------------------- projection


@dataclass
class SpeedProjection:
    """A decode speed carried from one GPU to another, with its range and its reasons."""

    gpu_from: str
    gpu_to: str
    measured_tok_s: float
    model_gib: float
    gpu_share: float
    gpu_share_to: float
    projected_tok_s: float
    low_tok_s: float
    high_tok_s: float
    engine: str
    prompt_tok_s: float | None = None  # projected prefill, when a measured one was given
    assumptions: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return rounded_dict(self, 2)


def rounded_dict(record: Any, digits: int) -> dict[str, Any]:
    """A dataclass as a dict for JSON, its float fields rounded to `digits` (nested values
    as they are)."""
    out = asdict(record)
    for key, value in out.items():
        if isinstance(value, float):
            out[key] = round(value, digits)
    return out


def carry(
    cat: Catalog,
    gpu_from: str,
    tok_s: float,
    model_gib: float,
    share_from: float,
    to: str,
    share_to: float,
    host_cpu_gbs: float,
    pc_cpu_gbs: float,
    engine: str = DEFAULT_ENGINE,
) -> SpeedProjection:
    """The projection itself (inputs already checked): measured x t(source) / t(target).

    Dividing by the model's own time on the source keeps what the model does not know (the
    model file's kernels, MoE reading fewer bytes, the host); multiplying by its time on the
    target carries it over.
    """
    m = speed_model(cat)
    src, dst = cat.gpus[gpu_from], cat.gpus[to]
    key_src, key_dst = engine_key(engine, src), engine_key(engine, dst)
    t_src = m.seconds_per_token(src, model_gib, key_src, share_from, host_cpu_gbs)
    t_dst = m.seconds_per_token(dst, model_gib, key_dst, share_to, pc_cpu_gbs)
    projected = tok_s * t_src / t_dst
    band = back_test(cat).band
    cpu_part = (1 - share_to) * model_gib * GIB / pc_cpu_gbs / t_dst if share_to < 1 else 0.0
    src_cpu = (1 - share_from) * model_gib * GIB / host_cpu_gbs / t_src if share_from < 1 else 0.0
    z = band + math.log1p(CPU_PART_UNCERTAINTY * max(cpu_part, src_cpu))
    # Each assumption is a Note: English here and in `bench project`, Japanese in the report.
    notes: list[str] = []
    for key in dict.fromkeys((key_src, key_dst)):
        fixed, fixed_basis = m.fixed(key)
        notes.append(
            Note("note_decode_form", ms=fixed * 1000, engine=engine_label(key), basis=fixed_basis)
        )
    slow = next((g for g, k in ((src, key_src), (dst, key_dst)) if k.endswith(NO_GRAPHS)), None)
    if key_src != key_dst and slow is not None:
        notes.append(
            Note("note_no_graphs", gpu=slow.name, min_cc=GRAPHS_MIN_CC,
                 cc=slow.compute_capability)
        )  # fmt: skip
    for gpu in (src, dst):
        eff, basis = m.efficiency(m.group(gpu))
        notes.append(
            Note("note_card", gpu=gpu.name, bandwidth=gpu.bandwidth_gbs, eff=eff,
                 family=family(gpu), basis=basis)
        )  # fmt: skip
    notes.append(Note("note_range", factor=math.exp(band), quantile=BAND_QUANTILE))
    if share_to != share_from:
        notes.append(Note("note_share", measured=share_from, target=share_to))
    if min(share_from, share_to) < 1:
        notes.append(
            Note("note_cpu_part", cpu=1 - min(share_from, share_to), host=host_cpu_gbs,
                 pc=pc_cpu_gbs, widen=CPU_PART_UNCERTAINTY)
        )  # fmt: skip
    notes.append(Note("note_same_setup"))
    return SpeedProjection(
        gpu_from, to, tok_s, model_gib, share_from, share_to, projected,
        projected * math.exp(-z), projected * math.exp(z), key_dst, assumptions=notes,
    )  # fmt: skip


def combine(projections: Iterable[SpeedProjection]) -> tuple[float, float, float, bool]:
    """One figure from several sources' projections of the same model onto the same card:
    (geometric mean, low, high, disagree). Sources disagree when one's projection lies outside
    another's range; the combined range then spans all of theirs."""
    ps = list(projections)
    if not ps:
        raise ValueError("nothing to combine")
    centre = math.exp(statistics.fmean(math.log(p.projected_tok_s) for p in ps))
    disagree = any(
        not (a.low_tok_s <= b.projected_tok_s <= a.high_tok_s) for a in ps for b in ps if a is not b
    )
    if disagree:
        return centre, min(p.low_tok_s for p in ps), max(p.high_tok_s for p in ps), True
    # Agreeing sources: the band of the method, around the combined figure (the sources share
    # the model's error, so averaging them does not narrow it).
    half = statistics.fmean(math.log(p.high_tok_s / p.projected_tok_s) for p in ps)
    return centre, centre * math.exp(-half), centre * math.exp(half), False
