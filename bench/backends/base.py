"""The interface every backend implements."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from bench.http import RequestFailed
from bench.metrics import Stream
from bench.workload import Request

# (status, completed bytes or None, total bytes or None)
PullProgress = Callable[[str, int | None, int | None], None]


@dataclass(frozen=True)
class StreamLimits:
    """How long one streamed request may take: a stalled stream fails after idle_timeout_s
    without a chunk; the whole request (model load and prefill included) after
    request_timeout_s. Either way the health check then decides: a server that still answers
    gets that one request marked failed, one that does not is lost."""

    idle_timeout_s: float = 60.0
    request_timeout_s: float = 900.0


def malformed(base_url: str, line: bytes, why: str) -> RequestFailed:
    shown = line[:120].decode("utf-8", "replace")
    return RequestFailed(f"{base_url}: malformed stream line ({why}): {shown!r}")


def number(value: Any) -> float | None:
    """A numeric field of a server payload, or None (absent, null, not a number, or not finite:
    Python's json reads NaN and Infinity, which neither Go's encoding/json nor nlohmann::json
    ever writes, so they mean a broken server, not a measurement)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def count(value: Any) -> int | None:
    """A token count, or None: a negative one is no count (llama.cpp's result_timings starts
    prompt_n and predicted_n at -1, tools/server/server-task.h, until it measures them)."""
    n = number(value)
    return None if n is None or n < 0 else int(n)


def duration(value: Any, scale: float = 1.0) -> float | None:
    """A duration in seconds (value / scale), or None when absent or negative. Ollama's runner
    computes prompt_eval_duration as startGenerationTime - startProcessingTime
    (runner/ollamarunner/runner.go:700 at v0.9.2): a sequence that ends before its first token
    leaves startGenerationTime zero and the difference hugely negative."""
    n = number(value)
    return None if n is None or n < 0 else n / scale


class ThinkSplitter:
    """Splits a reasoning block at the start of streamed content ("<think>...</think>") from
    the answer, as Ollama's own thinking.Parser does (thinking/parser.go at v0.9.2: whitespace
    after either tag eaten, a tag split across chunks held back until it is whole). Ollama runs
    that parser only when the request says "think": true (server/routes.go:1518-1525), and a
    model without the capability refuses such a request (server/images.go:158), so the bench
    never sends it: on 0.9.x a thinking model's reasoning then arrives inside `content`."""

    OPEN, CLOSE = "<think>", "</think>"

    def __init__(self) -> None:
        self.state = "start"  # "start" | "thinking" | "answer"
        self.buf = ""
        self.eat = False  # whitespace right after a tag is dropped, as the parser does

    def _eaten(self) -> bool:
        """Drop leading whitespace after a tag; True while nothing else has come yet."""
        if self.eat:
            self.buf = self.buf.lstrip()
            if not self.buf:
                return True
            self.eat = False
        return False

    def add(self, text: str) -> tuple[str, str]:
        """(thinking, answer) that can be told apart now."""
        self.buf += text
        if self.state == "start":
            head = self.buf.lstrip()
            if head.startswith(self.OPEN):
                self.state, self.buf, self.eat = "thinking", head[len(self.OPEN) :], True
            elif self.OPEN.startswith(head):
                return "", ""  # whitespace, or the tag still arriving
            else:
                self.state = "answer"
        if self.state == "thinking":
            if self._eaten():
                return "", ""
            at = self.buf.find(self.CLOSE)
            if at >= 0:
                thought, self.buf = self.buf[:at], self.buf[at + len(self.CLOSE) :]
                self.state, self.eat = "answer", True
                return thought, "" if self._eaten() else self._take()
            keep = next(
                (n for n in range(len(self.CLOSE) - 1, 0, -1) if self.buf.endswith(self.CLOSE[:n])),
                0,
            )
            thought, self.buf = self.buf[: len(self.buf) - keep], self.buf[len(self.buf) - keep :]
            return thought, ""
        return "", "" if self._eaten() else self._take()

    def _take(self) -> str:
        out, self.buf = self.buf, ""
        return out

    def flush(self) -> tuple[str, str]:
        rest = self._take()
        return (rest, "") if self.state == "thinking" else ("", rest)


@dataclass(frozen=True)
class Loaded:
    """A loaded model's memory: size_vram < size means part of it runs on the CPU."""

    size: int
    size_vram: int

    @property
    def gpu_share(self) -> float:
        return self.size_vram / self.size if self.size else 0.0


class Backend(Protocol):
    name: str
    base_url: str

    def chat(self, model: str, request: Request) -> Stream:
        """Stream one chat completion; raise TargetLost or RequestFailed."""
        ...

    def alive(self) -> bool: ...

    def ping(self) -> float | None:
        """Seconds for one tiny request (the round trip through any tunnel), None if it fails."""
        ...

    def version(self) -> str | None: ...

    def ensure_model(self, model: str, progress: PullProgress | None = None) -> None:
        """Make the model available (pull it when missing)."""
        ...

    def loaded(self, model: str) -> Loaded | None:
        """Size and VRAM share of the loaded model, where the server reports them."""
        ...

    def describe(self, model: str) -> dict[str, Any]:
        """What the server says of the model (details, architecture); {} when nothing."""
        ...
