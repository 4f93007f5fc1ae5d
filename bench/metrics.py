"""Metrics from one streamed response, and summaries over repetitions.

Client-side figures come from chunk arrival times (perf_counter), the way vLLM's `bench serve`
measures TTFT and inter-token latency; server timings (Ollama's final object, llama.cpp's
`timings`) are kept beside them so the two can be compared.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Stream:
    """What a backend observed for one request."""

    sent_at: float  # perf_counter when the request was sent
    token_times: list[float]  # perf_counter of each content-bearing chunk
    done_at: float  # perf_counter of the last byte
    text: str
    prompt_tokens: int | None = None
    output_tokens: int | None = None  # server count; falls back to the chunk count
    server_decode_tok_s: float | None = None
    server_prompt_tok_s: float | None = None
    load_s: float | None = None


@dataclass(frozen=True)
class RequestMetrics:
    ttft_s: float | None
    decode_tok_s: float | None
    prompt_tok_s: float | None
    itl_p50_ms: float | None
    itl_p95_ms: float | None
    e2e_s: float
    output_tokens: int


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile (q in 0..100), as numpy's default method."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def measure(stream: Stream) -> RequestMetrics:
    times = stream.token_times
    output_tokens = stream.output_tokens if stream.output_tokens else len(times)
    ttft = times[0] - stream.sent_at if times else None
    decode = None
    if len(times) >= 2 and output_tokens >= 2 and times[-1] > times[0]:
        # Tokens after the first, over the time from first to last: the decode phase only.
        decode = (output_tokens - 1) / (times[-1] - times[0])
    gaps_ms = [(b - a) * 1000 for a, b in itertools.pairwise(times)]
    prompt_rate = stream.server_prompt_tok_s
    if prompt_rate is None and stream.prompt_tokens and ttft:
        prompt_rate = stream.prompt_tokens / ttft  # client-side bound: includes network
    return RequestMetrics(
        ttft_s=ttft,
        decode_tok_s=decode,
        prompt_tok_s=prompt_rate,
        itl_p50_ms=percentile(gaps_ms, 50),
        itl_p95_ms=percentile(gaps_ms, 95),
        e2e_s=stream.done_at - stream.sent_at,
        output_tokens=output_tokens,
    )


@dataclass(frozen=True)
class Summary:
    n: int
    mean: float | None
    sd: float | None
    median: float | None


def summarize(values: Sequence[float | None]) -> Summary:
    got = [v for v in values if v is not None]
    if not got:
        return Summary(0, None, None, None)
    sd = statistics.stdev(got) if len(got) > 1 else 0.0
    return Summary(len(got), statistics.fmean(got), sd, statistics.median(got))
