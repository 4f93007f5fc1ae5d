"""TEST FIXTURE: a loopback stand-in for Ollama's HTTP API, serving the payloads documented in
ollama/ollama docs/api.md (the examples are copied field for field), so the real `ollama`
backend is exercised against the documented contract. Not an Ollama implementation."""

from __future__ import annotations

import json
import threading
import time
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


class FakeOllama:
    """Serves on 127.0.0.1:<free port>. `models` are present; `pullable` can be pulled."""

    def __init__(self, tokens: list[str] | None = None, token_delay_s: float = 0.01):
        self.tokens = tokens or ["The", " sky", " is", " blue", "."]
        self.token_delay_s = token_delay_s
        self.models: set[str] = {"mistral:latest"}
        self.pullable: set[str] = {"llama3:8b"}
        self.partial_vram = False  # report part of the model on the CPU
        self.fail_mid_stream: str | None = None  # an error object after the first chunk
        self.requests: list[tuple[str, Any]] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
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
        self.server.shutdown()
        self.server.server_close()

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

            def _stream(self, objects: list[dict[str, Any]], delay: float = 0.0) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/x-ndjson")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for obj in objects:
                    line = json.dumps(obj).encode() + b"\n"
                    self.wfile.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
                    self.wfile.flush()
                    if delay:
                        time.sleep(delay)
                self.wfile.write(b"0\r\n\r\n")

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
                    chunks = []
                    for i, token in enumerate(fake.tokens):
                        chunks.append(
                            {
                                **DOC_CHAT_CHUNK,
                                "model": model,
                                "message": {"role": "assistant", "content": token, "images": None},
                            }
                        )
                        if i == 0 and fake.fail_mid_stream:
                            chunks.append({"error": fake.fail_mid_stream})
                            break
                    else:
                        chunks.append({**DOC_CHAT_FINAL, "model": model})
                    self._stream(chunks, fake.token_delay_s)
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
