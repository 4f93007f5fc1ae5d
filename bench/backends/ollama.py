"""Ollama's native API (docs/api.md): /api/chat streaming, /api/ps, /api/show, /api/pull."""

from __future__ import annotations

import json
import time
from typing import Any

from bench.backends.base import (
    Loaded,
    PullProgress,
    StreamLimits,
    ThinkSplitter,
    count,
    duration,
    malformed,
)
from bench.http import Client, RequestFailed, TargetLost
from bench.metrics import Stream
from bench.workload import Request

NS = 1e9  # Ollama reports durations in nanoseconds
KEEP_ALIVE = "30m"  # keep the model loaded between a target's requests
# A pull streams progress lines while it downloads, but "verifying sha256 digest" can be silent
# for minutes on a large model: a pull fails after this long without a line.
PULL_IDLE_S = 600.0


def _seconds(duration_ns: Any) -> float | None:
    return duration(duration_ns, NS)


class OllamaBackend:
    name = "ollama"

    def __init__(self, base_url: str, limits: StreamLimits | None = None):
        self.base_url = base_url
        self.http = Client(base_url)
        self.limits = limits or StreamLimits()

    def chat(self, model: str, request: Request) -> Stream:
        """Stream /api/chat. Ollama cannot be told to skip its prefix cache: the runner puts a
        distinct nonce at the start of every prompt instead (as Ollama's own cmd/bench does)."""
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
        first_answer: float | None = None
        parts: list[str] = []
        thoughts: list[str] = []
        final: dict[str, Any] | None = None
        splitter = ThinkSplitter()
        lines = self.http.lines(
            "/api/chat",
            payload,
            idle_timeout_s=self.limits.idle_timeout_s,
            deadline_s=self.limits.request_timeout_s,
        )
        for line in lines:
            now = time.perf_counter()
            try:
                obj = json.loads(line)
            except ValueError:
                raise malformed(self.base_url, line, "not JSON") from None
            if not isinstance(obj, dict):
                raise malformed(self.base_url, line, "not an object")
            if "error" in obj:  # an error can arrive mid-stream, after HTTP 200
                raise RequestFailed(f"ollama: {obj['error']}")
            message = obj.get("message") or {}
            content = message.get("content") if isinstance(message, dict) else None
            # api/types.go Message.Thinking: the reasoning of thinking models, streamed apart
            # from the answer (docs/api.md "thinking").
            thinking = message.get("thinking") if isinstance(message, dict) else None
            if not isinstance(message, dict) or not all(
                isinstance(x, str | None) for x in (content, thinking)
            ):
                raise malformed(self.base_url, line, "message is not text")
            if thinking:
                thoughts.append(thinking)
            if content:  # "<think>" reasoning inside content, when the server did not split it
                thought, answer = splitter.add(content)
                if thought:
                    thoughts.append(thought)
                if answer:
                    parts.append(answer)
                    first_answer = first_answer if first_answer is not None else now
            if thinking or content:
                times.append(now)
            if obj.get("done"):
                final = obj
                break
        done = time.perf_counter()
        thought, answer = splitter.flush()
        thoughts.append(thought)
        parts.append(answer)
        if answer and first_answer is None and times:
            first_answer = times[-1]
        if final is None:
            raise TargetLost(f"{self.base_url}: stream ended without its final object")
        # The final object (docs/api.md): prompt_eval_count is the whole prompt even when the
        # runner reused a cached prefix; prompt_eval_duration covers only what it evaluated
        # (runner/ollamarunner/runner.go at v0.9.2: PromptEvalCount = numPromptInputs,
        # PromptEvalDuration = startGenerationTime - startProcessingTime). Every metric is
        # `omitempty` (api/types.go Metrics): a zero is sent as no field at all, and an absent
        # field becomes None here, never a zero to divide by.
        reason = final.get("done_reason")
        prompt = count(final.get("prompt_eval_count"))
        return Stream(
            sent_at=sent,
            chunk_times=times,
            done_at=done,
            text="".join(parts),
            first_answer_at=first_answer,
            thinking="".join(thoughts),
            prompt_tokens=prompt,
            # Before Ollama 0.2 the count was of evaluated tokens only, so a prompt served
            # whole from the cache had 0, which `omitempty` drops (ollama/ollama#2068, #3427;
            # fixed by #5371). Since then it is the whole prompt and never absent for a
            # non-empty one: an absent count means nothing was evaluated.
            prompt_eval_tokens=0 if prompt is None else None,
            prefill_s=_seconds(final.get("prompt_eval_duration")),
            output_tokens=count(final.get("eval_count")),
            decode_s=_seconds(final.get("eval_duration")),
            load_s=_seconds(final.get("load_duration")),
            stop_reason=reason if isinstance(reason, str) else None,
        )

    def ping(self) -> float | None:
        start = time.perf_counter()
        try:
            self.http.json_object("GET", "/api/version", timeout_s=5)
        except (TargetLost, RequestFailed):
            return None
        return time.perf_counter() - start

    def alive(self) -> bool:
        try:
            self.http.json_object("GET", "/api/version", timeout_s=5)
        except (TargetLost, RequestFailed):
            return False
        return True

    def version(self) -> str | None:
        try:
            version = self.http.json_object("GET", "/api/version", timeout_s=5).get("version")
        except (TargetLost, RequestFailed):
            return None
        return version if isinstance(version, str) else None

    def has_model(self, model: str) -> bool:
        tags = self.http.json_object("GET", "/api/tags", timeout_s=30).get("models") or []
        tags = [m for m in tags if isinstance(m, dict)] if isinstance(tags, list) else []
        names = {m.get("name") for m in tags} | {m.get("model") for m in tags}
        wanted = {model, model if ":" in model else f"{model}:latest"}
        return bool(names & wanted)

    def ensure_model(self, model: str, progress: PullProgress | None = None) -> None:
        if not self.has_model(model):
            self.pull(model, progress)

    def pull(self, model: str, progress: PullProgress | None = None) -> None:
        """Pull (resumable on the server side); chunks may lack `completed` at first."""
        last = ""
        lines = self.http.lines(
            "/api/pull", {"model": model, "stream": True}, idle_timeout_s=PULL_IDLE_S
        )
        for line in lines:
            try:
                obj = json.loads(line)
            except ValueError:
                raise malformed(self.base_url, line, "not JSON") from None
            if not isinstance(obj, dict):
                raise malformed(self.base_url, line, "not an object")
            if "error" in obj:
                raise RequestFailed(f"ollama pull {model}: {obj['error']}")
            last = str(obj.get("status", ""))
            if progress is not None:
                progress(last, count(obj.get("completed")), count(obj.get("total")))
        if last != "success":
            raise TargetLost(f"{self.base_url}: pull of {model} ended at {last!r}, not success")

    def show(self, model: str) -> dict[str, Any]:
        return self.http.json_object("POST", "/api/show", {"model": model}, timeout_s=60)

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
        model_info = info.get("model_info")
        arch = {
            k: v
            for k, v in (model_info if isinstance(model_info, dict) else {}).items()
            if k.startswith("general.") or k.rsplit(".", 1)[-1] in keep
        }
        details = info.get("details")
        return {"details": details if isinstance(details, dict) else {}, "model_info": arch}

    def loaded(self, model: str) -> Loaded | None:
        running = self.http.json_object("GET", "/api/ps", timeout_s=10).get("models") or []
        for entry in running if isinstance(running, list) else []:
            if isinstance(entry, dict) and model in (entry.get("name"), entry.get("model")):
                return Loaded(count(entry.get("size")) or 0, count(entry.get("size_vram")) or 0)
        return None
