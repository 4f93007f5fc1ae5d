"""Backends: one interface over Ollama's native API and OpenAI-compatible servers."""

from __future__ import annotations

from bench.backends.base import Backend, Loaded, PullProgress, StreamLimits
from bench.backends.ollama import OllamaBackend
from bench.backends.openai import OpenAIBackend

BACKENDS: dict[str, type[Backend]] = {"ollama": OllamaBackend, "openai": OpenAIBackend}

__all__ = [
    "BACKENDS",
    "Backend",
    "Loaded",
    "OllamaBackend",
    "OpenAIBackend",
    "PullProgress",
    "StreamLimits",
    "make_backend",
]


def make_backend(kind: str, url: str, limits: StreamLimits | None = None) -> Backend:
    if kind not in BACKENDS:
        raise ValueError(f"unknown backend {kind!r} — use one of: {', '.join(BACKENDS)}")
    return BACKENDS[kind](url, limits)
