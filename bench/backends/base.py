"""The interface every backend implements."""

from __future__ import annotations

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
    """A numeric field of a server payload, or None (absent, null, or not a number)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def count(value: Any) -> int | None:
    n = number(value)
    return None if n is None else int(n)


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
