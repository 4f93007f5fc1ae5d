"""`python -m bench report RUN_DIR`: what the user reads after a bench run.

Reads only RUN_DIR/results.jsonl, RUN_DIR/meta.json and the catalog. Writes report.md (with
charts/*.png beside it) and a self-contained report.html (the same PNGs as data: URIs).
The document is built once as sections of paragraphs, tables and images, then rendered twice.

Targets of kind "demo" (the embedded CPU engine) are labelled "local CPU demo" everywhere and
never projected onto the PC: CPU numbers say nothing about a GPU.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import json
import statistics
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import charts, mirror
from bench.schema import RequestResult, RunMeta, TargetInfo
from rig.catalog import Catalog, load_catalog

LANGS = ("en", "ja")
DEMO_LABEL = "local CPU demo"
INTERACTIVE_TOK_S = 20.0  # the original conversation's bar for "pleasant to chat with"
SPEED_WORKLOADS = ("chat-en", "chat-ja", "code")  # long-context decode is slower by design
CATEGORY_WORKLOADS = {
    "en": "chat-en",
    "ja": "chat-ja",
    "code": "code",
    "long-context": "long-context",
}

TEXT: dict[str, dict[str, str]] = {
    "en": {
        "title": "gpu-rehearsal report",
        "run": "Run {run_id}: started {started}, finished {finished}; {n_ok} of {n} requests ok.",
        "targets": "Targets",
        "speed": "Speed per model",
        "speed_intro": "Mean ± standard deviation over measured requests ({workloads}). Projected "
        "rows carry a cloud GPU's measurement over to the planned card (decode: memory "
        "bandwidth x calibrated efficiency; prefill and TTFT: tensor FP16 ratio), with the "
        "range the back-test supports.",
        "fit": "16 GB fit",
        "fit_intro": "Weights + KV cache ({kv}) + runtime overhead against {cards}. "
        "partial = whole layers spill to system RAM ({ram} GiB on the PC).",
        "share": "Share of the model on the GPU",
        "share_intro": "size_vram / size from /api/ps, mean per model and target; the last "
        "column is the share the fit predicts on 16 GB.",
        "cost": "Cost",
        "cost_intro": "$/h as recorded at deploy time; this run's cost counts bench time only "
        "(first request to last answer), not deploy or idle time.",
        "verdict": "Verdict",
        "verdict_intro": "Interactive = at least {bar:g} tok/s decode on the card (measured on "
        "the PC when present, else the median projection).",
        "best": "Best model per category",
        "best_intro": "Among models that fit 16 GB (or spill least): en by decode speed; ja by "
        "Japanese-script share; code by tests passed; long-context by correct answers, then "
        "speed.",
        "quality": "Long-context correctness and Japanese-script share",
        "load": "Model load times (not mirrored)",
        "load_intro": "Not mirrored: cloud block storage (EBS gp3 / Azure managed disks) "
        "loads models differently from the PC's NVMe SSD.",
        "pvm": "Projected vs measured",
        "pvm_intro": "The real PC (target kind local) against what the cloud measurements "
        "projected for its card.",
        "method": "Method and assumptions",
        "charts": "Charts",
        "model": "model",
        "target": "target",
        "gpu": "GPU",
        "kind": "kind",
        "instance": "instance",
        "region": "region",
        "spot": "spot",
        "price": "$/h",
        "price_source": "price source",
        "decode": "decode tok/s",
        "prompt": "prompt tok/s",
        "ttft": "TTFT s",
        "n": "n",
        "ctx": "ctx",
        "weights": "weights GiB",
        "kv": "KV GiB",
        "overhead": "overhead GiB",
        "total": "total GiB",
        "verdict_col": "verdict",
        "on_gpu": "on GPU",
        "max_ctx": "max ctx fully on GPU",
        "kv_full": "KV GiB at full context",
        "predicted_16": "predicted on 16 GB",
        "bench_time": "bench time",
        "run_cost": "this run $",
        "out_tokens": "output tokens",
        "per_m": "$ per 1M output tokens",
        "categories": "categories",
        "fits16": "fits 16 GB",
        "interactive": "interactive on {card}",
        "category": "category",
        "best_model": "best model",
        "why": "why",
        "case": "case",
        "correct": "correct",
        "ja_share": "Japanese-script share",
        "load_s": "cold load s (not mirrored)",
        "projected": "projected",
        "range": "range",
        "measured": "measured",
        "error": "error",
        "in_range": "in range",
        "projected_row": "{card} (projected from {target})",
        "yes": "yes",
        "no": "no",
        "cpu_only": "CPU only",
        "not_recorded": "not recorded",
        "none_gpu": "No GPU target in this run: nothing is projected. The local CPU demo "
        "measures the harness on this machine's CPU; its numbers are not GPU numbers and are "
        "never projected onto the PC.",
        "demo_note": "{label}: the embedded llama.cpp engine on this machine's CPU. Shown for "
        "completeness, never projected onto the PC.",
        "no_data": "No data for this section in this run.",
        "unknown_arch": "architecture unknown (not in the catalog)",
        "chart_decode": "Decode speed per model (hatched: projected, with range)",
        "chart_ttft": "Time to first token vs prompt length",
        "chart_share": "Share of the model on the GPU",
        "axis_tok_s": "tokens / s",
        "axis_prompt": "prompt tokens",
        "axis_ttft": "TTFT (s, server-side where reported)",
        "axis_share": "share on GPU (%)",
        "backtest": "Back-test (hold out each published point, predict it from the others):",
        "no_price": "no hourly price",
    },
    "ja": {
        "title": "gpu-rehearsal レポート",
        "run": "実行 {run_id}：開始 {started}、終了 {finished}。{n} 件中 {n_ok} 件成功。",
        "targets": "ターゲット",
        "speed": "モデル別の速度",
        "speed_intro": "計測リクエストの平均 ± 標準偏差（{workloads}）。「予測」の行はクラウド "
        "GPU の計測値を購入予定のカードへ換算したもの（デコード：メモリ帯域 × 較正済み効率、"
        "プリフィルと TTFT：テンソル FP16 性能比）で、バックテストに基づく範囲付き。",
        "fit": "16 GB に収まるか",
        "fit_intro": "重み + KV キャッシュ（{kv}）+ ランタイムのオーバーヘッド を {cards} の "
        "VRAM と比較。partial = 一部の層がシステム RAM にはみ出す（PC は {ram} GiB）。",
        "share": "GPU に載ったモデルの割合",
        "share_intro": "/api/ps の size_vram / size（モデル・ターゲットごとの平均）。最後の列は "
        "16 GB での予測値。",
        "cost": "コスト",
        "cost_intro": "$/h はデプロイ時の記録値。今回の費用はベンチ時間のみ（最初のリクエスト"
        "から最後の応答まで）で、デプロイや待機時間は含まない。",
        "verdict": "判定",
        "verdict_intro": "対話的 = カード上でデコード {bar:g} tok/s 以上（PC の実測があれば"
        "それを、なければ予測の中央値を使用）。",
        "best": "カテゴリ別のおすすめモデル",
        "best_intro": "16 GB に収まる（またははみ出しが最小の）モデルから：英語はデコード速度、"
        "日本語は日本語文字の割合、コードはテスト合格率、長文脈は正答率と速度で選ぶ。",
        "quality": "長文脈の正答と日本語文字の割合",
        "load": "モデルの読み込み時間（換算なし）",
        "load_intro": "換算しない：クラウドのブロックストレージ（EBS gp3 / Azure マネージド"
        "ディスク）と PC の NVMe SSD では読み込み方が異なる。",
        "pvm": "予測と実測の比較",
        "pvm_intro": "実際の PC（kind が local のターゲット）と、クラウドでの計測から予測した値。",
        "method": "手法と前提",
        "charts": "グラフ",
        "model": "モデル",
        "target": "ターゲット",
        "gpu": "GPU",
        "kind": "種類",
        "instance": "インスタンス",
        "region": "リージョン",
        "spot": "スポット",
        "price": "$/h",
        "price_source": "価格の出典",
        "decode": "デコード tok/s",
        "prompt": "プロンプト tok/s",
        "ttft": "TTFT 秒",
        "n": "件数",
        "ctx": "コンテキスト",
        "weights": "重み GiB",
        "kv": "KV GiB",
        "overhead": "オーバーヘッド GiB",
        "total": "合計 GiB",
        "verdict_col": "判定",
        "on_gpu": "GPU 上",
        "max_ctx": "GPU に収まる最大コンテキスト",
        "kv_full": "最大コンテキストでの KV GiB",
        "predicted_16": "16 GB での予測",
        "bench_time": "ベンチ時間",
        "run_cost": "今回の費用 $",
        "out_tokens": "出力トークン",
        "per_m": "出力 100 万トークンあたり $",
        "categories": "カテゴリ",
        "fits16": "16 GB に収まる",
        "interactive": "{card} で対話的",
        "category": "カテゴリ",
        "best_model": "おすすめ",
        "why": "理由",
        "case": "ケース",
        "correct": "正答",
        "ja_share": "日本語文字の割合",
        "load_s": "初回読み込み 秒（換算なし）",
        "projected": "予測",
        "range": "範囲",
        "measured": "実測",
        "error": "誤差",
        "in_range": "範囲内",
        "projected_row": "{card}（{target} からの予測）",
        "yes": "はい",
        "no": "いいえ",
        "cpu_only": "CPU のみ",
        "not_recorded": "記録なし",
        "none_gpu": "この実行には GPU のターゲットがないため、予測はしない。local CPU demo は"
        "このマシンの CPU でハーネスを計測したもので、GPU の数値ではなく、PC へは換算しない。",
        "demo_note": "{label}：このマシンの CPU で動く組み込み llama.cpp エンジン。参考として"
        "表示するが、PC へは換算しない。",
        "no_data": "この実行にはこの項目のデータがない。",
        "unknown_arch": "アーキテクチャ不明（カタログにない）",
        "chart_decode": "モデル別デコード速度（斜線：予測値と範囲）",
        "chart_ttft": "プロンプト長と最初のトークンまでの時間",
        "chart_share": "GPU に載ったモデルの割合",
        "axis_tok_s": "トークン / 秒",
        "axis_prompt": "プロンプトのトークン数",
        "axis_ttft": "TTFT（秒、サーバー計測があればその値）",
        "axis_share": "GPU 上の割合（%）",
        "backtest": "バックテスト（公開値を 1 つずつ除き、残りから予測）：",
        "no_price": "時間単価なし",
    },
}


# ------------------------------------------------------------------------------ the document


@dataclass(frozen=True)
class Table:
    headers: list[str]
    rows: list[list[str]]


@dataclass(frozen=True)
class Image:
    name: str  # file name under charts/
    alt: str
    png: bytes


Block = str | Table | Image


@dataclass
class Section:
    key: str  # stable id (HTML anchor, tests)
    title: str
    blocks: list[Block] = field(default_factory=list)


# ------------------------------------------------------------------------------- the run data


@dataclass(frozen=True)
class Run:
    meta: RunMeta
    results: list[RequestResult]

    @property
    def ok(self) -> list[RequestResult]:
        return [r for r in self.results if r.ok]

    def target(self, name: str) -> TargetInfo:
        found = next((t for t in self.meta.targets if t.name == name), None)
        return found or TargetInfo(name=name, url="", backend="")

    def target_names(self) -> list[str]:
        names = [t.name for t in self.meta.targets]
        return names + sorted({r.target for r in self.results} - set(names))

    def models(self) -> list[str]:
        return list(dict.fromkeys(r.model for r in self.results))


def check_run_dir(run_dir: Path) -> str | None:
    """None when RUN_DIR holds a run; else what is wrong and the fix, in one line."""
    if not run_dir.is_dir():
        return f"'{run_dir}' is not a directory — pass a results/<run-id> directory"
    for name in ("meta.json", "results.jsonl"):
        if not (run_dir / name).is_file():
            return f"'{run_dir}' has no {name} — pass a results/<run-id> directory of a bench run"
    try:
        load_run(run_dir)
    except (ValueError, TypeError, KeyError) as exc:
        return f"'{run_dir}' holds a malformed run ({exc}) — re-run the bench or fix the file"
    return None


def load_run(run_dir: Path) -> Run:
    meta = RunMeta.from_json(json.loads((run_dir / "meta.json").read_text(encoding="utf-8")))
    lines = (run_dir / "results.jsonl").read_text(encoding="utf-8").splitlines()
    results = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            results.append(RequestResult.from_json(json.loads(line)))
        except ValueError:
            if n == len(lines):  # the last line cut short by a crash: what came before stands
                continue
            raise ValueError(f"results.jsonl line {n} is not JSON") from None
    return Run(meta, results)


# ---------------------------------------------------------------------------------- numbers


@dataclass(frozen=True)
class Stat:
    n: int
    mean: float
    sd: float


def prefill_ttft(r: RequestResult) -> float | None:
    """TTFT for the prefill figures: the server's own (load + prefill, no tunnel in it) where it
    reports one, else the client's; None when the prefill came from the server's cache."""
    if r.prefill_cold is False:
        return None
    return r.server_ttft_s if r.server_ttft_s is not None else r.ttft_s


def stat(values: Iterable[float | None]) -> Stat | None:
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
    return Stat(len(vals), statistics.fmean(vals), sd)


def fmt_stat(s: Stat | None, digits: int = 1) -> str:
    return "—" if s is None else f"{s.mean:.{digits}f} ± {s.sd:.{digits}f}"


def fmt(v: float | None, digits: int = 1, suffix: str = "") -> str:
    return "—" if v is None else f"{v:.{digits}f}{suffix}"


def pct(v: float | None) -> str:
    return "—" if v is None else f"{v:.0%}"


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
    projections: dict[tuple[str, str, str], mirror.Projection] = field(default_factory=dict)

    def t(self, key: str, **kw: Any) -> str:
        text = TEXT[self.lang][key]
        return text.format(**kw) if kw else text

    def label(self, name: str) -> str:
        info = self.run.target(name)
        if info.kind == "demo":
            return DEMO_LABEL if self.lang == "en" else f"{DEMO_LABEL}（ローカル CPU デモ）"
        gpu = self.card(info.gpu) if self.gpu_of(name) and info.gpu else ""
        base = info.label or name
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

    def model_gib(self, model: str, rows: list[RequestResult]) -> float | None:
        if model in self.cat.models:
            return self.cat.models[model].download_gb * 1e9 / mirror.GIB_BYTES
        size = stat(r.size_bytes for r in rows)
        return None if size is None else size.mean / mirror.GIB_BYTES

    def fit(self, model: str, gpu: str) -> mirror.FitResult | None:
        if model not in self.cat.models:
            return None
        return mirror.fit(model, self.ctx_of(model), "f16", gpu, self.pc_ram_gib, self.cat)

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

    def pc_decode(self, model: str, card: str) -> float | None:
        """Decode tok/s on the card: measured on the real PC when present, else the median."""
        local = self.local_on(card)
        if local:
            s = stat(r.decode_tok_s for r in self.rows(model, local, speed_only=True))
            if s:
                return s.mean
        values = [
            p.projected_tok_s
            for (m, _src, c), p in self.projections.items()
            if m == model and c == card
        ]
        return statistics.median(values) if values else None


def build_context(run: Run, lang: str, cat: Catalog) -> Ctx:
    pc = run.meta.profile.get("pc", {}) if isinstance(run.meta.profile, dict) else {}
    planned = [k for k, g in cat.gpus.items() if g.role == "planned"]
    pc_gpu = pc.get("gpu") if pc.get("gpu") in cat.gpus else planned[0]
    pc_ram = pc.get("ram") if pc.get("ram") in cat.ram else "ddr5-5600"
    ram_gib = float(pc.get("ram_gb") or mirror.DEFAULT_PC_RAM_GIB)
    ctx = Ctx(run, cat, lang, pc_gpu, pc_ram, ram_gib, planned)
    ctx.projections = _projections(ctx)
    return ctx


def _projections(ctx: Ctx) -> dict[tuple[str, str, str], mirror.Projection]:
    """(model, source target, planned card) -> projection, for every GPU measurement."""
    out = {}
    pc_bw = ctx.cat.ram[ctx.pc_ram].bandwidth_gbs
    for model in ctx.run.models():
        for src in ctx.gpu_targets():
            rows = ctx.rows(model, src, speed_only=True)
            decode = stat(r.decode_tok_s for r in rows)
            gib = ctx.model_gib(model, rows)
            if decode is None or gib is None or decode.mean <= 0:
                continue
            measured_share = stat(r.gpu_share for r in rows)
            share = 1.0 if measured_share is None else min(1.0, measured_share.mean)
            prompt = stat(r.prompt_tok_s for r in rows)
            for card in ctx.planned:
                fitted = ctx.fit(model, card)
                out[(model, src, card)] = mirror.project(
                    ctx.gpu_of(src) or "", decode.mean, gib, share, card,
                    ctx.run.target(src).host_mem_bandwidth_gbs, pc_bw,
                    prompt.mean if prompt else None, ctx.cat,
                    None if fitted is None else fitted.gpu_share,
                )  # fmt: skip
    return out


# --------------------------------------------------------------------------------- sections


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
        rows.append([
            c.label(name), t.kind, gpu, t.instance_type or "—", t.region or "—",
            "—" if t.spot is None else c.t("yes" if t.spot else "no"),
            fmt(t.usd_per_hour, 3), t.price_source or "—",
        ])  # fmt: skip
    keys = ["target", "kind", "gpu", "instance", "region", "spot", "price", "price_source"]
    blocks: list[Block] = [head, Table([c.t(k) for k in keys], rows)]
    blocks += [c.t("demo_note", label=c.label(n)) for n in run.target_names()
               if run.target(n).kind == "demo"]  # fmt: skip
    return Section("targets", c.t("targets"), blocks)


def sec_speed(c: Ctx) -> Section:
    blocks: list[Block] = [c.t("speed_intro", workloads=", ".join(SPEED_WORKLOADS))]
    if not c.gpu_targets():
        blocks.append(c.t("none_gpu"))
    headers = [c.t(k) for k in ("target", "decode", "prompt", "ttft", "n")]
    for model in c.run.models():
        rows = []
        for name in c.run.target_names():
            rs = c.rows(model, name, speed_only=True)
            if not rs:
                continue
            rows.append([
                c.label(name), fmt_stat(stat(r.decode_tok_s for r in rs)),
                fmt_stat(stat(r.prompt_tok_s for r in rs), 0),
                fmt_stat(stat(prefill_ttft(r) for r in rs), 2), str(len(rs)),
            ])  # fmt: skip
        for card in c.planned:
            for src in c.gpu_targets():
                p = c.projections.get((model, src, card))
                if p is None:
                    continue
                ttft = stat(prefill_ttft(r) for r in c.rows(model, src, speed_only=True))
                scale = None
                if p.prompt_tok_s and ttft:
                    prompt = stat(r.prompt_tok_s for r in c.rows(model, src, speed_only=True))
                    scale = ttft.mean * prompt.mean / p.prompt_tok_s if prompt else None
                rows.append([
                    c.t("projected_row", card=c.card(card), target=c.label(src)),
                    f"{p.projected_tok_s:.1f} ({p.low_tok_s:.1f}–{p.high_tok_s:.1f})",
                    fmt(p.prompt_tok_s, 0), fmt(scale, 2), "—",
                ])  # fmt: skip
        if rows:
            blocks += [f"**{model}**", Table(headers, rows)]
    return Section("speed", c.t("speed"), blocks)


def sec_fit(c: Ctx) -> Section:
    cat = c.cat
    profile_models = (c.run.meta.profile.get("bench") or {}).get("models") or []
    models = list(dict.fromkeys([*c.run.models(), *profile_models]))
    by_vram: dict[float, list[str]] = defaultdict(list)
    for card in c.planned:
        by_vram[cat.gpus[card].vram_gb].append(card)
    blocks: list[Block] = []
    keys = ["model", "ctx", "weights", "kv", "overhead", "total", "verdict_col", "on_gpu"]
    headers = [c.t(k) for k in (*keys, "max_ctx", "kv_full")]
    for vram, cards in by_vram.items():
        names = " / ".join(c.card(k) for k in cards)
        blocks.append(c.t("fit_intro", kv="f16", cards=f"{names} ({vram:g} GB)", ram=c.pc_ram_gib))
        rows = []
        for model in models:
            f = c.fit(model, cards[0])
            if f is None:
                rows.append([model, str(c.ctx_of(model)), c.t("unknown_arch"), *["—"] * 7])
                continue
            full = cat.models[model].context_length
            # Beyond its trained context a model degrades: never advertise more than that.
            max_ctx = min(mirror.max_ctx_on_gpu(model, "f16", cards[0]), full)
            kv_full = mirror.fit(model, full, "f16", cards[0], c.pc_ram_gib, cat).kv_cache_gib
            rows.append([
                model, str(f.ctx), f"{f.weights_gib:.2f}", f"{f.kv_cache_gib:.2f}",
                f"{f.overhead_gib:.2f}", f"{f.total_gib:.2f}", f.verdict, pct(f.gpu_share),
                f"{max_ctx:,}" if max_ctx else "—", f"{kv_full:.2f} @ {full:,}",
            ])  # fmt: skip
        blocks.append(Table(headers, rows))
    return Section("fit", c.t("fit"), blocks)


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


def target_cost(c: Ctx, name: str) -> tuple[float | None, float | None, int, float | None]:
    """(bench hours, this run's $, output tokens, $ per 1M output tokens) for one target."""
    rs = [r for r in c.run.results if r.target == name]
    hours = _bench_seconds(rs) / 3600 if rs else None
    tokens = sum(r.output_tokens or 0 for r in rs if r.ok)
    price = c.run.target(name).usd_per_hour
    if hours is None or not price:
        return hours, None, tokens, None
    cost = hours * price
    return hours, cost, tokens, (cost / tokens * 1e6 if tokens else None)


def _bench_seconds(rs: list[RequestResult]) -> float:
    spans = []
    for r in rs:
        try:
            start = dt.datetime.fromisoformat(r.started_at)
        except ValueError:
            continue
        spans.append((start, start + dt.timedelta(seconds=r.e2e_s or r.ttft_s or 0)))
    if not spans:  # no timestamps: the requests' own durations, back to back
        return sum(r.e2e_s or 0 for r in rs)
    return (max(e for _, e in spans) - min(s for s, _ in spans)).total_seconds()


def _hms(hours: float | None) -> str:
    if hours is None:
        return "—"
    secs = round(hours * 3600)
    return f"{secs // 3600}:{secs % 3600 // 60:02d}:{secs % 60:02d}"


def sec_cost(c: Ctx) -> Section:
    keys = ["target", "price", "bench_time", "run_cost", "out_tokens", "per_m"]
    rows = []
    for name in c.run.target_names():
        hours, cost, tokens, per_m = target_cost(c, name)
        price = c.run.target(name).usd_per_hour
        rows.append([
            c.label(name), fmt(price, 3) if price else c.t("no_price"), _hms(hours),
            fmt(cost, 4), f"{tokens:,}", fmt(per_m, 2),
        ])  # fmt: skip
    return Section("cost", c.t("cost"), [c.t("cost_intro"), Table([c.t(k) for k in keys], rows)])


@dataclass(frozen=True)
class ModelFacts:
    model: str
    categories: list[str]  # from the catalog
    benched: list[str]  # further categories whose workload ran on the model
    fits: str  # fit verdict on the PC's card, or "—"
    decode: dict[str, float | None]  # per planned card
    ja_share: float | None
    code_ok: float | None
    long_ok: float | None


def model_facts(c: Ctx, model: str) -> ModelFacts:
    m = c.cat.models.get(model)
    workloads = {r.workload for r in c.run.results if r.model == model}
    # Catalog categories (general = en) say what a model is for; workloads run add candidates.
    cats = [("en" if k == "general" else k) for k in (m.categories if m else [])]
    extra = [k for k, w in CATEGORY_WORKLOADS.items() if w in workloads and k not in cats]
    f = c.fit(model, c.pc_gpu)
    rows = [r for r in c.run.ok if r.model == model]

    def share_true(workload: str) -> float | None:
        judged = [r.correct for r in rows if r.workload == workload and r.correct is not None]
        return sum(judged) / len(judged) if judged else None

    # An answer not judged Japanese (no kana: e.g. Chinese) counts 0, however many ideographs.
    ja = stat(0.0 if r.correct is False else r.ja_share for r in rows if r.workload == "chat-ja")
    return ModelFacts(
        model, cats, extra, f.verdict if f else "—", {k: c.pc_decode(model, k) for k in c.planned},
        ja.mean if ja else None, share_true("code"), share_true("long-context"),
    )  # fmt: skip


def sec_verdict(c: Ctx) -> Section:
    facts = [model_facts(c, m) for m in c.run.models()]
    headers = [c.t("model"), c.t("categories"), c.t("fits16")]
    for card in c.planned:
        headers += [c.t("interactive", card=c.card(card))]
    rows = []
    for f in facts:
        row = [f.model, ", ".join(f.categories) or "—", f.fits]
        for card in c.planned:
            v = f.decode[card]
            row.append("—" if v is None else f"{c.t('yes' if v >= INTERACTIVE_TOK_S else 'no')} "
                       f"({v:.1f} tok/s)")  # fmt: skip
        rows.append(row)
    blocks: list[Block] = [c.t("verdict_intro", bar=INTERACTIVE_TOK_S), Table(headers, rows)]
    best_rows = [_best(c, cat, facts) for cat in CATEGORY_WORKLOADS]
    blocks += [f"**{c.t('best')}**", c.t("best_intro")]
    blocks.append(Table([c.t("category"), c.t("best_model"), c.t("why")], best_rows))
    return Section("verdict", c.t("verdict"), blocks)


def _best(c: Ctx, category: str, facts: list[ModelFacts]) -> list[str]:
    pool = [f for f in facts if category in f.categories] or [
        f for f in facts if category in f.benched
    ]
    if not pool:
        return [category, "—", c.t("no_data")]
    quality = {"ja": "ja_share", "code": "code_ok", "long-context": "long_ok"}.get(category)

    def key(f: ModelFacts) -> tuple[float, float, float]:
        fits = {"fits": 2, "partial": 1}.get(f.fits, 0)
        q = getattr(f, quality) if quality else None
        return (fits, q if q is not None else -1.0, f.decode[c.pc_gpu] or 0.0)

    best = max(pool, key=key)
    why = [f"fit: {best.fits}"]
    if quality and getattr(best, quality) is not None:
        why.append(f"{quality}: {getattr(best, quality):.0%}")
    if best.decode[c.pc_gpu] is not None:
        why.append(f"{c.card(c.pc_gpu)}: {best.decode[c.pc_gpu]:.1f} tok/s")
    return [category, best.model, "; ".join(why)]


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
            ja = stat(0.0 if r.correct is False else r.ja_share
                      for r in rs if r.workload == "chat-ja")  # fmt: skip
            if rs and (cases or ja):
                rows.append([model, c.label(name), cases or "—", pct(ja.mean if ja else None)])
    headers = [c.t("model"), c.t("target"), f"long-context {c.t('correct')}", c.t("ja_share")]
    blocks: list[Block] = [Table(headers, rows)] if rows else [c.t("no_data")]
    return Section("quality", c.t("quality"), blocks)


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


def sec_projected_vs_measured(c: Ctx) -> Section | None:
    locals_ = [(n, c.gpu_of(n)) for n in c.run.target_names() if c.run.target(n).kind == "local"]
    locals_ = [(n, g) for n, g in locals_ if g]
    if not locals_:
        return None
    rows = []
    pc_bw = c.cat.ram[c.pc_ram].bandwidth_gbs
    for name, card in locals_:
        for model in c.run.models():
            measured = stat(r.decode_tok_s for r in c.rows(model, name, speed_only=True))
            for src in c.gpu_targets():
                if src == name or measured is None or card is None:
                    continue
                rows_src = c.rows(model, src, speed_only=True)
                decode, gib = stat(r.decode_tok_s for r in rows_src), c.model_gib(model, rows_src)
                if decode is None or gib is None:
                    continue
                share = stat(r.gpu_share for r in rows_src)
                local_share = stat(r.gpu_share for r in c.rows(model, name))
                p = mirror.project(
                    c.gpu_of(src) or "", decode.mean, gib, min(1.0, share.mean) if share else 1.0,
                    card, c.run.target(src).host_mem_bandwidth_gbs, pc_bw, None, c.cat,
                    min(1.0, local_share.mean) if local_share else None,
                )  # fmt: skip
                inside = p.low_tok_s <= measured.mean <= p.high_tok_s
                rows.append([
                    model, c.label(src), c.label(name), f"{p.projected_tok_s:.1f}",
                    f"{p.low_tok_s:.1f}–{p.high_tok_s:.1f}", f"{measured.mean:.1f}",
                    f"{p.projected_tok_s / measured.mean - 1:+.0%}", c.t("yes" if inside else "no"),
                ])  # fmt: skip
    keys = ["model", "target", "target", "projected", "range", "measured", "error", "in_range"]
    headers = [c.t(k) for k in keys]
    headers[1], headers[2] = f"{headers[1]} (cloud)", f"{headers[2]} (PC)"
    blocks: list[Block] = [c.t("pvm_intro"), Table(headers, rows) if rows else c.t("no_data")]
    return Section("projected-vs-measured", c.t("pvm"), blocks)


def sec_method(c: Ctx) -> Section:
    bt = mirror.back_test(c.cat)
    blocks: list[Block] = [c.t("backtest"), "\n".join(f"- {line}" for line in bt.lines())]
    sample = next(iter(c.projections.values()), None)
    if sample is not None:
        blocks.append("\n".join(f"- {a}" for a in sample.assumptions))
    blocks.append(
        f"- fit overhead: {mirror.CUDA_RESERVE_GIB:.2f} GiB CUDA reserve (Ollama) + compute "
        f"buffer; partial when whole layers spill, no when the spill exceeds the PC's RAM "
        f"minus {mirror.RAM_RESERVED_GIB:g} GiB"
    )
    return Section("method", c.t("method"), blocks)


def sec_charts(c: Ctx) -> Section:
    models = c.run.models()
    series = []
    for name in c.run.target_names():
        vals = [
            (s.mean if (s := stat(r.decode_tok_s for r in c.rows(m, name, True))) else None)
            for m in models
        ]
        if any(v is not None for v in vals):
            series.append(charts.Series(c.label(name), vals))
    for card in c.planned:
        for src in c.gpu_targets():
            ps = [c.projections.get((m, src, card)) for m in models]
            if any(ps):
                series.append(charts.Series(
                    c.t("projected_row", card=c.card(card), target=c.label(src)),
                    [p.projected_tok_s if p else None for p in ps],
                    [p.low_tok_s if p else None for p in ps],
                    [p.high_tok_s if p else None for p in ps], projected=True,
                ))  # fmt: skip
    decode = charts.grouped_bars(models, series, c.t("chart_decode"), c.t("axis_tok_s"), c.lang)
    ttft_points = {
        c.label(n): [(r.prompt_tokens, t) for r in c.run.ok
                     if r.target == n and r.prompt_tokens is not None
                     and (t := prefill_ttft(r)) is not None]
        for n in c.run.target_names()
    }  # fmt: skip
    ttft = charts.scatter(
        ttft_points, c.t("chart_ttft"), c.t("axis_prompt"), c.t("axis_ttft"), c.lang
    )
    share_series = []
    for name in c.run.target_names():
        vals = []
        for m in models:
            s = stat(r.gpu_share for r in c.rows(m, name))
            vals.append(None if s is None or not c.gpu_of(name) else 100 * s.mean)
        if any(v is not None for v in vals):
            share_series.append(charts.Series(c.label(name), vals))
    predicted = [(f.gpu_share * 100 if (f := c.fit(m, c.pc_gpu)) else None) for m in models]
    share_series.append(charts.Series(f"{c.t('predicted_16')} ({c.card(c.pc_gpu)})", predicted))
    share = charts.grouped_bars(models, share_series, c.t("chart_share"), c.t("axis_share"), c.lang)
    return Section("charts", c.t("charts"), [
        Image("decode.png", c.t("chart_decode"), decode),
        Image("ttft.png", c.t("chart_ttft"), ttft),
        Image("share.png", c.t("chart_share"), share),
    ])  # fmt: skip


def build_sections(run: Run, lang: str = "en", cat: Catalog | None = None) -> list[Section]:
    c = build_context(run, lang, cat or load_catalog())
    sections = [
        sec_targets(c), sec_speed(c), sec_fit(c), sec_share(c), sec_cost(c), sec_verdict(c),
        sec_quality(c), sec_load(c), sec_projected_vs_measured(c), sec_charts(c), sec_method(c),
    ]  # fmt: skip
    return [s for s in sections if s is not None]


# -------------------------------------------------------------------------------- rendering


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_md(title: str, sections: list[Section]) -> str:
    out = [f"# {title}", ""]
    for s in sections:
        out += [f"## {s.title}", ""]
        for b in s.blocks:
            if isinstance(b, Table):
                out.append("| " + " | ".join(_md_cell(h) for h in b.headers) + " |")
                out.append("|" + "---|" * len(b.headers))
                out += ["| " + " | ".join(_md_cell(x) for x in row) + " |" for row in b.rows]
            elif isinstance(b, Image):
                out.append(f"![{b.alt}](charts/{b.name})")
            else:
                out.append(b)
            out.append("")
    return "\n".join(out)


CSS = """
body { font-family: system-ui, "Noto Sans CJK JP", "Noto Sans JP", sans-serif; margin: 2rem;
       color: #222; max-width: 1200px; }
table { border-collapse: collapse; margin: 0.5rem 0 1.2rem; font-size: 0.9rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.5rem; text-align: left; }
th { background: #f2f2f2; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5rem 0; }
h2 { border-bottom: 2px solid #4C72B0; padding-bottom: 0.2rem; margin-top: 2rem; }
"""


def _html_text(text: str) -> str:
    """A paragraph, a bold line (**x**) or a list ("- " lines), escaped."""
    lines = text.split("\n")
    if all(line.startswith("- ") for line in lines):
        return "<ul>" + "".join(f"<li>{html.escape(line[2:])}</li>" for line in lines) + "</ul>"
    if text.startswith("**") and text.endswith("**"):
        return f"<h3>{html.escape(text[2:-2])}</h3>"
    return f"<p>{html.escape(text)}</p>"


def render_html(title: str, sections: list[Section], lang: str) -> str:
    body = [f"<h1>{html.escape(title)}</h1>"]
    for s in sections:
        body.append(f'<section id="{s.key}"><h2>{html.escape(s.title)}</h2>')
        for b in s.blocks:
            if isinstance(b, Table):
                head = "".join(f"<th>{html.escape(h)}</th>" for h in b.headers)
                rows = "".join(
                    "<tr>" + "".join(f"<td>{html.escape(x)}</td>" for x in row) + "</tr>"
                    for row in b.rows
                )
                body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
            elif isinstance(b, Image):
                data = base64.b64encode(b.png).decode("ascii")
                body.append(f'<img alt="{html.escape(b.alt)}" src="data:image/png;base64,{data}">')
            else:
                body.append(_html_text(b))
        body.append("</section>")
    return (
        f'<!DOCTYPE html>\n<html lang="{lang}"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head>"
        f"<body>{''.join(body)}</body></html>\n"
    )


def write_report(run_dir: Path, lang: str = "en", cat: Catalog | None = None) -> list[Path]:
    """Write report.md, report.html and charts/*.png into run_dir; return the paths."""
    run = load_run(run_dir)
    sections = build_sections(run, lang, cat)
    title = f"{TEXT[lang]['title']}: {run.meta.run_id}"
    charts_dir = run_dir / "charts"
    charts_dir.mkdir(exist_ok=True)
    written = []
    for s in sections:
        for b in s.blocks:
            if isinstance(b, Image):
                (charts_dir / b.name).write_bytes(b.png)
                written.append(charts_dir / b.name)
    md, page = run_dir / "report.md", run_dir / "report.html"
    md.write_text(render_md(title, sections), encoding="utf-8")
    page.write_text(render_html(title, sections, lang), encoding="utf-8")
    return [md, page, *written]
