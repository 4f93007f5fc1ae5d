"""The interface every backend implements."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from bench.metrics import Stream
from bench.workload import Request

# (status, completed bytes or None, total bytes or None)
PullProgress = Callable[[str, int | None, int | None], None]


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
