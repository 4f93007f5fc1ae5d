"""Ollama's native API (docs/api.md): /api/chat streaming, /api/ps, /api/show, /api/pull."""

from __future__ import annotations

import json
import time
from typing import Any

from bench.backends.base import Loaded, PullProgress
from bench.http import Client, RequestFailed, TargetLost
from bench.metrics import Stream
from bench.workload import Request

NS = 1e9  # Ollama reports durations in nanoseconds
KEEP_ALIVE = "30m"  # keep the model loaded between a target's requests


def _rate(count: int | None, duration_ns: int | None) -> float | None:
    if not count or not duration_ns:
        return None
    return count / duration_ns * NS


class OllamaBackend:
    name = "ollama"

    def __init__(self, base_url: str):
        self.base_url = base_url
        self.http = Client(base_url)

    def chat(self, model: str, request: Request) -> Stream:
        payload = {
            "model": model,
            "messages": request.messages,
            "stream": True,
            "keep_alive": KEEP_ALIVE,
            "options": {
                "seed": request.seed,
                "temperature": request.temperature,
                "num_predict": request.num_predict,
                "num_ctx": request.num_ctx,
            },
        }
        sent = time.perf_counter()
        times: list[float] = []
        parts: list[str] = []
        final: dict[str, Any] | None = None
        for line in self.http.lines("/api/chat", payload):
            now = time.perf_counter()
            obj = json.loads(line)
            if "error" in obj:  # an error can arrive mid-stream, after HTTP 200
                raise RequestFailed(f"ollama: {obj['error']}")
            content = (obj.get("message") or {}).get("content") or ""
            if content:
                times.append(now)
                parts.append(content)
            if obj.get("done"):
                final = obj
                break
        done = time.perf_counter()
        if final is None:
            raise TargetLost(f"{self.base_url}: stream ended without its final object")
        return Stream(
            sent_at=sent,
            token_times=times,
            done_at=done,
            text="".join(parts),
            prompt_tokens=final.get("prompt_eval_count"),
            output_tokens=final.get("eval_count"),
            server_decode_tok_s=_rate(final.get("eval_count"), final.get("eval_duration")),
            server_prompt_tok_s=_rate(
                final.get("prompt_eval_count"), final.get("prompt_eval_duration")
            ),
            load_s=(final["load_duration"] / NS) if final.get("load_duration") else None,
        )

    def alive(self) -> bool:
        try:
            self.http.json("GET", "/api/version", timeout_s=5)
        except (TargetLost, RequestFailed):
            return False
        return True

    def version(self) -> str | None:
        try:
            return self.http.json("GET", "/api/version", timeout_s=5).get("version")
        except (TargetLost, RequestFailed):
            return None

    def has_model(self, model: str) -> bool:
        tags = self.http.json("GET", "/api/tags").get("models") or []
        names = {m.get("name") for m in tags} | {m.get("model") for m in tags}
        wanted = {model, model if ":" in model else f"{model}:latest"}
        return bool(names & wanted)

    def ensure_model(self, model: str, progress: PullProgress | None = None) -> None:
        if not self.has_model(model):
            self.pull(model, progress)

    def pull(self, model: str, progress: PullProgress | None = None) -> None:
        """Pull (resumable on the server side); chunks may lack `completed` at first."""
        last = ""
        for line in self.http.lines("/api/pull", {"model": model, "stream": True}):
            obj = json.loads(line)
            if "error" in obj:
                raise RequestFailed(f"ollama pull {model}: {obj['error']}")
            last = obj.get("status", "")
            if progress is not None:
                progress(last, obj.get("completed"), obj.get("total"))
        if last != "success":
            raise TargetLost(f"{self.base_url}: pull of {model} ended at {last!r}, not success")

    def show(self, model: str) -> dict[str, Any]:
        return self.http.json("POST", "/api/show", {"model": model})

    def describe(self, model: str) -> dict[str, Any]:
        """The model's details and architecture from /api/show, without the tokenizer arrays."""
        info = self.show(model)
        keep = (
            "block_count",
            "head_count",
            "head_count_kv",
            "key_length",
            "value_length",
            "embedding_length",
            "context_length",
            "expert_count",
            "expert_used_count",
        )
        arch = {
            k: v
            for k, v in (info.get("model_info") or {}).items()
            if k.startswith("general.") or k.rsplit(".", 1)[-1] in keep
        }
        return {"details": info.get("details") or {}, "model_info": arch}

    def loaded(self, model: str) -> Loaded | None:
        running = self.http.json("GET", "/api/ps", timeout_s=10).get("models") or []
        for entry in running:
            if model in (entry.get("name"), entry.get("model")):
                return Loaded(int(entry.get("size") or 0), int(entry.get("size_vram") or 0))
        return None
