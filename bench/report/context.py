"""Data assembly: what every section needs, computed once from the run and the catalog.

`Ctx` holds the run, the catalog, the language, every projection of a cloud measurement onto
a planned card, and the combined figure per (model, card) that the report shows: one answer
per card, whatever the number of cloud targets that measured the model.

Targets of kind "demo" (the embedded CPU engine) are labelled "local CPU demo" everywhere and
never projected onto the PC: CPU numbers say nothing about a GPU.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from bench import mirror, speed
from bench.notes import say
from bench.report.run import Run
from bench.report.text import TEXT
from bench.schema import RequestResult
from rig.catalog import Catalog

DEMO_LABEL = TEXT["en"]["demo_label"]
INTERACTIVE_TOK_S = 20.0  # the plan's bar for "pleasant to chat with"
SPEED_WORKLOADS = ("chat-en", "chat-ja", "code")  # long-context decode is slower by design
CATEGORY_WORKLOADS = {
    "en": "chat-en",
    "ja": "chat-ja",
    "code": "code",
    "long-context": "long-context",
}
# The bench's backends and the engine each runs, for the speed model's fixed per-token cost.
BACKEND_ENGINE = {"ollama": "ollama", "openai": "llama-server"}


# ---------------------------------------------------------------------------------- numbers


@dataclass(frozen=True)
class Stat:
    n: int
    mean: float
    sd: float


def stat(values: Iterable[float | None]) -> Stat | None:
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
    return Stat(len(vals), statistics.fmean(vals), sd)


def prefill_ttft(r: RequestResult) -> float | None:
    """TTFT for the prefill figures: the server's own (load + prefill, no tunnel in it) where it
    reports one, else the client's; None when the prefill came from the server's cache."""
    if r.prefill_cold is False:
        return None
    return r.server_ttft_s if r.server_ttft_s is not None else r.ttft_s


def japanese_share(r: RequestResult) -> float | None:
    """A chat-ja answer judged not Japanese (no kana: e.g. Chinese) counts 0, however many
    ideographs it has."""
    return 0.0 if r.correct is False else r.ja_share


def fmt_stat(s: Stat | None, digits: int = 1) -> str:
    return "—" if s is None else f"{s.mean:.{digits}f} ± {s.sd:.{digits}f}"


def fmt(v: float | None, digits: int = 1, suffix: str = "") -> str:
    return "—" if v is None else f"{v:.{digits}f}{suffix}"


def pct(v: float | None) -> str:
    return "—" if v is None else f"{v:.0%}"


# ------------------------------------------------------------------------- combined figures


@dataclass(frozen=True)
class CardFigure:
    """One answer for a model on a planned card: measured on the PC, or combined projections."""

    tok_s: float
    low: float
    high: float
    measured: bool  # True: the real PC measured it (no range)
    disagree: bool  # the cloud sources' projections lie outside each other's range
    sources: list[tuple[str, speed.SpeedProjection]] = field(default_factory=list)


# ------------------------------------------------------------------------------------- ctx


@dataclass
class Ctx:
    """Everything the sections share: the run, the catalog, the language, derived facts."""

    run: Run
    cat: Catalog
    lang: str
    pc_gpu: str
    pc_ram: str
    pc_ram_gib: float
    planned: list[str]
    projections: dict[tuple[str, str, str], speed.SpeedProjection] = field(default_factory=dict)

    def t(self, key: str, **kw: Any) -> str:
        text = TEXT[self.lang][key]
        return text.format(**kw) if kw else text

    def say(self, text: str) -> str:
        """A speed-model explanation (bench.notes.Note) in the report's language."""
        return say(text, TEXT[self.lang])

    def verdict(self, verdict: str) -> str:
        """A fit verdict (fits | partial | no) as the tables show it."""
        return self.t(f"verdict_{verdict}") if f"verdict_{verdict}" in TEXT[self.lang] else verdict

    def workloads(self, names: Iterable[str]) -> str:
        return self.t("list_sep").join(
            self.t(f"wl_{w}") if f"wl_{w}" in TEXT[self.lang] else w for w in names
        )

    def label(self, name: str) -> str:
        info = self.run.target(name)
        if info.kind == "demo":
            return self.t("demo_label")
        gpu = self.card(info.gpu) if self.gpu_of(name) and info.gpu else ""
        base = info.label or name
        if info.kind == "local" and self.lang != "en":  # the bench wrote the label in English
            base = self.t("label_local") if name == "local" else self.t("label_pc", name=name)
        return f"{base} ({gpu})" if gpu and gpu not in base else base

    def gpu_of(self, name: str) -> str | None:
        info = self.run.target(name)
        return info.gpu if info.kind != "demo" and info.gpu in self.cat.gpus else None

    def card(self, key: str) -> str:
        """Short GPU name: "RTX 4060 Ti 16GB", "Tesla T4", "A10G"."""
        name = self.cat.gpus[key].name.split(" (")[0]
        return name.replace("NVIDIA ", "").replace("GeForce ", "")

    def rows(self, model: str, target: str, speed_only: bool = False) -> list[RequestResult]:
        rows = [r for r in self.run.ok if r.model == model and r.target == target]
        if speed_only:
            fast = [r for r in rows if r.workload in SPEED_WORKLOADS]
            return fast or rows
        return rows

    def ctx_of(self, model: str) -> int:
        seen = [r.num_ctx for r in self.run.results if r.model == model and r.num_ctx]
        return max(seen) if seen else mirror.DEFAULT_CTX

    def weights_gib(self, model: str, rows: list[RequestResult]) -> float | None:
        """What the GPU must hold: the catalog's download size, else the size Ollama reported."""
        if model in self.cat.models:
            return self.cat.models[model].download_gb * 1e9 / mirror.GIB_BYTES
        size = stat(r.size_bytes for r in rows)
        return None if size is None else size.mean / mirror.GIB_BYTES

    def model_gib(self, model: str, rows: list[RequestResult]) -> float | None:
        """What one decoded token reads: the weights, or for a mixture of experts only its
        active share (deepseek-coder-v2:16b reads 2.4B of 15.7B parameters a token)."""
        weights = self.weights_gib(model, rows)
        m = self.cat.models.get(model)
        return None if weights is None else weights * (m.read_fraction if m else 1.0)

    def fit(self, model: str, gpu: str) -> mirror.FitResult | None:
        if model not in self.cat.models:
            return None
        return mirror.fit(model, self.ctx_of(model), "f16", gpu, self.pc_ram_gib, self.cat)

    def profile_models(self) -> list[str]:
        """The run's models, then any other model the profile planned (for the fit)."""
        profile = self.run.meta.profile if isinstance(self.run.meta.profile, dict) else {}
        planned = (profile.get("bench") or {}).get("models") or []
        return list(dict.fromkeys([*self.run.models(), *planned]))

    def is_pc(self, name: str) -> bool:
        """The user's own machine (kind local): its measurements are the real thing."""
        return self.run.target(name).kind == "local"

    def gpu_targets(self) -> list[str]:
        """Targets whose numbers may be projected: a catalog GPU, not the demo."""
        return [n for n in self.run.target_names() if self.gpu_of(n)]

    def local_on(self, card: str) -> str | None:
        """A real-PC target with this card, whose measurements beat any projection."""
        return next(
            (n for n in self.run.target_names()
             if self.run.target(n).kind == "local" and self.gpu_of(n) == card),
            None,
        )  # fmt: skip

    def figure(self, model: str, card: str) -> CardFigure | None:
        """The one answer for `model` on `card`: the PC's own measurement when the run has
        one, else every cloud target's projection combined (disagreement flagged)."""
        local = self.local_on(card)
        if local:
            s = stat(r.decode_tok_s for r in self.rows(model, local, speed_only=True))
            if s:
                return CardFigure(s.mean, s.mean, s.mean, True, False)
        sources = [
            (src, p) for (m, src, c), p in self.projections.items() if m == model and c == card
        ]
        if not sources:
            return None
        tok_s, low, high, disagree = speed.combine(p for _, p in sources)
        return CardFigure(tok_s, low, high, False, disagree, sources)

    def pc_decode(self, model: str, card: str) -> float | None:
        """Decode tok/s on the card: measured on the real PC when present, else combined."""
        f = self.figure(model, card)
        return None if f is None else f.tok_s


def build_context(run: Run, lang: str, cat: Catalog) -> Ctx:
    pc = run.meta.profile.get("pc", {}) if isinstance(run.meta.profile, dict) else {}
    planned = [k for k, g in cat.gpus.items() if g.role == "planned"]
    pc_gpu = pc.get("gpu") if pc.get("gpu") in cat.gpus else planned[0]
    pc_ram = pc.get("ram") if pc.get("ram") in cat.ram else "ddr5-5600"
    ram_gib = float(pc.get("ram_gb") or mirror.DEFAULT_PC_RAM_GIB)
    ctx = Ctx(run, cat, lang, pc_gpu, pc_ram, ram_gib, planned)
    ctx.projections = _projections(ctx)
    return ctx


def _projections(ctx: Ctx) -> dict[tuple[str, str, str], speed.SpeedProjection]:
    """(model, source target, planned card) -> projection, for every GPU measurement."""
    out = {}
    pc_bw = ctx.cat.ram[ctx.pc_ram].bandwidth_gbs
    for model in ctx.run.models():
        for src in ctx.gpu_targets():
            rows = ctx.rows(model, src, speed_only=True)
            decode = stat(r.decode_tok_s for r in rows)
            gib, weights = ctx.model_gib(model, rows), ctx.weights_gib(model, rows)
            if decode is None or gib is None or decode.mean <= 0:
                continue
            measured_share = stat(r.gpu_share for r in rows)
            share = 1.0 if measured_share is None else min(1.0, measured_share.mean)
            prompt = stat(r.prompt_tok_s for r in rows)
            engine = BACKEND_ENGINE.get(ctx.run.target(src).backend, speed.DEFAULT_ENGINE)
            for card in ctx.planned:
                fitted = ctx.fit(model, card)
                if fitted is not None and fitted.verdict == "no":
                    continue  # cannot run on that card at all: no speed to project
                try:
                    out[(model, src, card)] = mirror.project(
                        ctx.gpu_of(src) or "", decode.mean, gib, share, card,
                        ctx.run.target(src).host_mem_bandwidth_gbs, pc_bw,
                        prompt.mean if prompt else None, ctx.cat,
                        None if fitted is None else fitted.gpu_share, engine, weights,
                    )  # fmt: skip
                except mirror.MirrorError:
                    # A measurement the card cannot have made (e.g. a share the VRAM cannot
                    # hold): it is shown as measured, never projected.
                    continue
    return out
