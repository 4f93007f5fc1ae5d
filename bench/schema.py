"""What a bench run writes: the contract between the runner, the store and the report.

results/<run-id>/results.jsonl holds one `RequestResult` per line, appended and flushed as each
request completes; results/<run-id>/meta.json holds one `RunMeta`. The report reads only these
two files and the catalog.
"""

from __future__ import annotations

import json
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any

SCHEMA_VERSION = 2


@dataclass
class RequestResult:
    """One measured (or failed) request. Rates are tokens per second; times are seconds."""

    target: str  # target name, e.g. "aws-g4dn.2xlarge", "local", "local-cpu-demo"
    backend: str  # "ollama" | "openai"
    model: str  # the model tag as sent to the server
    workload: str  # "chat-en" | "chat-ja" | "code" | "long-context"
    case: str  # the workload's case id (e.g. "ctx4k" for long-context, a prompt id otherwise)
    rep: int  # 0-based measured repetition (warm-ups are never written)
    ok: bool
    error: str | None = None  # one line, when ok is false
    # Client side (this machine's clock): over an SSH tunnel these include the network.
    ttft_s: float | None = None  # request sent -> first streamed token of either kind (thinking
    #   or answer), as vLLM's bench measures TTFT
    answer_ttft_s: float | None = None  # request sent -> first answer token (thinking models
    #   think first; equals ttft_s otherwise)
    prompt_tokens: int | None = None  # the whole prompt, as the server counts it
    # Server side: what the engine itself timed (no network in it).
    prompt_eval_tokens: int | None = None  # prompt tokens the server evaluated (llama.cpp
    #   timings.prompt_n); None where not reported (Ollama counts the whole prompt), 0 when an
    #   Ollama before 0.2 left prompt_eval_count out (all of it cached; ollama/ollama#2068)
    cached_prompt_tokens: int | None = None  # served from the server's prefix cache
    #   (llama.cpp timings.cache_n, OpenAI usage.prompt_tokens_details.cached_tokens)
    prefill_cold: bool | None = None  # False: the server says part of the prompt came from its
    #   cache, so this row's prefill figures are not a cold prefill (prompt_tok_s is None);
    #   None: the server does not say (Ollama; a per-request nonce keeps it cold there)
    prefill_s: float | None = None  # server prompt time (Ollama prompt_eval_duration,
    #   llama.cpp timings.prompt_ms)
    server_ttft_s: float | None = None  # server side time to first token: this request's model
    #   load + prefill_s; what the report's prefill/TTFT figures use
    prompt_tok_s: float | None = None  # cold prefill rate: prompt tokens / prefill_s (server);
    #   None without server timing or when the prefill was served from cache
    output_tokens: int | None = None  # the server's count of sampled tokens (Ollama
    #   eval_count, llama.cpp predicted_n): a thinking model's reasoning tokens and the
    #   end-of-sequence token are in it, not only the answer's
    decode_s: float | None = None  # server decode time (Ollama eval_duration, llama.cpp
    #   predicted_ms): from the first token sampled to the last, output_tokens - 1 passes
    decode_tok_s: float | None = None  # PRIMARY decode rate: the server's own, per forward
    #   pass as llama-bench's tg and vLLM's 1/TPOT: (output_tokens - 1) / decode_s (see
    #   metrics.server_decode_rate: Ollama's printed "eval rate" = eval_count / eval_duration
    #   reads output_tokens / (output_tokens - 1) higher). Thinking tokens count: a thinking
    #   model's decode rate covers its reasoning too. The client's figure only where the
    #   server reports none (see decode_source)
    stop_reason: str | None = None  # "stop" (end of sequence / stop word) or "length" (cut at
    #   num_predict): Ollama done_reason, OpenAI finish_reason
    decode_source: str | None = None  # "server" | "client": where decode_tok_s comes from
    client_decode_tok_s: float | None = None  # client: (chunks - 1) / (last chunk - first
    #   chunk), chunks of either kind; one token per chunk on Ollama and llama.cpp
    server_decode_tok_s: float | None = None  # (output_tokens - 1) / decode_s; None when the
    #   server reports no timing or fewer than 2 tokens
    server_prompt_tok_s: float | None = None  # the server's prompt rate as it reports it, even
    #   when served from cache (Ollama counts cached tokens as evaluated)
    itl_p50_ms: float | None = None  # inter-CHUNK latency percentiles, client side: the gaps
    itl_p95_ms: float | None = None  #   between streamed chunks (one token per chunk on Ollama
    #   and llama.cpp; a server that batches tokens into chunks shows larger gaps), as vLLM's
    #   bench serve takes ITL per chunk; linear interpolation, numpy's default percentile
    e2e_s: float | None = None  # request sent -> last byte
    thinking_chars: int | None = None  # reasoning text streamed before the answer, if any
    nonce: str | None = None  # the per-request marker at the start of the prompt (cold prefill)
    load_s: float | None = None  # model load time, from the warm-up that loaded it (not mirrored)
    num_ctx: int | None = None
    size_bytes: int | None = None  # /api/ps size of the loaded model
    size_vram_bytes: int | None = None  # /api/ps size_vram: share on GPU = size_vram / size
    vram_used_mib: float | None = None  # nvidia-smi sample during the request; None without GPU
    gpu_util_pct: float | None = None
    power_w: float | None = None
    correct: bool | None = None  # long-context: the planted fact found; code: tests passed;
    #   chat-ja: the answer is Japanese (mostly Japanese script, and kana in it: Chinese has none)
    ja_share: float | None = None  # chat-ja: share of letters in kana/kanji (CJK ideographs count,
    #   so Chinese scores high too: see kana_share)
    kana_share: float | None = None  # chat-ja: share of letters in hiragana/katakana
    judge_note: str | None = None  # why the check failed or was not run (the measurement stands)
    answer_chars: int | None = None
    started_at: str = ""  # ISO 8601 UTC

    @property
    def gpu_share(self) -> float | None:
        if not self.size_bytes or self.size_vram_bytes is None:
            return None
        return self.size_vram_bytes / self.size_bytes

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RequestResult:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class TargetInfo:
    """A target's hardware and price facts, copied from its .state file (or the local demo)."""

    name: str
    url: str
    backend: str
    label: str = ""  # shown in reports, e.g. "local CPU demo"
    kind: str = "cloud"  # "cloud" | "local" (the user's PC) | "demo" (embedded CPU engine)
    gpu: str | None = None  # catalog GPU key; None for CPU-only
    cloud: str | None = None
    instance_type: str | None = None
    region: str | None = None
    spot: bool | None = None
    usd_per_hour: float | None = None  # compute, at the price the deploy read
    price_source: str | None = None
    # What the VM bills besides compute, as the deploy recorded it (disk and public IP): the
    # plan's estimate and the report's actual $ count them too.
    disk_usd_per_hour: float | None = None
    public_ip_usd_per_hour: float | None = None
    host_mem_bandwidth_gbs: float | None = None
    # Round trip to the server measured at the start of the run (median of a few tiny requests):
    # over an SSH tunnel the client's TTFT includes it; the server's own durations do not.
    rtt_ms: float | None = None


@dataclass
class RunMeta:
    run_id: str
    started_at: str
    finished_at: str | None = None
    schema_version: int = SCHEMA_VERSION
    git_commit: str | None = None
    versions: dict[str, str] = field(default_factory=dict)
    profile: dict[str, Any] = field(default_factory=dict)
    targets: list[TargetInfo] = field(default_factory=list)
    # target -> model -> what the server says of the model (Ollama /api/show: parameter size,
    # quantisation, family, and the architecture keys the 16 GB fit needs)
    models: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    # target -> rig.estimate.TargetEstimate.as_dict(): what `rig plan` expects this run to take
    # on that target (its bench part: the VM was set up and its models pulled at deploy),
    # stored when the run starts, so the report can set it beside what the run took.
    estimates: dict[str, dict[str, Any]] = field(default_factory=dict)
    # target -> [[started_at, finished_at], ...]: the wall time each session of the run spent on
    # it (one span per `bench run` / `--resume`), from the first request to the last result.
    spans: dict[str, list[list[str]]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunMeta:
        known = {f.name for f in fields(cls)}
        meta = cls(**{k: v for k, v in data.items() if k in known and k != "targets"})
        target_keys = {f.name for f in fields(TargetInfo)}  # runs written by newer versions
        meta.targets = [
            TargetInfo(**{k: v for k, v in t.items() if k in target_keys})
            for t in data.get("targets", [])
        ]
        return meta


def shape_problem(cls: type, data: Any) -> str | None:
    """What is wrong with `data` as a `cls` (RequestResult, RunMeta, TargetInfo) read from a
    file, or None: a JSON object whose known fields hold the types the dataclass declares (an
    int where a float is declared is fine; unknown fields are ignored, as from_json does).
    A hand-edited or damaged file then gets a sentence, not a TypeError deep in the report."""
    if not isinstance(data, dict):
        return f"is a JSON {type(data).__name__}, not an object"
    for f in fields(cls):
        if f.default is MISSING and f.default_factory is MISSING and f.name not in data:
            return f"lacks {f.name}"
        if f.name not in data:
            continue
        value = data[f.name]
        kinds = [k.strip() for k in str(f.type).split("|")]
        if value is None and "None" in kinds:
            continue
        if not any(_is_kind(value, kind) for kind in kinds):
            return f"{f.name} is {json.dumps(value)[:40]}, not {' or '.join(kinds)}"
    if cls is RunMeta:
        for i, target in enumerate(data.get("targets") or []):
            problem = shape_problem(TargetInfo, target)
            if problem:
                return f"targets[{i}] {problem}"
    return None


def _is_kind(value: Any, kind: str) -> bool:
    if isinstance(value, bool):
        return kind == "bool"
    base = kind.split("[")[0]
    checks: dict[str, tuple[type, ...]] = {
        "int": (int,),
        "float": (int, float),
        "str": (str,),
        "dict": (dict,),
        "list": (list,),
    }
    return (base not in checks and base != "None") or isinstance(value, checks.get(base, ()))
