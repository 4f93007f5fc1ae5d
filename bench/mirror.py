"""Mirror the planned PC: will a model fit 16 GB, and how fast will it decode there?

Two pure parts, both importable by the report:

- `fit` / `fit_from_show`: weights + KV cache + runtime overhead against a GPU's VRAM.
- `project`: a decode speed measured on one GPU carried over to another. Decode reads every
  weight once per generated token, so it is bounded by memory bandwidth; how much of that bound
  a GPU reaches (its efficiency) comes from the catalog's published points. A partially
  offloaded model adds a CPU part read from system memory. `back_test` checks the method
  against the published points themselves.

Nothing here does I/O except `load_catalog()` (cached, read-only).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from rig.catalog import Catalog, load_catalog
from rig.catalog.schema import CalibrationPoint, Model
from rig.compare import GIB, decode_efficiency

KvType = Literal["f16", "q8_0", "q4_0"]
Verdict = Literal["fits", "partial", "no"]

MIB = 2**20
GIB_BYTES = 2**30

# Bytes per KV-cache element. q8_0 / q4_0 are GGML blocks of 32 values: 32 x 1 byte + an f16
# scale = 34 bytes, and 16 bytes of nibbles + an f16 scale = 18 bytes (ggml-common.h).
KV_BYTES: dict[str, float] = {"f16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32}

# Ollama keeps this much VRAM free on every CUDA GPU for the CUDA context and cuBLAS workspace
# (discover/gpu.go: cudaMinimumMemory = 457 MiB); its scheduler never plans into it.
CUDA_RESERVE_GIB = 457 * MIB / GIB_BYTES
# llama.cpp's compute (graph scratch) buffer when the architecture is too little known to use
# Ollama's formula (catalog entries carry no head count or vocabulary): about 0.5 GiB for
# 7-8B models at 2k-8k contexts and batch 512 (the formula below gives 0.25-0.55 GiB for
# Llama 3 8B there). A rehearsal estimate, stated as such in every result that uses it.
COMPUTE_BUFFER_FALLBACK_GIB = 0.5
BATCH = 512  # Ollama's default num_batch, which sizes the compute buffer
# Planned-PC system memory a spilled model may use: total minus what the OS, a desktop and
# the Ollama runner itself keep (an estimate; on 32 GB that leaves 28 GiB for weights + KV).
RAM_RESERVED_GIB = 4.0
DEFAULT_PC_RAM_GIB = 32.0
DEFAULT_CTX = 4096  # Ollama's default context below 24 GiB of VRAM (OLLAMA_CONTEXT_LENGTH)

# Share of DDR peak bandwidth that llama.cpp's CPU decode reaches on a desktop (about 12-14 t/s
# for a 7B Q4_0 on dual-channel DDR5-5600). No calibration point exists for it: an estimate.
CPU_DECODE_EFFICIENCY = 0.6
# A cloud VM's share of its host's memory bandwidth is not published. Ollama issue 12770 shows
# a T4 instance at 2.3 t/s on llama3.1 8B Q4_K_M (4.56 GiB) after a CPU fallback: 11.3 GB/s
# achieved. Used as the effective CPU-side rate of a cloud host when the target gives none.
CLOUD_HOST_EFFECTIVE_GBS = 2.3 * 4.56 * GIB


class MirrorError(ValueError):
    """Bad input to fit/project: `arg` names the argument, the message says the fix."""

    def __init__(self, arg: str, message: str):
        self.arg = arg
        super().__init__(message)


# --------------------------------------------------------------------------------------- fit


@dataclass(frozen=True)
class Arch:
    """What the memory estimate needs from a model. Optional fields refine the overhead."""

    block_count: int
    head_count_kv: int
    key_length: int
    value_length: int
    weights_bytes: float
    head_count: int | None = None
    embedding_length: int | None = None
    vocab_size: int | None = None
    context_length: int | None = None

    def kv_bytes_per_token(self, kv_type: str) -> float:
        elems = self.block_count * self.head_count_kv * (self.key_length + self.value_length)
        return elems * KV_BYTES[kv_type]


@dataclass
class FitResult:
    model: str
    gpu: str
    ctx: int
    kv_type: str
    weights_gib: float
    kv_cache_gib: float
    overhead_gib: float
    total_gib: float
    vram_gib: float
    verdict: Verdict
    gpu_share: float  # share of weights + KV cache on the GPU (what /api/ps size_vram/size shows)
    gpu_layers: int
    layers: int
    ram_gib: float
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, float):
                out[key] = round(value, 3)
        return out


def arch_from_model(m: Model) -> Arch:
    return Arch(
        block_count=m.block_count,
        head_count_kv=m.head_count_kv,
        key_length=m.key_length,
        value_length=m.value_length,
        weights_bytes=m.download_gb * 1e9,
        context_length=m.context_length,
    )


def compute_buffer_gib(arch: Arch, ctx: int) -> tuple[float, str]:
    """llama.cpp's compute buffer on the GPU, and how it was estimated.

    With heads, embedding and vocabulary known (from /api/show) this is Ollama's own full-offload
    graph estimate for llama-family models (fs/ggml GraphSize): the larger of the attention
    scratch and the output logits buffer, both float32 over one batch.
    """
    h, e, v = arch.head_count, arch.embedding_length, arch.vocab_size
    if h and e and v:
        attention = 4 * BATCH * (1 + 4 * e + ctx * (1 + h))
        logits = 4 * BATCH * (e + v)
        return max(attention, logits) / GIB_BYTES, "Ollama's graph estimate"
    return COMPUTE_BUFFER_FALLBACK_GIB, "flat estimate: architecture not fully known"


def fit(
    model: str | Arch,
    ctx: int = DEFAULT_CTX,
    kv_type: str = "f16",
    gpu: str = "rtx-4060-ti-16gb",
    ram_gib: float = DEFAULT_PC_RAM_GIB,
    cat: Catalog | None = None,
) -> FitResult:
    """Will `model` (a catalog tag or an explicit `Arch`) at `ctx` tokens fit `gpu`'s VRAM?

    fits: weights + KV + overhead within VRAM. partial: whole layers spill to system RAM and
    still fit there (gpu_share < 1). no: the spilled part would not fit the RAM either.
    VRAM: GDDR capacities are binary, so a "16 GB" card holds 16 GiB (nvidia-smi: 16,380 MiB).
    """
    cat = cat or load_catalog()
    name, arch = _resolve_model(model, cat)
    _check_fit_args(ctx, kv_type, gpu, ram_gib, cat)
    weights = arch.weights_bytes / GIB_BYTES
    kv = arch.kv_bytes_per_token(kv_type) * ctx / GIB_BYTES
    compute, basis = compute_buffer_gib(arch, ctx)
    overhead = CUDA_RESERVE_GIB + compute
    vram = float(cat.gpus[gpu].vram_gb)
    total = weights + kv + overhead
    layers = arch.block_count
    if total <= vram:
        gpu_layers, share = layers, 1.0
    else:
        # Ollama offloads whole layers: each carries its share of the weights and its KV cache.
        per_layer = (weights + kv) / layers
        gpu_layers = max(0, min(layers, math.floor((vram - overhead) / per_layer)))
        share = gpu_layers / layers
    spilled = (1 - share) * (weights + kv)
    usable_ram = ram_gib - RAM_RESERVED_GIB
    verdict: Verdict = "fits" if share == 1.0 else ("partial" if spilled <= usable_ram else "no")
    notes = [
        f"overhead = {CUDA_RESERVE_GIB:.2f} GiB CUDA reserve (Ollama) + {compute:.2f} GiB "
        f"compute buffer ({basis})"
    ]
    if verdict == "no":
        notes.append(
            f"{spilled:.1f} GiB would spill to system RAM, more than the {usable_ram:g} GiB "
            f"left of {ram_gib:g} GiB"
        )
    if arch.context_length and ctx > arch.context_length:
        notes.append(f"ctx {ctx} is beyond the model's trained context {arch.context_length}")
    return FitResult(
        name, gpu, ctx, kv_type, weights, kv, overhead, total, vram, verdict, share,
        gpu_layers, layers, ram_gib, notes,
    )  # fmt: skip


def max_ctx_on_gpu(
    model: str | Arch, kv_type: str = "f16", gpu: str = "rtx-4060-ti-16gb", step: int = 1024
) -> int:
    """Largest context (a multiple of `step`) at which the model still fits entirely in VRAM."""
    lo, hi = 0, 1 << 22  # 4M tokens: beyond any model's context
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if fit(model, mid * step, kv_type, gpu).verdict == "fits":
            lo = mid
        else:
            hi = mid
    return lo * step


def _resolve_model(model: str | Arch, cat: Catalog) -> tuple[str, Arch]:
    if isinstance(model, Arch):
        return "(explicit architecture)", model
    m = cat.models.get(model)
    if m is not None:
        return model, arch_from_model(m)
    if model in cat.unavailable:
        gone = cat.unavailable[model]
        raise MirrorError("--model", f"'{model}': {gone.reason} — use '{gone.replacement}'")
    raise MirrorError(
        "--model",
        f"'{model}' is not in the catalog — known: {', '.join(sorted(cat.models))}; or read "
        "its architecture from a running Ollama with --url http://127.0.0.1:11434",
    )


def _check_fit_args(ctx: int, kv_type: str, gpu: str, ram_gib: float, cat: Catalog) -> None:
    if ctx < 1:
        raise MirrorError("--ctx", f"{ctx} is not a context length — use e.g. --ctx 4096")
    if kv_type not in KV_BYTES:
        raise MirrorError("--kv-type", f"'{kv_type}' is not a KV cache type — use f16|q8_0|q4_0")
    check_gpu(gpu, cat, "--gpu")
    if ram_gib <= 0:
        raise MirrorError("--ram-gib", f"{ram_gib:g} is not an amount of RAM — e.g. 32")


def check_gpu(key: str, cat: Catalog, arg: str) -> None:
    if key not in cat.gpus:
        raise MirrorError(arg, f"'{key}' is not a known GPU — known: {', '.join(sorted(cat.gpus))}")


# Bits per weight of common GGUF quantisations (llama.cpp's quantize table, whole-model
# averages for Llama-class models), used only when /api/show is all we have.
BITS_PER_WEIGHT = {
    "F32": 32.0, "F16": 16.0, "BF16": 16.0, "Q8_0": 8.5, "Q6_K": 6.56, "Q5_K_M": 5.69,
    "Q5_K_S": 5.54, "Q5_1": 6.0, "Q5_0": 5.5, "Q4_K_M": 4.89, "Q4_K_S": 4.58, "Q4_1": 5.0,
    "Q4_0": 4.5, "Q3_K_L": 4.27, "Q3_K_M": 3.91, "Q3_K_S": 3.5, "Q2_K": 3.35,
}  # fmt: skip


def arch_from_show(show: dict[str, Any], size_bytes: float | None = None) -> Arch:
    """Architecture from an Ollama /api/show payload (model_info holds the GGUF keys).

    Weights: `size_bytes` (from /api/tags) when given, else parameter_count x bits per weight of
    details.quantization_level. Missing key/value lengths default to embedding / heads, and a
    missing KV head count to the head count (no grouped-query attention), as llama.cpp does.
    """
    info = show.get("model_info") or {}
    arch = info.get("general.architecture")
    if not arch:
        raise MirrorError("--url", "the /api/show payload has no model_info.general.architecture")

    def key(name: str) -> Any:
        return info.get(f"{arch}.{name}")

    blocks, heads, emb = key("block_count"), key("attention.head_count"), key("embedding_length")
    if not blocks or not (key("attention.head_count_kv") or heads):
        raise MirrorError("--url", f"/api/show model_info lacks {arch}.block_count or head counts")
    kv_heads = key("attention.head_count_kv") or heads
    head_dim = emb // heads if emb and heads else None
    k_len = key("attention.key_length") or head_dim
    v_len = key("attention.value_length") or k_len
    if not k_len:
        raise MirrorError("--url", f"/api/show model_info lacks {arch}.attention.key_length")
    if size_bytes is None:
        quant = (show.get("details") or {}).get("quantization_level", "")
        params = info.get("general.parameter_count")
        bpw = BITS_PER_WEIGHT.get(str(quant).upper())
        if not params or bpw is None:
            raise MirrorError(
                "--url",
                f"cannot size the weights: parameter_count {params}, quantization {quant!r}",
            )
        size_bytes = params * bpw / 8
    vocab = key("vocab_size")
    tokens = info.get("tokenizer.ggml.tokens")
    if not vocab and isinstance(tokens, list) and tokens:
        vocab = len(tokens)
    return Arch(
        block_count=int(blocks),
        head_count_kv=int(kv_heads),
        key_length=int(k_len),
        value_length=int(v_len),
        weights_bytes=float(size_bytes),
        head_count=heads,
        embedding_length=emb,
        vocab_size=vocab,
        context_length=key("context_length"),
    )


def fit_from_show(
    show: dict[str, Any],
    ctx: int = DEFAULT_CTX,
    kv_type: str = "f16",
    gpu: str = "rtx-4060-ti-16gb",
    size_bytes: float | None = None,
    model: str = "",
    ram_gib: float = DEFAULT_PC_RAM_GIB,
    cat: Catalog | None = None,
) -> FitResult:
    result = fit(arch_from_show(show, size_bytes), ctx, kv_type, gpu, ram_gib, cat)
    result.model = model or result.model
    if size_bytes is None:
        quant = (show.get("details") or {}).get("quantization_level")
        result.notes.append(f"weights = parameter_count x bits per weight of {quant}")
    return result


# ---------------------------------------------------------------------------------- project


@dataclass(frozen=True)
class Efficiency:
    value: float  # achieved / bandwidth-bound decode speed
    basis: str  # "calibrated" | "arch fallback" | "global fallback"
    detail: str


@dataclass
class Projection:
    gpu_from: str
    gpu_to: str
    measured_tok_s: float
    model_gib: float
    gpu_share: float
    projected_tok_s: float
    low_tok_s: float
    high_tok_s: float
    prompt_tok_s: float | None = None  # projected prefill, when a measured one was given
    assumptions: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, float):
                out[key] = round(value, 2)
        return out


def _point_efficiency(p: CalibrationPoint, cat: Catalog) -> float:
    return p.tok_s * p.model_gib * GIB / cat.gpus[p.gpu].bandwidth_gbs


def efficiency(cat: Catalog, gpu: str, points: list[CalibrationPoint] | None = None) -> Efficiency:
    """The GPU's decode efficiency: its own points, else its architecture's, else all points.

    With `points` given (the back-test's hold-out), only those count; otherwise the catalog's
    usable points, through rig.compare.decode_efficiency for the calibrated case.
    """
    usable = [p for p in (cat.calibration if points is None else points) if p.use]
    own = [p for p in usable if p.gpu == gpu]
    if own:
        value = (
            decode_efficiency(cat, gpu)
            if points is None
            else statistics.fmean(_point_efficiency(p, cat) for p in own)
        )
        assert value is not None
        return Efficiency(value, "calibrated", f"{len(own)} published point(s) on this GPU")
    arch = cat.gpus[gpu].arch
    same = [p for p in usable if cat.gpus[p.gpu].arch == arch]
    pool, basis = (same, "arch fallback") if same else (usable, "global fallback")
    if not pool:
        raise MirrorError("--gpu", "the catalog has no usable calibration point at all")
    # Mean per GPU first, so a GPU with many points does not outvote the others.
    per_gpu = {g: statistics.fmean(_point_efficiency(p, cat) for p in pool if p.gpu == g)
               for g in {p.gpu for p in pool}}  # fmt: skip
    where = f"{arch} cards" if same else "all calibrated cards"
    return Efficiency(
        statistics.fmean(per_gpu.values()), basis, f"mean of {', '.join(sorted(per_gpu))} ({where})"
    )


def _seconds_per_token(
    model_gib: float, share: float, gpu_bw: float, eff: float, cpu_gbs: float
) -> float:
    """Decode time per token: GPU layers at calibrated bandwidth, spilled layers from RAM."""
    gb = model_gib * GIB
    return share * gb / (gpu_bw * eff) + (1 - share) * gb / cpu_gbs


def error_band() -> tuple[float, float]:
    """(min, max) relative error of the leave-one-out back-test: the method's own track record."""
    errors = [p.error for p in back_test().points]
    return (min(errors), max(errors)) if errors else (0.0, 0.0)


def project(
    gpu_from: str,
    tok_s: float,
    model_gib: float,
    gpu_share: float = 1.0,
    to: str = "rtx-4060-ti-16gb",
    host_mem_bandwidth_gbs: float | None = None,
    pc_mem_bandwidth_gbs: float | None = None,
    prompt_tok_s: float | None = None,
    cat: Catalog | None = None,
    gpu_share_to: float | None = None,
) -> Projection:
    """Carry a decode speed measured on `gpu_from` over to `to` (a catalog GPU key).

    The measurement is divided by the model's prediction on the source, which keeps what the
    bandwidth model does not know (engine, quantisation kernels, MoE reading fewer bytes), and
    multiplied by the prediction on the target. The range applies the back-test's smallest and
    largest relative errors: as wrong as the method was on the published points, no less.
    Memory bandwidths are peaks in GB/s: the measuring host's (default: the effective rate seen
    on a cloud T4 host, CLOUD_HOST_EFFECTIVE_GBS) and the PC's (default DDR5-5600 dual channel);
    the CPU part reaches CPU_DECODE_EFFICIENCY of a peak. `gpu_share_to`: the share on the
    target when it differs from the measured one (e.g. a 24 GB card not mirrored to 16 GB).
    """
    cat = cat or load_catalog()
    check_gpu(gpu_from, cat, "--gpu")
    check_gpu(to, cat, "--to")
    _check_positive("--tok-s", tok_s, "the measured decode tok/s, e.g. --tok-s 35.5")
    _check_positive("--model-gib", model_gib, "the model's size in GiB, e.g. --model-gib 4.56")
    share_to = gpu_share if gpu_share_to is None else gpu_share_to
    for value in (gpu_share, share_to):
        if not 0 <= value <= 1:
            raise MirrorError("--gpu-share", f"{value:g} is not a share — use 0..1, e.g. 0.62")
    for arg, value in (("--host-bw", host_mem_bandwidth_gbs), ("--pc-bw", pc_mem_bandwidth_gbs)):
        if value is not None:
            _check_positive(arg, value, "a memory bandwidth in GB/s, e.g. 89.6")
    pc_ram = pc_mem_bandwidth_gbs or cat.ram["ddr5-5600"].bandwidth_gbs
    host = (
        host_mem_bandwidth_gbs * CPU_DECODE_EFFICIENCY
        if host_mem_bandwidth_gbs
        else CLOUD_HOST_EFFECTIVE_GBS
    )
    src, dst = cat.gpus[gpu_from], cat.gpus[to]
    e_src, e_dst = efficiency(cat, gpu_from), efficiency(cat, to)
    t_src = _seconds_per_token(model_gib, gpu_share, src.bandwidth_gbs, e_src.value, host)
    t_dst = _seconds_per_token(
        model_gib, share_to, dst.bandwidth_gbs, e_dst.value, pc_ram * CPU_DECODE_EFFICIENCY
    )
    projected = tok_s * t_src / t_dst
    lo_err, hi_err = error_band()
    assumptions = [
        "decode is memory-bandwidth bound: every weight is read once per token",
        f"{src.name}: {src.bandwidth_gbs:g} GB/s x efficiency {e_src.value:.0%} "
        f"({e_src.basis}: {e_src.detail})",
        f"{dst.name}: {dst.bandwidth_gbs:g} GB/s x efficiency {e_dst.value:.0%} "
        f"({e_dst.basis}: {e_dst.detail})",
        f"range: the leave-one-out back-test's errors {lo_err:+.0%} .. {hi_err:+.0%} on the "
        "published points (conservative where both GPUs have their own points)",
    ]
    if share_to != gpu_share:
        assumptions.append(
            f"share on the GPU: {gpu_share:.0%} measured, {share_to:.0%} on the target"
        )
    if min(gpu_share, share_to) < 1:
        assumptions.append(
            f"{1 - min(gpu_share, share_to):.0%} of the model runs on the CPU: measuring host at "
            f"{host:.1f} GB/s achieved, PC at {pc_ram:g} GB/s x {CPU_DECODE_EFFICIENCY:.0%} "
            "(estimates: no published CPU-side point)"
        )
    assumptions.append("same engine, model file and context on both sides; one stream")
    prefill = None
    if prompt_tok_s is not None:
        prefill, note = _project_prefill(prompt_tok_s, src, dst)
        assumptions.append(note)
    return Projection(
        gpu_from, to, tok_s, model_gib, gpu_share, projected,
        projected / (1 + hi_err), projected / (1 + lo_err), prefill, assumptions,
    )  # fmt: skip


def _project_prefill(prompt_tok_s: float, src: Any, dst: Any) -> tuple[float | None, str]:
    """Prefill is compute-bound: scale by dense tensor FP16 throughput."""
    if not src.tensor_fp16_tflops or not dst.tensor_fp16_tflops:
        return None, f"prefill not projected: no tensor FP16 figure for {src.key} or {dst.key}"
    ratio = dst.tensor_fp16_tflops / src.tensor_fp16_tflops
    note = (
        f"prefill scales with tensor FP16 throughput: {dst.tensor_fp16_tflops:g} / "
        f"{src.tensor_fp16_tflops:g} TFLOPS = x{ratio:.2f} (not calibrated)"
    )
    return prompt_tok_s * ratio, note


def _check_positive(arg: str, value: float, fix: str) -> None:
    if not (value > 0 and math.isfinite(value)):
        raise MirrorError(arg, f"{value:g} must be a positive number — {fix}")


# -------------------------------------------------------------------------------- back-test


@dataclass(frozen=True)
class BackTestPoint:
    gpu: str
    model: str
    measured_tok_s: float
    predicted_tok_s: float
    basis: str

    @property
    def error(self) -> float:
        return self.predicted_tok_s / self.measured_tok_s - 1


@dataclass(frozen=True)
class BackTest:
    points: list[BackTestPoint]

    @property
    def median_abs_error(self) -> float:
        return statistics.median(abs(p.error) for p in self.points)

    def lines(self) -> list[str]:
        out = [
            f"{p.gpu:18} {p.measured_tok_s:7.1f} t/s measured, {p.predicted_tok_s:7.1f} "
            f"predicted ({p.basis}): {p.error:+.1%}"
            for p in self.points
        ]
        return [*out, f"median absolute error: {self.median_abs_error:.1%} (goal <= 15%)"]


_BACK_TEST: BackTest | None = None


def back_test(cat: Catalog | None = None) -> BackTest:
    """Hold out each usable calibration point, predict it from the others, compare.

    The prediction is the GPU's efficiency (from the remaining points: its own, else its
    architecture's, else all) x bandwidth / model bytes.
    """
    global _BACK_TEST
    if cat is None and _BACK_TEST is not None:
        return _BACK_TEST
    catalog = cat or load_catalog()
    usable = [p for p in catalog.calibration if p.use]
    points = []
    for i, held in enumerate(usable):
        others = usable[:i] + usable[i + 1 :]
        eff = efficiency(catalog, held.gpu, others)
        bound = catalog.gpus[held.gpu].bandwidth_gbs / (held.model_gib * GIB)
        points.append(BackTestPoint(held.gpu, held.model, held.tok_s, eff.value * bound, eff.basis))
    result = BackTest(points)
    if cat is None:
        _BACK_TEST = result
    return result
