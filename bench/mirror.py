"""Mirror the planned PC: will a model fit 16 GB, and how fast will it decode there?

Two pure parts, both importable by the report:

- `fit` / `fit_from_show`: weights + KV cache + runtime overhead against a GPU's VRAM.
- `project` / `rank_all`: a decode speed measured on one GPU carried over to another, or to
  every consumer card, through the speed model fitted in bench/speed.py. Input is checked
  against physics first: a share is 0..1, the measured part of a model fits the measuring
  card's usable VRAM, and a speed does not beat the card's bandwidth roofline.

Nothing here does I/O except `load_catalog()` (cached, read-only).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from bench import speed
from bench.notes import Note
from rig.catalog import Catalog, load_catalog
from rig.catalog.schema import Gpu, Model
from rig.compare import GIB

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

CPU_DECODE_EFFICIENCY = speed.CPU_DECODE_EFFICIENCY
CLOUD_HOST_EFFECTIVE_GBS = speed.CLOUD_HOST_EFFECTIVE_GBS
# A measured speed may exceed the bandwidth roofline by this much before it is refused: peak
# bandwidth figures are rounded, and the bytes a user gives are a file size, not exact traffic.
ROOFLINE_TOLERANCE = 0.2
# The smallest weights worth projecting: below 10 MiB no language model exists (SmolLM2-135M
# at Q4 is about 80 MiB); a smaller --model-gib is a unit mistake (MB or bytes for GiB).
MIN_MODEL_GIB = 0.01


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
        return speed.rounded_dict(self, 3)


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
    still fit there (gpu_share < 1). no: the spilled part would not fit the RAM the PC leaves
    free (total minus RAM_RESERVED_GIB). VRAM is what the card really offers: nvidia-smi's
    memory.total (catalog usable_mib), e.g. 16,380 MiB on a 16 GB GeForce, 15,360 on a T4.
    """
    cat = cat or load_catalog()
    name, arch = _resolve_model(model, cat)
    _check_fit_args(ctx, kv_type, gpu, ram_gib, cat)
    weights = arch.weights_bytes / GIB_BYTES
    kv = arch.kv_bytes_per_token(kv_type) * ctx / GIB_BYTES
    compute, basis = compute_buffer_gib(arch, ctx)
    overhead = CUDA_RESERVE_GIB + compute
    vram = cat.gpus[gpu].usable_gib
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
    if not (ram_gib > 0 and math.isfinite(ram_gib)):
        raise MirrorError("--ram-gib", f"{ram_gib:.6g} is not an amount of RAM — e.g. 32")


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

Projection = speed.SpeedProjection


def fit_weights(
    model_gib: float, gpu: str, ram_gib: float = DEFAULT_PC_RAM_GIB, cat: Catalog | None = None
) -> tuple[Verdict, float]:
    """(verdict, share on the GPU) from the weights alone plus the runtime overhead, for when
    only a size is known (no architecture, so no KV cache: `fit` with a model tag is better)."""
    cat = cat or load_catalog()
    overhead = CUDA_RESERVE_GIB + COMPUTE_BUFFER_FALLBACK_GIB
    room = cat.gpus[gpu].usable_gib - overhead
    share = 1.0 if model_gib <= room else max(0.0, room / model_gib)
    if share == 1.0:
        return "fits", share
    return ("partial" if (1 - share) * model_gib <= ram_gib - RAM_RESERVED_GIB else "no"), share


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
    engine: str = speed.DEFAULT_ENGINE,
    weights_gib: float | None = None,
) -> Projection:
    """Carry a decode speed measured on `gpu_from` over to `to` (catalog GPU keys).

    `model_gib` is what one decoded token reads; `weights_gib` what the GPU must hold (they
    differ for a mixture of experts, which reads only its active experts; default: equal).

    Memory bandwidths are peaks in GB/s: the measuring host's (default: the effective rate seen
    on a cloud T4 host, CLOUD_HOST_EFFECTIVE_GBS) and the PC's (default DDR5-5600 dual
    channel); a CPU part reaches CPU_DECODE_EFFICIENCY of a peak. `gpu_share_to`: the share on
    the target when it differs from the measured one (e.g. a model that spills on 16 GB).
    Impossible input raises MirrorError naming the argument (see check_measurement).
    """
    cat = cat or load_catalog()
    check_gpu(gpu_from, cat, "--gpu")
    check_gpu(to, cat, "--to")
    for arg, value in (("--host-bw", host_mem_bandwidth_gbs), ("--pc-bw", pc_mem_bandwidth_gbs)):
        if value is not None:
            _check_positive(arg, value, "a memory bandwidth in GB/s, e.g. 89.6")
    check_measurement(
        cat.gpus[gpu_from], tok_s, model_gib, gpu_share, weights_gib, host_mem_bandwidth_gbs
    )
    share_to = gpu_share if gpu_share_to is None else gpu_share_to
    _check_share("--gpu-share", share_to)
    pc_ram = pc_mem_bandwidth_gbs or cat.ram["ddr5-5600"].bandwidth_gbs
    host = (
        host_mem_bandwidth_gbs * CPU_DECODE_EFFICIENCY
        if host_mem_bandwidth_gbs
        else CLOUD_HOST_EFFECTIVE_GBS
    )
    p = speed.carry(
        cat, gpu_from, tok_s, model_gib, gpu_share, to, share_to, host,
        pc_ram * CPU_DECODE_EFFICIENCY, engine,
    )  # fmt: skip
    if prompt_tok_s is not None:
        _check_positive("--prompt-tok-s", prompt_tok_s, "the measured prompt tok/s, e.g. 900")
        prefill, note = _project_prefill(prompt_tok_s, cat.gpus[gpu_from], cat.gpus[to])
        p.prompt_tok_s = prefill
        p.assumptions.append(note)
    return p


def check_measurement(
    src: Gpu,
    tok_s: float,
    model_gib: float,
    share: float,
    weights_gib: float | None = None,
    host_peak_gbs: float | None = None,
) -> None:
    """Refuse what the measuring card cannot have done, with one line naming the argument.

    The roofline is the least time a token can take: its GPU part at the card's peak
    bandwidth, plus, when the host's peak is given (--host-bw), its CPU part at that peak.
    """
    _check_positive("--tok-s", tok_s, "the measured decode tok/s, e.g. --tok-s 35.5")
    _check_positive("--model-gib", model_gib, "the model's size in GiB, e.g. --model-gib 4.56")
    if model_gib < MIN_MODEL_GIB:
        raise MirrorError(
            "--model-gib",
            f"{model_gib:.3g} GiB is smaller than any language model's weights — give the "
            "model file's size in GiB, e.g. --model-gib 4.56",
        )
    _check_share("--gpu-share", share)
    held = share * (weights_gib or model_gib)
    if held > src.usable_gib * 1.01:
        fit_share = src.usable_gib / (weights_gib or model_gib)
        raise MirrorError(
            "--gpu-share",
            f"{share:.6g} puts {held:.3g} GiB of the {weights_gib or model_gib:.3g} GiB model on "
            f"the GPU, but the {src.name} holds {src.usable_gib:.1f} GiB — give the measured "
            f"share (size_vram / size from ollama ps), at most {fit_share:.2f}",
        )
    on_gpu = share * model_gib
    least_s = on_gpu * GIB / src.bandwidth_gbs
    if host_peak_gbs:
        least_s += (1 - share) * model_gib * GIB / host_peak_gbs
    roofline = 1 / least_s if least_s else math.inf
    if tok_s > roofline * (1 + ROOFLINE_TOLERANCE):
        where = f"{on_gpu:.3g} GiB on the GPU at {src.bandwidth_gbs:g} GB/s" + (
            f" and {(1 - share) * model_gib:.3g} GiB from host memory at {host_peak_gbs:g} GB/s"
            if host_peak_gbs and share < 1
            else ""
        )
        raise MirrorError(
            "--tok-s",
            f"{tok_s:.6g} tok/s is above the {src.name}'s bandwidth roofline for {where} "
            f"({roofline:.1f} tok/s, +{ROOFLINE_TOLERANCE:.0%} allowed) — check --model-gib "
            "(a MoE model reads only its active experts: give those bytes), --gpu-share and "
            "--gpu",
        )


@dataclass
class RankRow:
    """One card of `rank_all`. A model that does not fit the card's VRAM plus the PC's RAM
    cannot run there: it has no speed (None), whatever a formula would say."""

    gpu: str
    name: str
    role: str
    vram_gb: float
    projected_tok_s: float | None
    low_tok_s: float | None
    high_tok_s: float | None
    verdict: Verdict
    gpu_share: float
    launch_msrp_usd: float
    tok_s_per_100usd: float | None
    fit_basis: str

    def as_dict(self) -> dict[str, Any]:
        return speed.rounded_dict(self, 2)


def rank_all(
    gpu_from: str,
    tok_s: float,
    model_gib: float,
    gpu_share: float = 1.0,
    model: str | None = None,
    ctx: int = DEFAULT_CTX,
    host_mem_bandwidth_gbs: float | None = None,
    pc_mem_bandwidth_gbs: float | None = None,
    ram_gib: float = DEFAULT_PC_RAM_GIB,
    cat: Catalog | None = None,
    weights_gib: float | None = None,
) -> list[RankRow]:
    """Every consumer card in the catalog for one measurement, fastest first.

    Each card gets its own fit (with `model`, the full weights + KV + overhead fit; else the
    weights and overhead alone), so a model that spills on a small card is projected with its
    CPU part, and tok/s per 100 $ of launch MSRP.
    """
    cat = cat or load_catalog()
    rows = []
    for key, gpu in cat.gpus.items():
        if gpu.segment != "consumer":
            continue
        if model is not None:
            f = fit(model, ctx, "f16", key, ram_gib, cat)
            verdict, share, basis = f.verdict, f.gpu_share, f"{model} at {ctx} tokens, f16 KV"
        else:
            verdict, share = fit_weights(weights_gib or model_gib, key, ram_gib, cat)
            basis = "weights + runtime overhead (no KV cache: pass --model for the full fit)"
        p = project(
            gpu_from, tok_s, model_gib, gpu_share, key, host_mem_bandwidth_gbs,
            pc_mem_bandwidth_gbs, None, cat, share, weights_gib=weights_gib,
        )  # fmt: skip
        msrp = gpu.launch_msrp_usd or math.nan
        if verdict == "no":
            rows.append(RankRow(key, gpu.name, gpu.role, gpu.vram_gb, None, None, None, verdict,
                                share, msrp, None, basis))  # fmt: skip
            continue
        rows.append(RankRow(
            key, gpu.name, gpu.role, gpu.vram_gb, p.projected_tok_s, p.low_tok_s, p.high_tok_s,
            verdict, share, msrp, p.projected_tok_s / msrp * 100, basis,
        ))  # fmt: skip
    return sorted(rows, key=lambda r: -(r.projected_tok_s or 0.0))


def _project_prefill(prompt_tok_s: float, src: Any, dst: Any) -> tuple[float | None, str]:
    """Prefill is compute-bound: scale by dense tensor FP16 throughput."""
    if not src.tensor_fp16_tflops or not dst.tensor_fp16_tflops:
        return None, Note("note_no_prefill", src=src.key, dst=dst.key)
    ratio = dst.tensor_fp16_tflops / src.tensor_fp16_tflops
    note = Note("note_prefill", dst=dst.tensor_fp16_tflops, src=src.tensor_fp16_tflops, ratio=ratio)
    return prompt_tok_s * ratio, note


def _check_share(arg: str, value: float) -> None:
    if not (0 <= value <= 1):
        raise MirrorError(arg, f"{value:.10g} is not a share — use 0..1, e.g. 0.62")


def _check_positive(arg: str, value: float, fix: str) -> None:
    if not (value > 0 and math.isfinite(value)):
        raise MirrorError(arg, f"{value:.6g} must be a positive number — {fix}")
