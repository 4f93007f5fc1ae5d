"""TEST FIXTURE: a loopback stand-in for Ollama's HTTP API, serving the payloads documented in
ollama/ollama docs/api.md (the examples are copied field for field), so the real `ollama`
backend is exercised against the documented contract, and reusing cached prompt prefixes the
way Ollama's runner does (see FakeOllama). Not an Ollama implementation."""

from __future__ import annotations

import json
import re
import socket
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

# docs/api.md, "Chat Request (Streaming)": a content chunk and the final object.
DOC_CHAT_CHUNK = {
    "model": "llama3.2",
    "created_at": "2023-08-04T08:52:19.385406455-07:00",
    "message": {"role": "assistant", "content": "The", "images": None},
    "done": False,
}
DOC_CHAT_FINAL = {
    "model": "llama3.2",
    "created_at": "2023-08-04T19:22:45.499127Z",
    "done": True,
    "total_duration": 4883583458,
    "load_duration": 1334875,
    "prompt_eval_count": 26,
    "prompt_eval_duration": 342546000,
    "eval_count": 282,
    "eval_duration": 4535599000,
}
# docs/api.md, "List Running Models".
DOC_PS = {
    "models": [
        {
            "name": "mistral:latest",
            "model": "mistral:latest",
            "size": 5137025024,
            "digest": "2ae6f6dd7a3dd734790bbbf58b8909a606e0e7e97e94b7604e0aa7ae4490e6d8",
            "details": {
                "parent_model": "",
                "format": "gguf",
                "family": "llama",
                "families": ["llama"],
                "parameter_size": "7.2B",
                "quantization_level": "Q4_0",
            },
            "expires_at": "2024-06-04T14:38:31.83753-07:00",
            "size_vram": 5137025024,
        }
    ]
}
# docs/api.md, "Pull a Model": the manifest, downloads (`completed` absent at first), the end.
DOC_PULL = [
    {"status": "pulling manifest"},
    {"status": "downloading digestname", "digest": "digestname", "total": 2142590208},
    {
        "status": "downloading digestname",
        "digest": "digestname",
        "total": 2142590208,
        "completed": 241970,
    },
    {"status": "verifying sha256 digest"},
    {"status": "writing manifest"},
    {"status": "removing any unused layers"},
    {"status": "success"},
]
# docs/api.md, "Show Model Information" (the fixture file holds it without the doc's comments).
DOC_SHOW = json.loads(
    (Path(__file__).parent / "fixtures" / "ollama_api_show.json").read_text(encoding="utf-8")
)
DOC_TAGS_ENTRY = {
    "name": "mistral:latest",
    "modified_at": "2023-11-04T14:56:49.277302595-07:00",
    "size": 7365960935,
    "digest": "9f438cb9cd581fc025612d27f7c1a6669ff83a8bb0ed86c94fcf4c5440555697",
    "details": {
        "format": "gguf",
        "family": "llama",
        "families": None,
        "parameter_size": "13B",
        "quantization_level": "Q4_0",
    },
}


# The chat template the stand-in renders messages with (Gemma's, as Ollama's gemma models use):
# its opening tokens are the same for every prompt, so they are the most any nonce'd prompt can
# share with the one before it.
TEMPLATE_OPEN = ["<bos>", "<start_of_turn>", "user", "\n"]
TEMPLATE_CLOSE = ["<end_of_turn>", "\n", "<start_of_turn>", "model", "\n"]
_WORDS = re.compile(r"\w+|[^\w\s]|\s+")


def tokenize(messages: list[dict[str, Any]]) -> list[str]:
    """A deterministic stand-in tokenizer: words, punctuation and whitespace runs."""
    out: list[str] = []
    for m in messages:
        out += TEMPLATE_OPEN if not out else ["<start_of_turn>", str(m.get("role")), "\n"]
        out += _WORDS.findall(str(m.get("content", "")))
        out += ["<end_of_turn>", "\n"]
    return out[:-2] + TEMPLATE_CLOSE


def common_prefix(a: list[str], b: list[str]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


@dataclass
class Prefill:
    """What the stand-in's runner did with one prompt."""

    prompt_tokens: int
    reused: int  # taken from the cached slot: not evaluated again

    @property
    def evaluated(self) -> int:
        return self.prompt_tokens - self.reused


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that closes its connection after the final object (as the bench does) or
        # gives up on a stalled stream is normal here; anything else is still printed.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class FakeOllama:
    """Serves on 127.0.0.1:<free port>. `models` are present; `pullable` can be pulled.

    Prefix caching as Ollama's runner does it (runner/ollamarunner/cache.go at v0.9.2,
    LoadCacheSlot / findLongestCacheSlot / countCommonPrefix): the slot whose cached inputs share
    the longest common prefix with the new prompt is reused, that prefix is not evaluated again
    (all of it but the last token when the whole prompt matches: "leave one input to sample"),
    and the slot then holds the prompt and the generated tokens. The final object reports
    prompt_eval_count = the whole prompt and prompt_eval_duration = the time spent evaluating the
    uncached part only (runner/ollamarunner/runner.go: PromptEvalCount: seq.numPromptInputs,
    PromptEvalDuration: startGenerationTime - startProcessingTime), so a cached prompt shows an
    inflated prompt rate, exactly as on the real server. Prefill takes `prefill_s_per_token` per
    evaluated token, decode `token_delay_s` per token.

    `faults` maps the n-th /api/chat request (1-based, warm-ups included) to a misbehaviour:
    "malformed" (a line that is not JSON), "non-object" (a JSON array line), "bad-bytes" (a line
    that is not UTF-8), "drop" (the connection closes mid-answer, the server stays up), "stall"
    (the stream stops sending for `stall_s`), "hang" (no answer at all for `stall_s`, as a
    server stuck before its first token).
    """

    def __init__(
        self,
        tokens: list[str] | None = None,
        token_delay_s: float = 0.01,
        prefill_s_per_token: float = 0.0002,
        num_parallel: int = 1,
    ):
        self.tokens = tokens or ["The", " sky", " is", " blue", "."]
        self.thinking: list[str] = []  # streamed in message.thinking before the answer
        self.token_delay_s = token_delay_s
        self.prefill_s_per_token = prefill_s_per_token
        self.slots: list[list[str]] = [[] for _ in range(num_parallel)]
        self.prefills: list[Prefill] = []
        self.final_fields: dict[str, Any] | None = None  # replaces the computed timings
        self.faults: dict[int, str] = {}
        self.stall_s = 30.0
        self.models: set[str] = {"mistral:latest"}
        self.pullable: set[str] = {"llama3:8b"}
        self.partial_vram = False  # report part of the model on the CPU
        self.fail_mid_stream: str | None = None  # an error object after the first chunk
        self.requests: list[tuple[str, Any]] = []
        self.chats = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self.server = _Server(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FakeOllama:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stopping.set()
        self.server.shutdown()
        self.server.server_close()

    def _load_slot(self, prompt: list[str]) -> tuple[int, int]:
        """(slot index, tokens reused): findLongestCacheSlot, then LoadCacheSlot's rules."""
        with self._lock:
            counts = [common_prefix(s, prompt) for s in self.slots]
            slot = max(range(len(counts)), key=lambda i: counts[i])
            reused = counts[slot]
            if reused == len(prompt):
                reused -= 1  # "Leave one input to sample so we can get a response"
            self.slots[slot] = prompt[:reused]
            self.prefills.append(Prefill(len(prompt), reused))
            return slot, reused

    def _chat_chunks(self, model: str, body: dict[str, Any], fault: str | None):
        """Yields (object or raw bytes, seconds to wait before it)."""
        prompt = tokenize(body.get("messages") or [])
        slot, reused = self._load_slot(prompt)
        prefill = (len(prompt) - reused) * self.prefill_s_per_token
        out = [("thinking", t) for t in self.thinking] + [("content", t) for t in self.tokens]
        for i, (kind, text) in enumerate(out):
            message = {"role": "assistant", "content": "", "images": None}
            message[kind] = text
            yield (
                {**DOC_CHAT_CHUNK, "model": model, "message": message},
                (prefill if i == 0 else self.token_delay_s),
            )
            if i == 0 and self.fail_mid_stream:
                yield {"error": self.fail_mid_stream}, 0.0
                return
            if i == 0 and fault is not None:
                yield fault, 0.0
                if fault in ("drop", "stall"):
                    return
        with self._lock:  # the slot now holds the prompt and what was generated from it
            self.slots[slot] = prompt + [t for _, t in out][:-1]
        timings = {
            "prompt_eval_count": len(prompt),
            "prompt_eval_duration": round(prefill * 1e9),
            "eval_count": len(out),
            "eval_duration": round(len(out) * self.token_delay_s * 1e9),
            "total_duration": round((prefill + len(out) * self.token_delay_s) * 1e9),
        }
        final = {**DOC_CHAT_FINAL, **timings, **(self.final_fields or {}), "model": model}
        yield final, self.token_delay_s

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _json(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _start_stream(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/x-ndjson")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()

            def _chunk(self, line: bytes) -> None:
                self.wfile.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
                self.wfile.flush()

            def _stream(self, objects: list[dict[str, Any]], delay: float = 0.0) -> None:
                self._start_stream()
                for obj in objects:
                    self._chunk(json.dumps(obj).encode() + b"\n")
                    if delay:
                        time.sleep(delay)
                self.wfile.write(b"0\r\n\r\n")

            def _chat(self, model: str, body: dict[str, Any], fault: str | None) -> None:
                if fault == "hang":  # accepted, then nothing at all (not even headers)
                    fake._stopping.wait(fake.stall_s)
                    self.close_connection = True
                    return
                self._start_stream()
                try:
                    for item, wait in fake._chat_chunks(model, body, fault or None):
                        if wait:
                            time.sleep(wait)
                        if item == "malformed":
                            self._chunk(b'{"model": "' + model.encode() + b'", "message": {\n')
                        elif item == "non-object":
                            self._chunk(b'["not", "an", "object"]\n')
                        elif item == "bad-bytes":
                            self._chunk(b'{"message": {"content": "\xff\xfe"}}\n')
                        elif item == "drop":
                            self.close_connection = True
                            self.connection.shutdown(socket.SHUT_RDWR)
                            return
                        elif item == "stall":
                            fake._stopping.wait(fake.stall_s)
                            self.close_connection = True
                            return
                        else:
                            self._chunk(json.dumps(item).encode() + b"\n")
                    self.wfile.write(b"0\r\n\r\n")
                except (BrokenPipeError, ConnectionResetError, OSError):
                    self.close_connection = True  # the client gave up on this stream

            def do_GET(self) -> None:
                fake.requests.append(("GET " + self.path, None))
                if self.path == "/api/version":
                    self._json(200, {"version": "0.5.1"})
                elif self.path == "/api/tags":
                    self._json(
                        200,
                        {
                            "models": [
                                {**DOC_TAGS_ENTRY, "name": m, "model": m}
                                for m in sorted(fake.models)
                            ]
                        },
                    )
                elif self.path == "/api/ps":
                    ps = json.loads(json.dumps(DOC_PS))
                    entry = ps["models"][0]
                    if fake.partial_vram:
                        entry["size_vram"] = entry["size"] // 2
                    ps["models"] = [{**entry, "name": m, "model": m} for m in fake.models]
                    self._json(200, ps)
                else:
                    self._json(404, {"error": "not found"})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                fake.requests.append(("POST " + self.path, body))
                model = body.get("model", "")
                if self.path == "/api/chat":
                    if model not in fake.models:
                        # The documented error shape: {"error": "..."} with a 404.
                        self._json(
                            404, {"error": f"model '{model}' not found, try pulling it first"}
                        )
                        return
                    with fake._lock:
                        fake.chats += 1
                        fault = fake.faults.get(fake.chats)
                    self._chat(model, body, fault)
                elif self.path == "/api/pull":
                    if model not in fake.pullable:
                        self._stream(
                            [
                                {"status": "pulling manifest"},
                                {"error": "pull model manifest: file does not exist"},
                            ]
                        )
                        return
                    fake.models.add(model)
                    self._stream(DOC_PULL)
                elif self.path == "/api/show":
                    if model not in fake.models:
                        self._json(404, {"error": f"model '{model}' not found"})
                        return
                    self._json(200, DOC_SHOW)
                else:
                    self._json(404, {"error": "not found"})

        return Handler
