"""OpenAI-compatible /v1/chat/completions streaming: llama.cpp's server, vLLM, LM Studio and
Ollama's own /v1. Reads usage (stream_options.include_usage) and llama.cpp's `timings`."""

from __future__ import annotations

import json
import time
from typing import Any

from bench.backends.base import Loaded, PullProgress
from bench.http import Client, RequestFailed, TargetLost
from bench.metrics import Stream
from bench.workload import Request


class OpenAIBackend:
    name = "openai"

    def __init__(self, base_url: str):
        self.base_url = base_url
        self.http = Client(base_url)

    def chat(self, model: str, request: Request) -> Stream:
        payload = {
            "model": model,
            "messages": request.messages,
            "stream": True,
            "stream_options": {"include_usage": True},
            "temperature": request.temperature,
            "seed": request.seed,
            "max_tokens": request.num_predict,
        }
        sent = time.perf_counter()
        times: list[float] = []
        parts: list[str] = []
        usage: dict[str, Any] = {}
        timings: dict[str, Any] = {}
        finished = False
        for line in self.http.lines("/v1/chat/completions", payload):
            now = time.perf_counter()
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                finished = True
                break
            obj = json.loads(data)
            if "error" in obj:
                err = obj["error"]
                raise RequestFailed(
                    f"openai: {err.get('message', err) if isinstance(err, dict) else err}"
                )
            for choice in obj.get("choices") or []:
                content = (choice.get("delta") or {}).get("content") or ""
                if content:
                    times.append(now)
                    parts.append(content)
            usage = obj.get("usage") or usage
            timings = obj.get("timings") or timings
        done = time.perf_counter()
        if not finished:
            raise TargetLost(f"{self.base_url}: stream ended before [DONE]")
        server_decode = timings.get("predicted_per_second")
        server_prompt = timings.get("prompt_per_second")
        return Stream(
            sent_at=sent,
            token_times=times,
            done_at=done,
            text="".join(parts),
            prompt_tokens=usage.get("prompt_tokens") or timings.get("prompt_n"),
            output_tokens=usage.get("completion_tokens") or timings.get("predicted_n"),
            server_decode_tok_s=float(server_decode) if server_decode else None,
            server_prompt_tok_s=float(server_prompt) if server_prompt else None,
        )

    def alive(self) -> bool:
        for path in ("/health", "/v1/models"):
            try:
                self.http.json("GET", path, timeout_s=5)
                return True
            except RequestFailed:
                continue
            except TargetLost:
                return False
        return False

    def version(self) -> str | None:
        try:
            props = self.http.json("GET", "/props", timeout_s=5)
        except (TargetLost, RequestFailed):
            return None
        return props.get("build_info") if isinstance(props, dict) else None

    def ensure_model(self, model: str, progress: PullProgress | None = None) -> None:
        return None  # an OpenAI-compatible server serves what it was started with

    def loaded(self, model: str) -> Loaded | None:
        return None  # no such endpoint in the OpenAI API

    def describe(self, model: str) -> dict[str, Any]:
        return {}  # the OpenAI API says nothing of a model's architecture
