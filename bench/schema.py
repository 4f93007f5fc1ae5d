"""What a bench run writes: the contract between the runner, the store and the report.

results/<run-id>/results.jsonl holds one `RequestResult` per line, appended and flushed as each
request completes; results/<run-id>/meta.json holds one `RunMeta`. The report reads only these
two files and the catalog.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

SCHEMA_VERSION = 1


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
    ttft_s: float | None = None  # client: request sent -> first content token
    prompt_tokens: int | None = None
    prompt_tok_s: float | None = None  # server timings when given, else prompt_tokens / ttft
    output_tokens: int | None = None
    decode_tok_s: float | None = None  # client: (tokens - 1) / (last token - first token)
    server_decode_tok_s: float | None = None  # server's own timing; None when not reported
    server_prompt_tok_s: float | None = None
    itl_p50_ms: float | None = None  # inter-token latency percentiles, client side
    itl_p95_ms: float | None = None
    e2e_s: float | None = None  # request sent -> last byte
    load_s: float | None = None  # model load time, from the warm-up that loaded it (not mirrored)
    num_ctx: int | None = None
    size_bytes: int | None = None  # /api/ps size of the loaded model
    size_vram_bytes: int | None = None  # /api/ps size_vram: share on GPU = size_vram / size
    vram_used_mib: float | None = None  # nvidia-smi sample during the request; None without GPU
    gpu_util_pct: float | None = None
    power_w: float | None = None
    correct: bool | None = None  # long-context: the planted fact found; code: tests passed
    judge_note: str | None = None  # code: why the check failed or was not run
    ja_share: float | None = None  # chat-ja: share of letters in kana/kanji
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
    usd_per_hour: float | None = None
    price_source: str | None = None
    host_mem_bandwidth_gbs: float | None = None


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

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunMeta:
        known = {f.name for f in fields(cls)}
        meta = cls(**{k: v for k, v in data.items() if k in known and k != "targets"})
        meta.targets = [TargetInfo(**t) for t in data.get("targets", [])]
        return meta
