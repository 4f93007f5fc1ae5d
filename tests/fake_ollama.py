"""TEST FIXTURE: a loopback stand-in for Ollama's HTTP API, serving the payloads documented in
ollama/ollama docs/api.md (the examples are copied field for field), so the real `ollama`
backend is exercised against the documented contract, and reusing cached prompt prefixes the
way Ollama's runner does (see FakeOllama). Not an Ollama implementation."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import math
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
    "message": {"role": "assistant", "content": ""},
    "done": True,
    "total_duration": 4883583458,
    "load_duration": 1334875,
    "prompt_eval_count": 26,
    "prompt_eval_duration": 342546000,
    "eval_count": 282,
    "eval_duration": 4535599000,
}
# docs/api.md, "Load a model" (/api/chat with no messages): the model is loaded, nothing run.
DOC_CHAT_LOADED = {
    "model": "llama3.2",
    "created_at": "2024-09-12T21:17:29.110811Z",
    "message": {"role": "assistant", "content": ""},
    "done_reason": "load",
    "done": True,
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
# docs/api.md at v0.9.2, "List Local Models": the first entry of the example.
DOC_TAGS_ENTRY = {
    "name": "deepseek-r1:latest",
    "model": "deepseek-r1:latest",
    "modified_at": "2025-05-10T08:06:48.639712648-07:00",
    "size": 4683075271,
    "digest": "0a8c266910232fd3291e71e5ba1e058cc5af9d411192cf88b6d30e92b6e73163",
    "details": {
        "parent_model": "",
        "format": "gguf",
        "family": "qwen2",
        "families": ["qwen2"],
        "parameter_size": "7.6B",
        "quantization_level": "Q4_K_M",
    },
}


# The chat template the stand-in renders messages with (Gemma's, as Ollama's gemma models use):
# its opening tokens are the same for every prompt, so they are the most any nonce'd prompt can
# share with the one before it.
TEMPLATE_OPEN = ["<bos>", "<start_of_turn>", "user", "\n"]
TEMPLATE_CLOSE = ["<end_of_turn>", "\n", "<start_of_turn>", "model", "\n"]
_WORDS = re.compile(r"\w+|[^\w\s]|\s+")


def tokenize(messages: list[dict[str, Any]]) -> list[str]:
    """A deterministic stand-in tokenizer: words, punctuation and whitespace runs; each message
    opens with its role's header, as chat templates render them."""
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


def keep_alive_s(value: Any) -> float:
    """api.Duration.UnmarshalJSON (api/types.go:689 at v0.9.2): a number is seconds, a string a
    Go duration ("30m", "1h", "300s"), a negative one forever; absent: the 5 minute default."""
    if value is None:
        return 300.0
    if isinstance(value, int | float):
        return math.inf if value < 0 else float(int(value))
    total, number = 0.0, ""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    for part in re.findall(r"(-?[\d.]+)(ms|h|m|s)", str(value)):
        number, unit = part
        total += float(number) * units[unit]
    if not number and str(value).strip("-").replace(".", "").isdigit():
        total = float(value)
    return math.inf if total < 0 else total


@dataclass
class Loaded:
    """A model the stand-in holds in memory: its runner's options and when it expires."""

    num_ctx: int
    expires: float  # time.time() when the scheduler would unload it


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
    evaluated token, decode `token_delay_s` per forward pass.

    Decode counts as the runner counts (runner.go:506-517): every sampled token is counted,
    the end-of-sequence token too (it is sampled, counted, then ends the sequence unsent), and
    the decode clock starts when the first token is sampled: eval_count = answer tokens + 1,
    eval_duration = one forward pass per token after the first. done_reason is "stop" at the
    end of the sequence, "length" when num_predict cut it (runner.go:394-395; routes.go:1566).

    Loading as the scheduler does it (server/routes.go ChatHandler, server/sched.go): a model
    not in memory, or asked for with another num_ctx (its runner's options changed), is loaded
    first; that request's load_duration carries the `load_s` it takes (checkpointLoaded -
    checkpointStart) and its runner starts with an empty cache; a request to a loaded model
    reports only the scheduler's own ~1.3 ms (the docs' example load_duration). keep_alive sets
    when /api/ps says it expires (expires_at); /api/ps lists loaded models only. A model's
    Modelfile SYSTEM (`system`) is prepended as a system message when the request has none
    (routes.go:1505-1508): a fixed head every prompt shares, whatever its nonce.

    `faults` maps the n-th /api/chat request (1-based, warm-ups included) to a misbehaviour:
    "malformed" (a line that is not JSON), "non-object" (a JSON array line), "bad-bytes" (a line
    that is not UTF-8), "drop" (the connection closes mid-answer, the server stays up), "stall"
    (the stream stops sending for `stall_s`), "hang" (no answer at all for `stall_s`, as a
    server stuck before its first token), and hostile servers: "html" (200, then an HTML page),
    "cut" (the connection ends mid-line, the chunked stream unfinished), "huge-line" (a line of
    `huge_line_bytes` with no newline), "nan" / "negative" (durations NaN / below zero in the
    final object), "no-done" (a clean end without the final object), "trickle" (one byte every
    `trickle_s`, no newline),
    "redirect" (302 to another host), "gzip" (a gzip-encoded stream nobody asked for).
    """

    SCHEDULER_NS = 1334875  # docs/api.md's load_duration for a model already loaded

    def __init__(
        self,
        tokens: list[str] | None = None,
        token_delay_s: float = 0.01,
        prefill_s_per_token: float = 0.0002,
        num_parallel: int = 1,
        load_s: float = 0.02,
        listen: bool = True,
    ):
        self.tokens = tokens or ["The", " sky", " is", " blue", "."]
        self.thinking: list[str] = []  # streamed in message.thinking before the answer
        self.token_delay_s = token_delay_s
        self.prefill_s_per_token = prefill_s_per_token
        self.load_s = load_s
        self.num_parallel = num_parallel
        self.slots: list[list[str]] = [[] for _ in range(num_parallel)]
        self.prefills: list[Prefill] = []
        self.loads: list[tuple[str, int]] = []  # (model, num_ctx) of every load
        self.loaded: dict[str, Loaded] = {}
        self.system: str | None = None  # the models' Modelfile SYSTEM, if any
        self.final_fields: dict[str, Any] | None = None  # replaces the computed timings (None
        #   leaves a field out, as Go's `omitempty` does with a zero)
        self.faults: dict[int, str] = {}
        self.stall_s = 30.0
        self.trickle_s = 1.0
        self.huge_line_bytes = 100 * 1024 * 1024
        self.models: set[str] = {"mistral:latest"}
        self.pullable: set[str] = {"llama3:8b"}
        self.partial_vram = False  # report part of the model on the CPU
        self.fail_mid_stream: str | None = None  # an error object after the first chunk
        self.requests: list[tuple[str, Any]] = []
        self.chats = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        # listen=False: no server of its own; the guest's Ollama stand-in
        # (tests/fixtures/ansible/standin-ollama) serves this behaviour through _handler().
        if listen:
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

    def _schedule(self, model: str, body: dict[str, Any]) -> float:
        """Load the model if it is not in memory with these options; returns the seconds the
        load took (0 when it was there). A load is a new runner: its prefix cache is empty."""
        options = body.get("options") or {}
        num_ctx = int(options.get("num_ctx") or 2048)
        with self._lock:
            now = time.time()
            held = self.loaded.get(model)
            reload = held is None or held.num_ctx != num_ctx or held.expires <= now
            if reload:
                self.loads.append((model, num_ctx))
                self.slots = [[] for _ in range(self.num_parallel)]
            self.loaded[model] = Loaded(num_ctx, now + keep_alive_s(body.get("keep_alive")))
            if self.loaded[model].expires <= now:  # keep_alive 0: unloaded after the answer
                del self.loaded[model]
        if reload and self.load_s:
            time.sleep(self.load_s)
        return self.load_s if reload else 0.0

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

    def _chat_chunks(self, model: str, body: dict[str, Any], fault: str | None, load: float):
        """Yields (object or raw bytes, seconds to wait before it)."""
        messages = list(body.get("messages") or [])
        if self.system and (not messages or messages[0].get("role") != "system"):
            messages.insert(0, {"role": "system", "content": self.system})
        prompt = tokenize(messages)
        slot, reused = self._load_slot(prompt)
        prefill = (len(prompt) - reused) * self.prefill_s_per_token
        out = [("thinking", t) for t in self.thinking] + [("content", t) for t in self.tokens]
        num_predict = int((body.get("options") or {}).get("num_predict") or -1)
        cut = 0 < num_predict <= len(out)
        if cut:
            out = out[:num_predict]
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
            if i == 0 and fault is not None and fault not in ("nan", "negative"):
                yield fault, 0.0
                if fault in ("drop", "stall", "cut", "no-done", "huge-line", "trickle"):
                    return
        with self._lock:  # the slot now holds the prompt and what was generated from it
            self.slots[slot] = prompt + [t for _, t in out][:-1]
        # Sampled tokens: the answer's, plus the end-of-sequence token unless num_predict cut
        # it short; the decode clock ran from the first sample, one pass per later token.
        sampled = len(out) if cut else len(out) + 1
        timings = {
            "prompt_eval_count": len(prompt),
            "prompt_eval_duration": round(prefill * 1e9),
            "eval_count": sampled,
            "eval_duration": round((sampled - 1) * self.token_delay_s * 1e9),
            "load_duration": round(load * 1e9) or self.SCHEDULER_NS,
            "total_duration": round((load + prefill + (sampled - 1) * self.token_delay_s) * 1e9),
            "done_reason": "length" if cut else "stop",
        }
        if fault == "nan":
            timings.update(eval_duration=math.nan, prompt_eval_duration=math.nan)
        elif fault == "negative":  # a sequence that ended before its first token (see runner.go)
            timings.update(eval_duration=-5, prompt_eval_duration=-9_223_372_036)
        final = {**DOC_CHAT_FINAL, **timings, **(self.final_fields or {}), "model": model}
        final = {k: v for k, v in final.items() if v is not None}  # final_fields None: omitted
        yield final, 0.0 if cut else self.token_delay_s

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _json(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _start_stream(self, headers: dict[str, str] | None = None) -> None:
                self.send_response(200)
                # server/routes.go streamResponse: c.Header("Content-Type", "application/x-ndjson")
                self.send_header("Content-Type", "application/x-ndjson")
                self.send_header("Transfer-Encoding", "chunked")
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
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

            def _hostile_start(self, fault: str | None) -> bool:
                """Faults that replace the whole answer; True when one was sent."""
                if fault == "hang":  # accepted, then nothing at all (not even headers)
                    fake._stopping.wait(fake.stall_s)
                    self.close_connection = True
                    return True
                if fault == "html":  # a proxy or captive page in front of the port
                    page = b"<!DOCTYPE html>\n<html><body><h1>502 Bad Gateway</h1></body></html>\n"
                    self.send_response(200)
                    self.send_header("Content-Type", "text/html; charset=utf-8")
                    self.send_header("Content-Length", str(len(page)))
                    self.end_headers()
                    self.wfile.write(page)
                    return True
                if fault == "redirect":
                    self.send_response(302)
                    self.send_header("Location", "http://203.0.113.7:11434/api/chat")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return True
                if fault == "gzip":
                    self._start_stream({"Content-Encoding": "gzip"})
                    line = json.dumps({**DOC_CHAT_CHUNK}).encode() + b"\n"
                    self._chunk(gzip.compress(line * 3))
                    self.wfile.write(b"0\r\n\r\n")
                    return True
                return False

            def _chat(self, model: str, body: dict[str, Any], fault: str | None) -> None:
                if self._hostile_start(fault):
                    return
                load = fake._schedule(model, body)
                if not body.get("messages"):  # docs/api.md "Load a model"
                    self._stream([{**DOC_CHAT_LOADED, "model": model}])
                    return
                self._start_stream()
                try:
                    for item, wait in fake._chat_chunks(model, body, fault or None, load):
                        if wait:
                            time.sleep(wait)
                        if item == "malformed":
                            self._chunk(b'{"model": "' + model.encode() + b'", "message": {\n')
                        elif item == "non-object":
                            self._chunk(b'["not", "an", "object"]\n')
                        elif item == "bad-bytes":
                            self._chunk(b'{"message": {"content": "\xff\xfe"}}\n')
                        elif item in ("drop", "cut"):
                            if item == "cut":  # half a line, then the connection goes,
                                # without the chunked stream's last (empty) chunk
                                self._chunk(b'{"model": "' + model.encode() + b'", "mess')
                            self.close_connection = True
                            self.connection.shutdown(socket.SHUT_RDWR)
                            return
                        elif item == "stall":
                            fake._stopping.wait(fake.stall_s)
                            self.close_connection = True
                            return
                        elif item == "huge-line":  # sent piece by piece: never held in memory
                            piece = b"x" * (1 << 20)
                            for _ in range(fake.huge_line_bytes // len(piece)):
                                self._chunk(piece)
                            self.close_connection = True
                            return
                        elif item == "trickle":
                            while not fake._stopping.wait(fake.trickle_s):
                                self._chunk(b"x")
                            return
                        elif item == "no-done":  # a clean end, the final object never sent
                            break
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
                    now = time.time()
                    with fake._lock:
                        held = {m: v for m, v in fake.loaded.items() if v.expires > now}
                    ps["models"] = [
                        {**entry, "name": m, "model": m, "expires_at": _expires_at(v.expires)}
                        for m, v in held.items()
                    ]
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
                        # server/routes.go:1646 (v0.9.2) handleScheduleError, os.ErrNotExist:
                        # 404 {"error": fmt.Sprintf("model %q not found, try pulling it first")}
                        self._json(
                            404, {"error": f'model "{model}" not found, try pulling it first'}
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


def _expires_at(when: float) -> str:
    """Go's RFC 3339 with the server's zone, as docs/api.md shows it
    ("2024-06-04T14:38:31.83753-07:00"); a model kept forever expires in the far future."""
    if math.isinf(when):
        return "2318-11-26T01:47:16.854775807Z"
    return dt.datetime.fromtimestamp(when).astimezone().isoformat()
