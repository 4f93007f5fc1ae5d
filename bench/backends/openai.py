"""OpenAI-compatible /v1/chat/completions streaming: llama.cpp's server, vLLM, LM Studio and
Ollama's own /v1. Reads usage (stream_options.include_usage, prompt_tokens_details) and
llama.cpp's `timings` (prompt_n, prompt_ms, cache_n, predicted_n, predicted_ms)."""

from __future__ import annotations

import json
import time
from typing import Any

from bench.backends.base import Loaded, PullProgress, StreamLimits, count, duration, malformed
from bench.http import Client, RequestFailed, TargetLost
from bench.metrics import Stream
from bench.workload import Request


class OpenAIBackend:
    name = "openai"

    def __init__(self, base_url: str, limits: StreamLimits | None = None):
        self.base_url = base_url
        self.http = Client(base_url)
        self.limits = limits or StreamLimits()

    def chat(self, model: str, request: Request) -> Stream:
        payload = {
            "model": model,
            "messages": request.messages,
            "stream": True,
            "stream_options": {"include_usage": True},
            "temperature": request.temperature,
            "seed": request.seed,
            "max_tokens": request.num_predict,
            # llama.cpp's server reuses a matching prompt prefix unless told not to
            # (tools/server/server-task.cpp: params.cache_prompt from "cache_prompt"); other
            # OpenAI-compatible servers ignore the field.
            "cache_prompt": False,
        }
        sent = time.perf_counter()
        times: list[float] = []
        first_answer: float | None = None
        parts: list[str] = []
        thoughts: list[str] = []
        usage: dict[str, Any] = {}
        timings: dict[str, Any] = {}
        finished = False
        stop_reason: str | None = None
        lines = self.http.lines(
            "/v1/chat/completions",
            payload,
            idle_timeout_s=self.limits.idle_timeout_s,
            deadline_s=self.limits.request_timeout_s,
        )
        for line in lines:
            now = time.perf_counter()
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                finished = True
                break
            try:
                obj = json.loads(data)
            except ValueError:
                raise malformed(self.base_url, line, "not JSON") from None
            if not isinstance(obj, dict):
                raise malformed(self.base_url, line, "not an object")
            if "error" in obj:
                err = obj["error"]
                raise RequestFailed(
                    f"openai: {err.get('message', err) if isinstance(err, dict) else err}"
                )
            got_token = False
            choices = obj.get("choices") or []
            if not isinstance(choices, list):
                raise malformed(self.base_url, line, "choices is not a list")
            for choice in choices:
                delta = choice.get("delta") if isinstance(choice, dict) else None
                if not isinstance(delta, dict):
                    raise malformed(self.base_url, line, "choice without a delta object")
                if isinstance(choice.get("finish_reason"), str):
                    stop_reason = choice["finish_reason"]
                content = delta.get("content")
                # Reasoning streamed apart from the answer: llama.cpp's reasoning_content,
                # Ollama's /v1 `reasoning` (openai/openai.go).
                thinking = delta.get("reasoning_content") or delta.get("reasoning")
                if not all(isinstance(x, str | None) for x in (content, thinking)):
                    raise malformed(self.base_url, line, "delta is not text")
                if thinking:
                    thoughts.append(thinking)
                    got_token = True
                if content:
                    parts.append(content)
                    got_token = True
                    first_answer = first_answer if first_answer is not None else now
            if got_token:
                times.append(now)
            if isinstance(obj.get("usage"), dict):
                usage = obj["usage"]
            if isinstance(obj.get("timings"), dict):
                timings = obj["timings"]
        done = time.perf_counter()
        if not finished:
            raise TargetLost(f"{self.base_url}: stream ended before [DONE]")
        # llama.cpp's `timings` (in the last chunk with include_usage): prompt_n tokens
        # evaluated in prompt_ms, cache_n reused from the cache, predicted_n in predicted_ms.
        details = usage.get("prompt_tokens_details")
        cached = count(timings.get("cache_n"))
        if cached is None and isinstance(details, dict):
            cached = count(details.get("cached_tokens"))
        prompt_n = count(timings.get("prompt_n"))
        prompt = count(usage.get("prompt_tokens"))
        if prompt is None and prompt_n is not None:
            prompt = prompt_n + (cached or 0)
        prompt_ms = duration(timings.get("prompt_ms"))
        predicted_n = count(timings.get("predicted_n"))
        predicted_ms = duration(timings.get("predicted_ms"))
        has_decode_timing = predicted_n is not None and predicted_ms is not None
        return Stream(
            sent_at=sent,
            chunk_times=times,
            done_at=done,
            text="".join(parts),
            first_answer_at=first_answer,
            thinking="".join(thoughts),
            prompt_tokens=prompt,
            prompt_eval_tokens=prompt_n,
            cached_prompt_tokens=cached,
            prefill_s=None if prompt_ms is None else prompt_ms / 1000,
            output_tokens=predicted_n
            if has_decode_timing
            else count(usage.get("completion_tokens")),
            decode_s=predicted_ms / 1000 if has_decode_timing and predicted_ms else None,
            stop_reason=stop_reason,
        )

    def ping(self) -> float | None:
        """One round trip: the health request that answered, timed alone (a server without
        /health answers 404 first, and that round trip is not counted twice)."""
        for path in ("/health", "/v1/models"):
            start = time.perf_counter()
            try:
                self.http.json("GET", path, timeout_s=5)
                return time.perf_counter() - start
            except RequestFailed:
                continue
            except TargetLost:
                return None
        return None

    def alive(self) -> bool:
        return self.ping() is not None

    def version(self) -> str | None:
        try:
            props = self.http.json_object("GET", "/props", timeout_s=5)
        except (TargetLost, RequestFailed):
            return None
        info = props.get("build_info")
        return info if isinstance(info, str) else None

    def ensure_model(self, model: str, progress: PullProgress | None = None) -> None:
        return None  # an OpenAI-compatible server serves what it was started with

    def loaded(self, model: str) -> Loaded | None:
        return None  # no such endpoint in the OpenAI API

    def describe(self, model: str) -> dict[str, Any]:
        return {}  # the OpenAI API says nothing of a model's architecture
