"""How long the planned bench takes on one cloud stand-in, and what it costs: `estimate`.

One function, used everywhere a time or a bill is shown before or after spending: `rig plan`
(per target and in total), the deploy confirmations ("estimated 47 min, $0.31; worst case 4 h,
$3.71"), the bench (which stores the estimate of each target in meta.json when a run starts) and
the report (estimate vs actual). Offline and SDK-free: catalog data, the profile, and a price
handed in by the caller (a live spot price, the price in a target's state file, or the catalog's).

The timeline of one stand-in, from boot (the max_hours window counts from there):

  setup   boot, SSH, Ansible (driver, Ollama, watchdog)            an assumption, per image
  pulls   every model: max(download at an assumed rate, the disk's write rate from the catalog)
  bench   per model, exactly the requests the bench plans (bench.runner.plan_work: the same
          workload files, the long-context cases each model's context allows, repetitions),
          one warm-up per context change (as the runner warms up), each warm-up loading the model
          from disk at the catalog's read rate; decode from the calibrated speed model for the
          target's GPU (bench/speed.py: bytes / (bandwidth x efficiency) + a fixed per-token
          cost; the KV cache read grows with the prompt; a model that spills past 16 GB runs
          its CPU part at the cloud host's effective memory rate), prefill from tensor FP16
          throughput at an efficiency taken from one published llama-bench point
  idle    autostop.idle_minutes until the watchdog stops the VM (make destroy sooner saves it)

$ = the running rates (compute at the price handed in + disk + public IP + other) x the hours
billed, never more than the max_hours window; the worst case is rig.cost's one formula.
Every figure carries where it came from: live, catalog (with its date), assumption, projection.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from bench import mirror, speed
from bench.runner import WARMUP_PREDICT, Plan, plan_work
from bench.workload import CHARS_PER_TOKEN, Request
from rig.catalog import Catalog, load_catalog
from rig.compare import GIB
from rig.cost import HourlyRates, stopped_usd_per_day, worst_case_text, worst_case_usd
from rig.profile import DISK_HEADROOM_GB, MODEL_DISK_FACTOR, Profile
from rig.standin import (
    SETUP_MIN,
    DiskSpeed,
    Standin,
    aws_standin,
    azure_standin,
    deployed_standin,
    standin,
    standins,
)

__all__ = [
    "DEFAULT_DOWNLOAD_MBS", "SETUP_MIN", "DiskSpeed", "ModelEstimate", "Standin",
    "TargetEstimate", "aws_standin", "azure_standin", "bench_plan", "deployed_standin",
    "duration", "estimate", "standin", "standins",
]  # fmt: skip

# --- assumptions (each one printed with the figure it produces; flags override the first two)
# Model pulls from Ollama's registry: no published rate for a cloud VM; `--download-mbs`.
DEFAULT_DOWNLOAD_MBS = 50.0
# Prefill is compute-bound: tokens/s = tensor FP16 FLOPS x efficiency / (2 x active parameters).
# The efficiency comes from one published point: llama-bench pp512 on an RTX 4090, llama 7B Q4_0
# (6.74 B parameters) = 7,979.85 t/s (ggml-org/llama.cpp PR #4766, ggerganov's comment of
# 2024-01-10), against the catalog's tensor FP16 figure for that card.
PREFILL_POINT = {"gpu": "rtx-4090", "tok_s": 7979.85, "params_b": 6.74}
PREFILL_SOURCE = "llama.cpp PR #4766 (2024-01-10): RTX 4090 llama 7B Q4_0 pp512 7,979.85 t/s"
# Weights of layers that spilled to the CPU cross to the GPU once per batch of this many prompt
# tokens (Ollama's num_batch 512), at the host's effective memory rate.
PREFILL_BATCH = 512
ENGINE = speed.DEFAULT_ENGINE


def duration(seconds: float) -> str:
    """ "47 min", "4 h 05 min", "35 s"."""
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60:02d} min"


class DiskClock:
    """Seconds of disk I/O, spending the burst allowance first."""

    def __init__(self, disk: DiskSpeed | None):
        self.disk = disk
        self.burst_left = (disk.burst_min * 60) if disk and disk.burst_mbs else 0.0

    def seconds(self, gb: float) -> float:
        if self.disk is None or gb <= 0:
            return 0.0
        mb = gb * 1000
        spent = 0.0
        if self.burst_left > 0 and self.disk.burst_mbs:
            at_burst = min(mb / self.disk.burst_mbs, self.burst_left)
            self.burst_left -= at_burst
            mb -= at_burst * self.disk.burst_mbs
            spent += at_burst
        return spent + mb / self.disk.mbs


# --------------------------------------------------------------------------------- the work


@dataclass
class ModelEstimate:
    model: str
    download_gb: float
    requests: int  # measured requests (the bench's plan_work)
    warmups: int  # one per context change, as the runner warms up
    skipped_cases: list[str]  # cases beyond the model's context: the bench skips them too
    gpu_share: float  # smallest share of weights + KV on the GPU over its context sizes
    verdict: str  # "fits" | "partial" | "no" (cannot load: its requests fail at once)
    decode_tok_s: float | None  # at its first context size (the chat workloads)
    prefill_tok_s: float | None
    load_s: float
    prefill_s: float
    decode_s: float
    seconds: float
    start_s: float = 0.0  # from boot
    end_s: float = 0.0
    in_window: bool = True
    by_workload: dict[str, float] = field(default_factory=dict)  # seconds, warm-ups included


@dataclass
class TargetEstimate:
    """Time and money for one stand-in; `phases` in seconds from boot, in order."""

    target: str
    cloud: str
    instance_type: str
    region: str
    gpu: str
    models: list[ModelEstimate]
    setup_s: float
    pull_s: float
    pull_gb: float
    bench_s: float
    bench_low_s: float
    bench_high_s: float
    idle_s: float
    total_s: float
    window_h: float
    disk_gb: float
    disk_needed_gb: float
    usd_per_hour: float | None  # running rates the estimate bills at
    usd: float | None  # the estimate: running rates x the hours billed (at most the window)
    worst_usd: float | None  # rig.cost.worst_case_usd
    worst_h: float
    worst_text: str  # "worst case 4 h, $3.54", or why it is unknown
    rates: dict[str, float] | None  # compute / disk / public_ip / other the estimate uses
    sources: dict[str, str]  # figure -> where it came from
    unknown: str | None = None
    usd_floor: float | None = None  # the known part when a rate is unknown offline
    not_reached: list[str] = field(default_factory=list)  # models after the window ends
    # A split into windows that each fit (the first window may hold setup and pulls only: an
    # empty list); empty when the run fits, or when no split can fit (see notes).
    runs: list[list[str]] = field(default_factory=list)
    hours_needed: float | None = None  # a max_hours that would fit it all
    worst_needed_usd: float | None = None  # the worst case at hours_needed
    notes: list[str] = field(default_factory=list)
    # The known part of the worst case when a rate is unknown offline ("at least").
    worst_floor_usd: float | None = None
    # What the VM still bills per day once stopped, until `make destroy` (what, and the known
    # part when a rate is unknown offline).
    stopped_usd_per_day: float | None = None
    stopped_floor_usd_per_day: float | None = None
    stopped_what: str = ""

    @property
    def disk_fits(self) -> bool:
        return self.disk_needed_gb <= self.disk_gb

    @property
    def work_s(self) -> float:
        """Seconds from the deploy's start to the bench's last answer: what must fit the
        window (the idle tail after it may be cut short by the stop; that only saves)."""
        return self.setup_s + self.pull_s + self.bench_s

    @property
    def fits_window(self) -> bool:
        return self.work_s <= self.window_h * 3600

    def by_workload(self) -> dict[str, float]:
        """Bench seconds per workload over every model (warm-ups with the workload they start)."""
        out: dict[str, float] = {}
        for m in self.models:
            for w, sec in m.by_workload.items():
                out[w] = out.get(w, 0.0) + sec
        return out

    @property
    def billed_h(self) -> float:
        return min(self.total_s / 3600, self.window_h)

    def line(self) -> str:
        """ "estimated 47 min, $0.31; worst case 4 h, $3.71" — the deploy confirmation's."""
        when = duration(self.total_s)
        if not self.fits_window:
            when += (
                f" (the VM stops after {self.window_h:g} h, before the bench ends: see make plan)"
            )
        if self.usd is not None:
            money = f"${self.usd:.2f}"
        elif self.usd_floor is not None:
            money = f"at least ${self.usd_floor:.2f} + the disk"
        else:
            money = "$ unknown"
        return f"estimated {when}, {money}; {self.worst_text}"

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["disk_fits"] = self.disk_fits
        out["fits_window"] = self.fits_window
        out["by_workload"] = self.by_workload()
        return out


def bench_plan(
    profile: Profile | None,
    cat: Catalog,
    models: list[str] | None = None,
    workloads: list[str] | None = None,
    repetitions: int | None = None,
    quick: bool = False,
    max_ctx: int | None = None,
) -> Plan:
    """The bench's own Plan, built as bench.cli builds it (model contexts from the catalog)."""
    bench = profile.bench if profile else None
    models = list(models if models is not None else (bench.models if bench else []))
    return Plan(
        models=models,
        workloads=list(workloads or (bench.workloads if bench else ["chat-en"])),
        repetitions=repetitions if repetitions is not None else (bench.repetitions if bench else 3),
        quick=quick,
        max_ctx=max_ctx,
        model_ctx={m: cat.models[m].context_length for m in models if m in cat.models},
    )


def prompt_tokens(request: Request) -> int:
    """A prompt's tokens as the workload builds it: CHARS_PER_TOKEN chars of English a token,
    one a character of other scripts (kana, kanji); the server counts the real number."""
    text = "".join(m["content"] for m in request.messages)
    ascii_chars = sum(1 for c in text if ord(c) < 128)
    return math.ceil(ascii_chars / CHARS_PER_TOKEN + (len(text) - ascii_chars))


def prefill_efficiency(cat: Catalog) -> float:
    gpu = cat.gpus[PREFILL_POINT["gpu"]]
    flops = PREFILL_POINT["tok_s"] * 2 * PREFILL_POINT["params_b"] * 1e9
    return flops / ((gpu.tensor_fp16_tflops or math.nan) * 1e12)


class _ModelClock:
    """Seconds a request takes on one target: prefill, decode, load (projections)."""

    def __init__(self, cat: Catalog, s: Standin, model: str, pc_gpu: str):
        self.cat, self.s = cat, s
        self.m = cat.models[model]
        self.gpu = cat.gpus[s.gpu]
        # The bench mirrors the planned card's VRAM on a larger one (the VRAM reserve), so a
        # model spills as it would on the PC; a smaller card (T4) spills on its own.
        pc = cat.gpus[pc_gpu]
        self.fit_gpu = pc_gpu if self.gpu.usable_mib > pc.usable_mib else s.gpu
        self.arch = mirror.arch_from_model(self.m)
        self.model = speed.speed_model(cat)
        self.key = speed.engine_key(ENGINE, self.gpu)
        self.weights_gb = self.m.download_gb
        self.read_gb = self.weights_gb * self.m.read_fraction
        self.active_b = self.m.active_parameters_b or self.m.parameters_b
        self._fits: dict[int, mirror.FitResult] = {}
        tflops = self.gpu.tensor_fp16_tflops
        eff = prefill_efficiency(cat)
        self.prefill_gpu_s = (
            2 * self.active_b * 1e9 / (tflops * 1e12 * eff) if tflops and eff == eff else None
        )

    def fit(self, ctx: int) -> mirror.FitResult:
        if ctx not in self._fits:
            self._fits[ctx] = mirror.fit(
                self.m.tag, ctx, "f16", self.fit_gpu, self.s.ram_gib, self.cat
            )
        return self._fits[ctx]

    def decode_s_per_token(self, ctx: int, filled: float) -> float:
        share = self.fit(ctx).gpu_share
        kv_gb = self.arch.kv_bytes_per_token("f16") * filled / 1e9
        gib = (self.read_gb + kv_gb) / GIB
        cpu = speed.CLOUD_HOST_EFFECTIVE_GBS if share < 1 else None
        return self.model.seconds_per_token(self.gpu, gib, self.key, share, cpu)

    def prefill_s_per_token(self, ctx: int) -> float | None:
        if self.prefill_gpu_s is None:
            return None
        share = self.fit(ctx).gpu_share
        spill = (1 - share) * self.weights_gb / speed.CLOUD_HOST_EFFECTIVE_GBS / PREFILL_BATCH
        return self.prefill_gpu_s + spill

    def request(self, ctx: int, prompt: int, output: int) -> tuple[float, float]:
        """(prefill s, decode s) of one request."""
        pre = self.prefill_s_per_token(ctx)
        dec = self.decode_s_per_token(ctx, prompt + output / 2) * max(output - 1, 0)
        return (prompt * pre if pre is not None else 0.0), dec


def _model_estimate(
    cat: Catalog,
    s: Standin,
    model: str,
    plan: Plan,
    clock: DiskClock,
    pc_gpu: str,
    request_timeout_s: float,
) -> ModelEstimate:
    works = plan_work(plan, [model])
    run = {w.request.key for w in works}
    skipped = [
        f"{w}/{c}" for w, c in dict.fromkeys(r.key for r in plan.requests()) if (w, c) not in run
    ]
    mc = _ModelClock(cat, s, model, pc_gpu)
    ctxs = sorted({w.request.num_ctx for w in works})
    share = min((mc.fit(c).gpu_share for c in ctxs), default=1.0)
    verdict = (
        "no"
        if any(mc.fit(c).verdict == "no" for c in ctxs)
        else mc.fit(ctxs[0] if ctxs else mirror.DEFAULT_CTX).verdict
    )
    first_ctx = ctxs[0] if ctxs else mirror.DEFAULT_CTX
    decode = 1 / mc.decode_s_per_token(first_ctx, 0) if verdict != "no" else None
    pre = mc.prefill_s_per_token(first_ctx)
    prefill = 1 / pre if pre and verdict != "no" else None
    load_s = prefill_s = decode_s = 0.0
    warmups = 0
    warm_ctx: int | None = None
    if verdict == "no":  # cannot load: every request fails at its warm-up, in no time
        return ModelEstimate(model, mc.weights_gb, len(works), 0, skipped, share, verdict,
                             None, None, 0.0, 0.0, 0.0, 0.0)  # fmt: skip
    by_workload: dict[str, float] = {}
    for w in works:
        req = w.request
        before = load_s + prefill_s + decode_s
        if req.num_ctx != warm_ctx:  # the runner warms up at every context change
            warm_ctx = req.num_ctx
            warmups += 1
            load_s += clock.seconds(mc.weights_gb)
            p, d = mc.request(req.num_ctx, prompt_tokens(req), WARMUP_PREDICT)
            prefill_s, decode_s = prefill_s + p, decode_s + d
        p, d = mc.request(req.num_ctx, prompt_tokens(req), req.num_predict)
        if p + d > request_timeout_s:  # the bench fails it there and goes on
            p, d = p * request_timeout_s / (p + d), d * request_timeout_s / (p + d)
        prefill_s, decode_s = prefill_s + p, decode_s + d
        spent = load_s + prefill_s + decode_s - before
        by_workload[req.workload] = by_workload.get(req.workload, 0.0) + spent
    total = load_s + prefill_s + decode_s
    return ModelEstimate(model, mc.weights_gb, len(works), warmups, skipped, share, verdict,
                         decode, prefill, load_s, prefill_s, decode_s, total,
                         by_workload=by_workload)  # fmt: skip


def estimate(
    profile: Profile,
    cat: Catalog | None = None,
    target: Standin | str | None = None,
    *,
    models: list[str] | None = None,
    workloads: list[str] | None = None,
    repetitions: int | None = None,
    quick: bool = False,
    max_ctx: int | None = None,
    plan: Plan | None = None,
    download_mbs: float = DEFAULT_DOWNLOAD_MBS,
    setup_min: float | None = None,
    setup: bool = True,
    pulls: bool = True,
    idle: bool = True,
) -> TargetEstimate:
    """Time and $ of the bench on one stand-in, from boot to the watchdog's idle stop.

    `target`: a Standin (from `standins`, `aws_standin(..., compute_now=live_spot)`,
    `azure_standin(..., cost=live)`), a target name or an instance type (priced offline from
    the catalog); default: the profile's first stand-in. The work is the bench's own plan:
    `plan`, else built from the profile with `models` / `workloads` / `repetitions` / `quick`
    / `max_ctx` overriding it. `setup`, `pulls`, `idle` leave a phase out (the bench, started
    on a provisioned VM whose models are pulled, estimates its own part with all three False).
    """
    cat = cat or load_catalog()
    if target is None:
        found = standins(profile, cat)
        if not found:
            raise ValueError("no stand-in enabled in the profile: name a target")
        target = found[0]
    s = target if isinstance(target, Standin) else standin(profile, cat, target)
    plan = plan or bench_plan(profile, cat, models, workloads, repetitions, quick, max_ctx)
    known = [m for m in plan.models if m in cat.models]
    notes = [f"{m}: not in the catalog, not estimated" for m in plan.models if m not in cat.models]
    sources: dict[str, str] = {}
    clock = DiskClock(s.disk)

    setup_s = (setup_min if setup_min is not None else s.setup_min) * 60 if setup else 0.0
    if setup:
        sources["setup"] = (
            f"assumption: {setup_s / 60:g} min from the deploy's start (where the max_hours "
            "clock starts) to a provisioned VM: stack, boot, SSH, Ansible before the model "
            "pulls (--setup-minutes)"
        )
    pull_gb = sum(cat.models[m].download_gb for m in known)
    pull_s = 0.0
    if pulls and pull_gb:
        download = pull_gb * 1000 / download_mbs
        write = clock.seconds(pull_gb)
        pull_s = max(download, write)
        sources["pulls"] = (
            f"{pull_gb:.1f} GB (catalog models.toml): max(download at {download_mbs:g} MB/s "
            f"(assumption, --download-mbs) = {duration(download)}, disk write "
            f"{s.disk.text() if s.disk else 'rate unknown'} = {duration(write)})"
        )
    if s.disk is not None:
        sources["load"] = f"model loads read the disk at {s.disk.text()} (every warm-up: a bound)"
    else:
        notes.append("disk rate unknown: model loads not counted")
    # The same rule as `rig check` (rig.profile): image + models x 1.1 + headroom.
    disk_needed = round(s.os_disk_gb + pull_gb * MODEL_DISK_FACTOR + DISK_HEADROOM_GB, 1)
    sources["disk_space"] = (
        f"image {s.os_disk_gb:g} GB (catalog images.toml, an estimate) + models {pull_gb:.1f} GB "
        f"x {MODEL_DISK_FACTOR} + {DISK_HEADROOM_GB} GB headroom, as rig check counts"
    )

    pc_gpu = profile.pc.gpu
    t = setup_s + pull_s
    window_s = s.window_h * 3600
    per_model = []
    for m in known:
        e = _model_estimate(cat, s, m, plan, clock, pc_gpu, profile.bench.request_timeout_s)
        e.start_s, e.end_s = t, t + e.seconds
        e.in_window = e.end_s <= window_s
        if e.verdict == "no":
            notes.append(f"{m}: does not fit the GPU plus the VM's RAM here: its requests fail")
        t = e.end_s
        per_model.append(e)
    bench_s = sum(e.seconds for e in per_model)
    band = speed.back_test(cat).band
    dec = sum(e.decode_s for e in per_model)
    bench_low = bench_s - dec + dec * math.exp(-band)
    bench_high = bench_s - dec + dec * math.exp(band)
    g = cat.gpus[s.gpu]
    if not g.tensor_fp16_tflops:
        notes.append(f"{g.name}: no tensor FP16 figure in the catalog: prefill not counted")
    sources["decode"] = (
        f"projection: bench/speed.py fitted to {speed.speed_model(cat).n_points} published "
        f"points, {g.name} {g.bandwidth_gbs:g} GB/s, engine {speed.engine_key(ENGINE, g)}; "
        f"range x/÷ {math.exp(band):.2f} (back-test); answers counted at num_predict (a bound)"
    )
    sources["prefill"] = (
        f"projection: tensor FP16 {g.tensor_fp16_tflops:g} TFLOPS x efficiency "
        f"{prefill_efficiency(cat):.0%} from {PREFILL_SOURCE}; spilled layers cross at "
        f"{speed.CLOUD_HOST_EFFECTIVE_GBS:.1f} GB/s per {PREFILL_BATCH}-token batch"
    )
    sources["requests"] = (
        f"the bench's own plan (bench.runner.plan_work): {', '.join(plan.workloads)} x "
        f"{plan.repetitions} repetitions, cases beyond a model's context skipped"
    )
    idle_s = profile.autostop.idle_minutes * 60.0 if idle else 0.0
    if idle:
        sources["idle"] = (
            f"autostop.idle_minutes = {profile.autostop.idle_minutes}: the watchdog stops the VM "
            "then (make destroy sooner saves it)"
        )
    total = setup_s + pull_s + bench_s + idle_s

    rates = s.now
    hours_billed = min(total / 3600, s.window_h)
    usd = round(rates.running * hours_billed, 2) if rates else None
    floor = round(s.known.running * hours_billed, 2) if s.known and rates is None else None
    worst = worst_case_usd(s.worst, s.worst_h) if s.worst else None
    if s.worst:
        worst_text = worst_case_text(s.worst, s.worst_h)
    elif s.worst_known:  # the known part, as a floor: never a figure that looks complete
        floor_usd = worst_case_usd(s.worst_known, s.worst_h)
        worst_text = f"worst case {s.worst_h:g} h: at least ${floor_usd:.2f} + {s.unknown}"
    else:
        worst_text = f"worst case {s.worst_h:g} h: {s.unknown}"
    sources["compute"] = s.compute_source
    sources.update(s.rate_sources)
    if s.unknown:
        sources["unknown"] = s.unknown
    sources["worst_case"] = "rig.cost.worst_case_usd: compute at its cap + disk + IP, max_hours"

    stopped = s.stopped or s.stopped_known
    est = TargetEstimate(
        target=s.name, cloud=s.cloud, instance_type=s.instance_type, region=s.region, gpu=s.gpu,
        models=per_model, setup_s=setup_s, pull_s=pull_s, pull_gb=round(pull_gb, 1),
        bench_s=bench_s, bench_low_s=bench_low, bench_high_s=bench_high, idle_s=idle_s,
        total_s=total, window_h=s.window_h, disk_gb=s.disk_gb, disk_needed_gb=disk_needed,
        usd_per_hour=round(rates.running, 4) if rates else None, usd=usd, worst_usd=worst,
        worst_h=s.worst_h, worst_text=worst_text,
        rates=_rates_dict(rates or s.known), sources=sources, unknown=s.unknown,
        usd_floor=floor, notes=notes,
        worst_floor_usd=worst_case_usd(s.worst_known, s.worst_h)
        if s.worst is None and s.worst_known
        else None,
        stopped_usd_per_day=stopped_usd_per_day(s.stopped) if s.stopped else None,
        stopped_floor_usd_per_day=(
            stopped_usd_per_day(s.stopped_known) if s.stopped is None and s.stopped_known else None
        ),
        stopped_what=s.stopped_what if stopped else "",
    )  # fmt: skip
    if not est.disk_fits:
        est.notes.append(
            f"disk: {disk_needed:g} GB needed (image + models) but disk_gb = {s.disk_gb:g} — "
            f"set {s.cloud}.disk_gb = {math.ceil(disk_needed / 10) * 10} or bench fewer models"
        )
    if s.disk_type_note:
        est.notes.append(s.disk_type_note)
    if not est.fits_window:
        _split(est, s, setup_s)
    daily = _daily_note(profile, est)
    if daily:
        est.notes.append(daily)
    return est


def _daily_note(profile: Profile, est: TargetEstimate) -> str | None:
    """When autostop.daily_shutdown would cut the run short: the latest deploy start (local
    time) that lets the bench end before it. Both clouds stop the VMs daily at that time."""
    a = profile.autostop
    if a.daily_shutdown == "off" or est.bench_s <= 0:
        return None
    hour, minute = (int(p) for p in a.daily_shutdown.split(":"))
    work_s = est.setup_s + est.pull_s + est.bench_high_s  # the upper end of the range
    need = math.ceil(work_s / 60)
    latest = (hour * 60 + minute - need) % (24 * 60)  # the stop recurs daily
    if need >= 24 * 60:
        return (
            f"autostop.daily_shutdown {a.daily_shutdown} ({a.timezone}) stops the VM every day: "
            f"this run ({duration(work_s)} to the last answer) cannot end before it from any "
            'start time — set daily_shutdown = "off" (max_hours still stops it) or split the run'
        )
    return (
        f"autostop.daily_shutdown {a.daily_shutdown} ({a.timezone}) stops the VM every day: "
        f"deploy after {a.daily_shutdown} or by {latest // 60:02d}:{latest % 60:02d} "
        f"{a.timezone} for the bench to end first"
    )


def _rates_dict(rates: HourlyRates | None) -> dict[str, float] | None:
    if rates is None:
        return None
    return {k: round(v, 5) for k, v in asdict(rates).items()}


def _split(est: TargetEstimate, s: Standin, setup_s: float) -> None:
    """Which models the window does not reach, and runs that each fit one window: the first
    after setup and pulls, each further one after `make deploy-<cloud>` again (it starts the
    VM and moves the max_hours stop; counted as the setup time again), in the bench's order.
    No split is offered when one cannot fit (setup alone, or one model, fills a window)."""
    window = s.window_h * 3600
    est.not_reached = [m.model for m in est.models if not m.in_window]
    per_run = window - setup_s  # a further window: deploy again, then models
    too_long = [m.model for m in est.models if m.seconds > per_run]
    needed = math.ceil((est.setup_s + est.pull_s + est.bench_high_s) / 3600 * 2) / 2
    est.hours_needed = needed  # the upper end of the bench's range, to the half hour
    if s.worst is not None:
        est.worst_needed_usd = worst_case_usd(s.worst, needed)
    if per_run <= 0:
        est.notes.append(
            f"setup ({duration(setup_s)}) alone fills the max_hours window of {s.window_h:g} h: "
            f"nothing would be benched — raise autostop.max_hours to {needed:g}"
        )
        return
    if too_long:
        est.notes.append(
            f"{', '.join(too_long)}: longer than one max_hours window on its own (after "
            f"{duration(setup_s)} of setup) — raise autostop.max_hours, or bench it with fewer "
            "workloads/repetitions"
        )
        return
    runs: list[list[str]] = []
    current: list[str] = []
    budget = window - est.setup_s - est.pull_s
    for m in est.models:
        if m.seconds > budget:
            runs.append(current)  # the first may be empty: that window only pulls
            current, budget = [], per_run
        current.append(m.model)
        budget -= m.seconds
    runs.append(current)
    est.runs = runs if len(runs) > 1 else []
