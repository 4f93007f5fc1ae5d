"""A small streaming HTTP client on the standard library.

http.client keeps the harness's own CPU cost per token low and its timing honest: each line
is stamped as soon as it is read. Connection-level failures raise `TargetLost`; an HTTP error
status raises `RequestFailed` with the server's own message.

The server is not trusted to behave: every request runs under a watchdog that closes the socket
at its deadline (a server trickling one byte at a time cannot hold a request open past it, as a
per-recv socket timeout alone would let it), a stream line may not exceed MAX_LINE_BYTES (memory
stays bounded whatever a server sends), and an answer that is no stream at all (a redirect, an
HTML page, a compressed body nobody asked for) fails the request with what it was.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

# Ollama's stream lines are one token each and llama.cpp's SSE events are smaller still; 1 MiB
# is far above any of them and keeps a line that never ends from filling memory.
MAX_LINE_BYTES = 1 << 20
# A JSON answer (/api/show, /api/tags, /api/ps): /api/show without `verbose` leaves out the
# tokenizer arrays, so it is a few KB; 64 MiB is room for any real one.
MAX_JSON_BYTES = 64 << 20
_READ = 64 * 1024


class TargetLost(Exception):
    """The server cannot be reached (refused, reset, timed out, tunnel gone)."""


class RequestFailed(Exception):
    """The server answered, with an error for this request (e.g. model not found)."""


class StreamStalled(TargetLost):
    """A stream sent no line for the idle timeout, or outran the request deadline. Whether the
    target is lost or only this request failed is the health check's call."""


_LOST = (
    ConnectionError,
    socket.timeout,
    TimeoutError,
    http.client.RemoteDisconnected,
    http.client.IncompleteRead,
    http.client.HTTPException,
    OSError,
)


def _error_text(status: int, body: bytes) -> str:
    text = body.decode("utf-8", "replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        return f"HTTP {status}: {text[:200]}"
    err = data.get("error", data) if isinstance(data, dict) else data
    if isinstance(err, dict):  # OpenAI style {"error": {"message": ...}}
        err = err.get("message", err)
    return f"HTTP {status}: {str(err)[:300]}"


class _Watchdog:
    """Closes the connection's socket when the request passes its deadline, or when no line
    came for `idle_s` since the last one (or since it was armed). A blocked read then returns
    at once; the reader asks `fired` why. One thread per request, polling four times a second."""

    POLL_S = 0.25

    def __init__(self, conn: http.client.HTTPConnection, deadline_s: float | None):
        self.conn = conn
        self.deadline = None if deadline_s is None else time.monotonic() + deadline_s
        self.idle_s: float | None = None
        self.last_line = time.monotonic()
        self.fired: str | None = None  # "deadline" | "idle"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="http-watchdog", daemon=True)
        self._thread.start()

    def arm_idle(self, idle_s: float | None) -> None:
        """From now on, a gap of idle_s without a line also ends the request."""
        self.last_line = time.monotonic()
        self.idle_s = idle_s

    def line(self) -> None:
        self.last_line = time.monotonic()

    def _due(self) -> tuple[float | None, str]:
        idle = None if self.idle_s is None else self.last_line + self.idle_s
        if self.deadline is not None and (idle is None or self.deadline <= idle):
            return self.deadline, "deadline"
        return idle, "idle"

    def _run(self) -> None:
        while not self._stop.wait(self.POLL_S):
            due, why = self._due()
            if due is not None and time.monotonic() >= due:
                self.fired = why
                sock = self.conn.sock
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)
                return

    def stop(self) -> None:
        self._stop.set()


class Client:
    def __init__(self, base_url: str, timeout_s: float = 600.0):
        parts = urlsplit(base_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"{base_url!r} is not an http://host:port URL")
        self.base_url = base_url.rstrip("/")
        self.host = parts.hostname
        self.port = parts.port or 80
        self.prefix = parts.path.rstrip("/")
        self.timeout_s = timeout_s

    def _stalled(self, dog: _Watchdog, deadline_s: float | None, answered: bool) -> StreamStalled:
        if dog.fired == "idle":
            return StreamStalled(
                f"{self.base_url}: stream stalled: no line for {dog.idle_s:g} s (idle_timeout_s)"
            )
        if answered:
            return StreamStalled(
                f"{self.base_url}: the request outran its deadline of {deadline_s:g} s "
                "(request_timeout_s)"
            )
        return StreamStalled(
            f"{self.base_url}: no answer within the request deadline of {deadline_s:g} s "
            "(request_timeout_s)"
        )

    def _open(
        self,
        method: str,
        path: str,
        payload: Any | None,
        deadline_s: float | None,
        idle_s: float | None = None,
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse, _Watchdog]:
        """Connect, send, read the status and headers, all under the watchdog; refuse what is
        not an answer to read (redirects, HTML, encodings not asked for)."""
        # The socket's own timeout is a backstop a second behind the watchdog, which says why.
        conn = http.client.HTTPConnection(
            self.host, self.port, timeout=(_min(deadline_s, idle_s) or self.timeout_s) + 1
        )
        body = None if payload is None else json.dumps(payload).encode()
        headers = {"Content-Type": "application/json"} if body is not None else {}
        # http.client sends "Accept-Encoding: identity" on its own (http/client.py putrequest,
        # skip_accept_encoding=False): a compressed answer is one nobody asked for.
        dog = _Watchdog(conn, deadline_s)
        dog.arm_idle(idle_s)
        try:
            conn.request(method, self.prefix + path, body=body, headers=headers)
            resp = conn.getresponse()
        except _LOST as exc:
            dog.stop()
            conn.close()
            if dog.fired or isinstance(exc, TimeoutError):
                dog.fired = dog.fired or ("deadline" if deadline_s else "idle")
                raise self._stalled(dog, deadline_s, False) from exc
            raise TargetLost(f"{self.base_url}: {exc.__class__.__name__}: {exc}") from exc
        try:
            self._check(resp)
        except BaseException:
            dog.stop()
            conn.close()
            raise
        return conn, resp, dog

    def _check(self, resp: http.client.HTTPResponse) -> None:
        if resp.status >= 400:
            raise RequestFailed(_error_text(resp.status, _read_some(resp, 64 * 1024)))
        if resp.status >= 300:  # http.client follows no redirect, and neither does the bench
            raise RequestFailed(
                f"HTTP {resp.status}: redirected to {resp.getheader('Location') or '?'} — not "
                "followed: the bench talks only to the target it was given"
            )
        encoding = (resp.getheader("Content-Encoding") or "identity").strip().lower()
        if encoding != "identity":
            raise RequestFailed(
                f"HTTP {resp.status}: the answer is {encoding}-encoded though the bench asked "
                "for identity (Accept-Encoding: identity) — not a server to bench"
            )
        ctype = (resp.getheader("Content-Type") or "").lower()
        if "html" in ctype:
            snippet = _read_some(resp, 120).decode("utf-8", "replace")
            raise RequestFailed(
                f"HTTP {resp.status}: the answer is an HTML page ({ctype}), not the API: "
                f"{snippet!r}"
            )

    def json(
        self, method: str, path: str, payload: Any | None = None, timeout_s: float | None = None
    ) -> Any:
        deadline_s = timeout_s or self.timeout_s
        conn, resp, dog = self._open(method, path, payload, deadline_s)
        try:
            data = bytearray()
            while chunk := resp.read1(_READ):
                data += chunk
                if len(data) > MAX_JSON_BYTES:
                    raise RequestFailed(
                        f"{self.base_url}{path}: the answer exceeds {MAX_JSON_BYTES >> 20} MiB"
                    )
            if dog.fired:
                raise self._stalled(dog, deadline_s, True)
            return json.loads(bytes(data) or b"null")
        except ValueError as exc:  # UnicodeDecodeError included
            raise RequestFailed(f"{self.base_url}{path}: the answer is not JSON ({exc})") from exc
        except _LOST as exc:
            if dog.fired:
                raise self._stalled(dog, deadline_s, True) from exc
            raise TargetLost(f"{self.base_url}: {exc}") from exc
        finally:
            dog.stop()
            conn.close()

    def json_object(
        self, method: str, path: str, payload: Any | None = None, timeout_s: float | None = None
    ) -> dict[str, Any]:
        """json() for endpoints documented to answer an object: anything else is the server's
        error, not a crash in whoever reads it."""
        data = self.json(method, path, payload, timeout_s)
        if not isinstance(data, dict):
            raise RequestFailed(
                f"{self.base_url}{path}: the answer is {type(data).__name__}, not a JSON object"
            )
        return data

    def lines(
        self,
        path: str,
        payload: Any,
        idle_timeout_s: float | None = None,
        deadline_s: float | None = None,
    ) -> Iterator[bytes]:
        """POST and yield each non-empty response line as it arrives.

        With deadline_s (a measured request): it bounds the whole request, the wait for the
        first line included (a model load or a long prefill sends nothing until its first
        token), and idle_timeout_s bounds each wait for the next line once the first came.
        Without it (a pull, which may take an hour): idle_timeout_s bounds every wait for a
        line, the first included. Bytes trickling in without a line end count as no line, so a
        server sending one byte at a time cannot hold a request open."""
        if deadline_s is None and idle_timeout_s is None:
            idle_timeout_s = self.timeout_s
        conn, resp, dog = self._open(
            "POST", path, payload, deadline_s, None if deadline_s else idle_timeout_s
        )
        buf = bytearray()
        first = True
        try:
            while True:
                try:
                    chunk = resp.read1(_READ)
                except _LOST as exc:
                    if dog.fired:
                        raise self._stalled(dog, deadline_s, not first) from exc
                    raise TargetLost(f"{self.base_url}: stream broke: {exc}") from exc
                if dog.fired:  # the watchdog shut the socket: what was read is cut short
                    raise self._stalled(dog, deadline_s, not first)
                if not chunk:  # the end of the answer; a last line without its newline counts
                    tail = bytes(buf).strip()
                    if tail:
                        yield tail
                    return
                buf += chunk
                while (at := buf.find(b"\n")) >= 0:
                    line = bytes(buf[:at]).strip()
                    del buf[: at + 1]
                    if not line:
                        continue
                    if first:
                        first = False
                        dog.arm_idle(idle_timeout_s)
                    else:
                        dog.line()
                    yield line
                if len(buf) > MAX_LINE_BYTES:
                    raise RequestFailed(
                        f"{self.base_url}: a stream line longer than {MAX_LINE_BYTES >> 20} MiB "
                        f"without a line end (starts {bytes(buf[:60])!r})"
                    )
        finally:
            dog.stop()
            conn.close()


def _min(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    return a if b is None else min(a, b)


def _read_some(resp: http.client.HTTPResponse, limit: int) -> bytes:
    try:
        return resp.read(limit)
    except _LOST:
        return b""
