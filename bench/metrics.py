"""Metrics from one streamed response, and summaries over repetitions.

Two clocks, kept apart:
- the client's: chunk arrival times (perf_counter), the way vLLM's `bench serve` measures TTFT
  and inter-token latency. Over an SSH tunnel they include the network.
- the server's: Ollama's final object (prompt_eval_duration, eval_count / eval_duration) and
  llama.cpp's `timings` (prompt_n / prompt_ms, predicted_n / predicted_ms, cache_n). The
  primary prefill and decode figures come from these, as llama-bench's pp and tg do; the
  client's figures stand beside them.
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
    chunk_times: list[float]  # perf_counter of each chunk carrying a token of either kind
    done_at: float  # perf_counter of the last byte
    text: str  # the answer (thinking excluded)
    first_answer_at: float | None = None  # perf_counter of the first answer (content) chunk
    thinking: str = ""  # reasoning streamed apart from the answer (Ollama message.thinking,
    #   OpenAI-style delta.reasoning_content / delta.reasoning)
    # Server-reported figures (None where the server says nothing):
    prompt_tokens: int | None = None  # the whole prompt
    prompt_eval_tokens: int | None = None  # of which evaluated now (llama.cpp prompt_n)
    cached_prompt_tokens: int | None = None  # of which served from the prefix cache
    prefill_s: float | None = None  # server prompt time
    output_tokens: int | None = None  # server count (every sampled token: thinking and the
    #   end-of-sequence token included); falls back to the chunk count
    decode_s: float | None = None  # server decode time: from the first token sampled to the
    #   last, so output_tokens - 1 forward passes (see server_decode_rate)
    stop_reason: str | None = None  # Ollama done_reason / OpenAI finish_reason ("stop",
    #   "length"): "length" = cut at num_predict
    load_s: float | None = None  # model load inside this request (Ollama load_duration)


@dataclass(frozen=True)
class RequestMetrics:
    ttft_s: float | None
    answer_ttft_s: float | None
    client_decode_tok_s: float | None
    server_decode_tok_s: float | None
    decode_tok_s: float | None  # the server's when reported, else the client's
    decode_source: str | None
    prefill_cold: bool | None
    server_ttft_s: float | None
    server_prompt_tok_s: float | None  # as the server reports it (cached tokens included)
    prompt_tok_s: float | None  # cold prefill only
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


def _rate(count: int | None, seconds: float | None) -> float | None:
    if not count or count < 0 or not seconds or seconds <= 0:
        return None
    return count / seconds


def server_decode_rate(tokens: int | None, seconds: float | None) -> float | None:
    """Tokens per second of the decode phase from the server's own count and time: one token per
    forward pass, as llama-bench's tg and vLLM's TPOT (1 / TPOT, TPOT = (E2EL - TTFT) /
    (output tokens - 1)) count it.

    Both engines start the decode clock when the FIRST token is sampled, from the prefill's
    last forward pass: Ollama's runner sets startGenerationTime at numPredicted == 1 and reports
    EvalCount = numPredicted, EvalDuration = time.Since(startGenerationTime)
    (runner/ollamarunner/runner.go:506-508 and 701-702 at v0.9.2; llamarunner numDecoded the
    same); llama.cpp's server sets t_start_generation at n_decoded == 1 and reports
    predicted_n = n_decoded over t_token_generation. So `tokens` were sampled in tokens - 1
    forward passes: (tokens - 1) / seconds. Ollama's own "eval rate" and llama.cpp's
    predicted_per_second divide by one pass too few and read tokens / (tokens - 1) higher
    (+0.4 % at 256 tokens, +14 % at 8, unbounded at 1, where the time is ~0)."""
    if tokens is None or tokens < 2:
        return None
    return _rate(tokens - 1, seconds)


def prefill_cold(stream: Stream) -> bool | None:
    """False when the server says part of the prompt came from its prefix cache; None when it
    does not say. llama.cpp reports both the evaluated count (prompt_n) and the cached count
    (cache_n); either one showing reuse is enough."""
    if stream.cached_prompt_tokens is not None and stream.cached_prompt_tokens > 0:
        return False
    if stream.prompt_eval_tokens == 0:  # nothing evaluated: the whole prompt came from cache
        return False
    if (
        stream.prompt_eval_tokens is not None
        and stream.prompt_tokens
        and stream.prompt_eval_tokens < stream.prompt_tokens
    ):
        return False
    if stream.cached_prompt_tokens is not None or stream.prompt_eval_tokens is not None:
        return True
    return None


def measure(stream: Stream) -> RequestMetrics:
    times = stream.chunk_times
    output_tokens = stream.output_tokens if stream.output_tokens else len(times)
    ttft = times[0] - stream.sent_at if times else None
    answer_ttft = (
        stream.first_answer_at - stream.sent_at if stream.first_answer_at is not None else None
    )
    client_decode = None
    if len(times) >= 2 and times[-1] > times[0]:
        # Chunks after the first over the time from first to last: the decode phase as the
        # client sees it, counted in chunks (never mixed with the server's token count).
        client_decode = (len(times) - 1) / (times[-1] - times[0])
    server_decode = server_decode_rate(stream.output_tokens, stream.decode_s)
    cold = prefill_cold(stream)
    server_prompt = _rate(
        stream.prompt_eval_tokens
        if stream.prompt_eval_tokens is not None
        else stream.prompt_tokens,
        stream.prefill_s,
    )
    server_ttft = None
    if stream.prefill_s is not None:
        server_ttft = stream.prefill_s + (stream.load_s or 0.0)
    source = "server" if server_decode is not None else None
    if source is None and client_decode is not None:
        source = "client"
    gaps_ms = [(b - a) * 1000 for a, b in itertools.pairwise(times)]
    return RequestMetrics(
        ttft_s=ttft,
        answer_ttft_s=answer_ttft,
        client_decode_tok_s=client_decode,
        server_decode_tok_s=server_decode,
        decode_tok_s=server_decode if server_decode is not None else client_decode,
        decode_source=source,
        prefill_cold=cold,
        server_ttft_s=server_ttft,
        server_prompt_tok_s=server_prompt,
        prompt_tok_s=None if cold is False else server_prompt,
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
